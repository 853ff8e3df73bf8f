"""Time to quality and per-step cost on per-epoch histories written by hand (target M.U. 0.5, so
a good model has F.Q. >= 0.5 and M.U. >= 0.475)."""

from __future__ import annotations

import pytest

from uld.efficiency import efficiency, efficiency_table, seconds_per_step, time_to_quality


def _history(*epochs: tuple[float, float]) -> list[dict]:
    """(F.Q., M.U.) per epoch; 10 steps and 20 s of training an epoch."""
    return [
        {
            "epoch": e,
            "step": 10 * e,
            "train_seconds": 20.0 * e,
            "forget_quality": f,
            "model_utility": mu,
        }
        for e, (f, mu) in enumerate(epochs, 1)
    ]


@pytest.mark.parametrize(
    "epochs, seconds",
    [
        # F.Q. reached at epoch 1 with M.U. too low; both at epoch 2
        ([(0.6, 0.40), (0.7, 0.48), (0.9, 0.49)], 40.0),
        # M.U. kept throughout, F.Q. reached only at epoch 3
        ([(0.01, 0.50), (0.3, 0.49), (0.6, 0.48)], 60.0),
        # both at epoch 1; M.U. falls below afterwards: still epoch 1
        ([(0.6, 0.49), (0.9, 0.30), (0.9, 0.20)], 20.0),
        # F.Q. reached only after M.U. fell below: never
        ([(0.1, 0.49), (0.4, 0.47), (0.9, 0.30)], None),
        # the thresholds themselves count (F.Q. 0.5, M.U. 0.95 x 0.5)
        ([(0.49, 0.5), (0.5, 0.475)], 40.0),
        # never reached at all
        ([(0.0, 0.5), (0.1, 0.5)], None),
    ],
)
def test_time_to_quality_is_the_first_epoch_meeting_both(epochs, seconds):
    assert time_to_quality(_history(*epochs), target_mu=0.5) == seconds


def test_time_to_quality_reads_epochs_in_order_and_skips_partial_ones():
    history = _history((0.1, 0.5), (0.6, 0.5), (0.7, 0.5))
    # a resumed run's history, out of order; an epoch evaluated on the forget split only
    mixed = [history[2], {"epoch": 1, "step": 10, "train_seconds": 20.0, "forget_quality": 0.9}]
    mixed.append(history[1])
    assert time_to_quality(mixed, 0.5) == 40.0
    # other thresholds
    assert time_to_quality(history, 0.5, fq=0.65) == 60.0
    assert time_to_quality(history, 0.6, mu_ratio=0.8) == 40.0  # 0.5 >= 0.8 x 0.6
    assert time_to_quality(history, 0.6) is None  # 0.5 < 0.95 x 0.6
    untimed = [{"epoch": 1, "forget_quality": 0.9, "model_utility": 0.5}]
    with pytest.raises(ValueError, match="epoch 1 of the history has no train_seconds"):
        time_to_quality(untimed, 0.5)


def test_seconds_per_step_is_the_last_epochs_time_over_its_steps():
    assert seconds_per_step(_history((0.1, 0.5), (0.2, 0.5), (0.3, 0.5))) == 2.0
    history = [{"epoch": 2, "step": 8, "train_seconds": 12.0}, {"epoch": 1, "step": 4}]
    assert seconds_per_step(history) == 1.5
    assert seconds_per_step([{"epoch": 1, "forget_quality": 0.2}]) is None


def test_efficiency_rows_and_table_against_a_baseline():
    fast = _history((0.6, 0.40), (0.7, 0.48), (0.9, 0.49))  # 2 s a step, quality at 40 s
    slow = [h | {"train_seconds": 5 * h["train_seconds"]} for h in _history((0.1, 0.5), (0.6, 0.5))]
    never = _history((0.0, 0.5), (0.1, 0.5), (0.2, 0.5), (0.3, 0.5))
    untimed = [{"epoch": 1, "forget_quality": 0.9, "model_utility": 0.5}]
    histories = {"uld": fast, "npo+kl": slow, "ga": never, "old": untimed, "plain": []}
    rows = efficiency(histories, 0.5, baseline="npo+kl")
    assert list(rows) == ["uld", "npo+kl", "ga"]  # only timed histories
    assert rows["uld"] == {
        "seconds_per_step": 2.0,
        "time_to_quality": 40.0,
        "epoch_reached": 2,
        "epochs": 3,
        "step_ratio": 0.2,  # 2 / 10 s a step
        "time_ratio": 0.2,  # 40 / 200 s
    }
    assert rows["npo+kl"]["step_ratio"] == rows["npo+kl"]["time_ratio"] == 1.0
    assert rows["ga"]["time_to_quality"] is None and rows["ga"]["time_ratio"] is None
    assert rows["ga"]["step_ratio"] == 0.2

    table = efficiency_table(rows, 0.5, "npo+kl")
    assert "F.Q. >= 0.5 and M.U. >= 0.95 x the target's (0.5000, so >= 0.4750)" in table
    assert "ratios to `npo+kl`" in table
    assert "| Run | s / step | s / step ÷ npo+kl | Time to quality (s) | Epoch reached | " in table
    assert "| uld | 2 | 0.20 | 40.0 | 2 | 0.20 |" in table
    assert "| npo+kl | 10 | 1.00 | 200.0 | 2 | 1.00 |" in table
    assert "| ga | 2 | 0.20 | never in 4 epochs | – | – |" in table
    # without a baseline row: no ratio columns
    alone = efficiency_table(efficiency({"uld": fast}, 0.5), 0.5)
    assert "ratios" not in alone and "| uld | 2 | 40.0 | 2 |" in alone

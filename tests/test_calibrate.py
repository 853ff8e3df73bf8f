"""ULD's alpha chosen on held-out rows (`uld.calibrate`): the grid scorer against the evaluation
protocol at each alpha, the choice against an independent recomputation, bad input, and
`--calibrate` / `uld calibrate` end to end."""

from __future__ import annotations

import json
import statistics
from types import SimpleNamespace

import pytest
import torch

from uld.calibrate import (
    check_held_out,
    check_rows,
    choose_alpha,
    combined_at_tokens,
    near_reference,
    truth_and_loss,
)
from uld.cli import main
from uld.config import UnlearnConfig
from uld.data.load import load_split
from uld.evaluate import evaluate, load_reference, score_answers, truth_ratios
from uld.logit_diff import ULDModel, logit_difference, plausible_set
from uld.methods import check
from uld.metrics import forget_quality
from uld.models import load_model
from uld.runs import unlearn

ALPHAS = (0.0, 0.5, 1.5)
TINY_ULD = {  # one short ULD run on forget01 with a 2-layer assistant
    "forget": "forget01",
    "retain": "retain99",
    "layers": 2,
    "lora_rank": 4,
    "batch_size": 4,
    "epochs": 1,
    "lr": 1e-2,
}


def test_combination_on_the_plausible_set_equals_the_dense_one():
    torch.manual_seed(0)
    T, V = 12, 300
    l_t = torch.randn(T, V) * torch.linspace(0.5, 8, T)[:, None]  # flat to peaked rows
    l_a = torch.randn(T, V) * 2
    gold = torch.randint(0, V, (T,))
    gold[:4] = l_t[:4].argmax(-1)  # some gold tokens inside S, most outside
    settings = [(0.0, 1e-2), (0.75, 1e-2), (2.0, 1e-2), (1.0, 0.1), (1.0, 1.0), (3.0, 1e-3)]
    for keep_mass in (True, False):
        fast = combined_at_tokens(l_t, l_a, gold, settings, keep_mass)
        for (alpha, filter), (logp, argmax) in zip(settings, fast, strict=True):
            if keep_mass:
                l_f = logit_difference(l_t, l_a, alpha, filter)
            else:  # the ULD authors': l_t - alpha * l_a on S, l_t elsewhere, not rescaled
                S = plausible_set(torch.log_softmax(l_t, -1), filter)
                l_f = torch.where(S, l_t - alpha * l_a, l_t)
            dense = torch.log_softmax(l_f, -1).gather(-1, gold[:, None]).squeeze(-1)
            torch.testing.assert_close(logp, dense, atol=1e-4, rtol=1e-5)
            assert torch.equal(argmax, l_f.argmax(-1)), (alpha, filter, keep_mass)


@pytest.fixture()
def uld_model(tiny_model, trained_assistant):
    target, _ = load_model(tiny_model)
    return ULDModel(target, trained_assistant[0], alpha=0.75, filter=0.05), trained_assistant[1]


def test_grid_scores_equal_the_protocols_at_each_alpha(uld_model):
    model, tok = uld_model
    rows = load_split("forget01") + load_split("holdout10")[:4]
    truth, loss = truth_and_loss(model, tok, rows, [(a, 0.05) for a in ALPHAS])
    for a, r, lo in zip(ALPHAS, truth, loss, strict=True):
        model.alpha = a  # the combined model itself, scored by `uld eval`'s code
        expected_r = truth_ratios(model, tok, rows)
        expected_loss = score_answers(
            model, tok, [x["question"] for x in rows], [x["answer"] for x in rows]
        )["loss"]
        assert r.tolist() == pytest.approx(expected_r.tolist(), rel=1e-4)
        assert lo.tolist() == pytest.approx(expected_loss.tolist(), rel=1e-4)
    assert truth[0].tolist() != pytest.approx(truth[-1].tolist(), rel=1e-3)  # alpha matters


def test_choice_is_the_alpha_whose_forget_rows_look_held_out(uld_model):
    model, tok = uld_model
    forget, holdout = load_split("forget01"), load_split("holdout10")[:12]
    res = choose_alpha(model, tok, forget, holdout, ALPHAS)
    assert [g["alpha"] for g in res["grid"]] == list(ALPHAS) and res["filter"] == 0.05
    keys = []
    for a, g in zip(ALPHAS, res["grid"], strict=True):
        model.alpha = a
        r_f, r_h = truth_ratios(model, tok, forget), truth_ratios(model, tok, holdout)
        ks = forget_quality(r_f.tolist(), r_h.tolist())
        gap = abs(statistics.median(r_f.log().tolist()) - statistics.median(r_h.log().tolist()))
        assert g["holdout_ks"] == pytest.approx(ks, rel=1e-6)
        assert g["median_log_gap"] == pytest.approx(gap, rel=1e-3, abs=1e-6)
        assert 0 <= g["mia_loss_auc"] <= 1
        keys.append((ks, -gap, a))
    assert res["alpha"] == max(keys)[2]


def test_bad_calibration_input_is_refused(tiny_model, tmp_path):
    rows = load_split("forget01")
    with pytest.raises(ValueError, match="perturbed_answer"):
        check_rows([{**rows[0], "perturbed_answer": []}], "the held-out rows")
    with pytest.raises(ValueError, match="no rows"):
        check_rows([], "the held-out rows")
    with pytest.raises(ValueError, match="shares 1 question"):
        check_held_out(rows[:1], rows, "--holdout x")
    with pytest.raises(ValueError, match="--calibrate"):
        check(UnlearnConfig(model=tiny_model, out="o", method="npo", calibrate="holdout10"))
    # held-out rows that the assistant trains on: refused before any training, nothing written
    cfg = UnlearnConfig(
        model=tiny_model,
        out=str(tmp_path / "u"),
        forget="forget01",
        retain="retain99",
        calibrate="retain99",
    )
    with pytest.raises(ValueError, match="shares"):
        unlearn(cfg)
    assert not (tmp_path / "u").exists() and not (tmp_path / "u.ckpt").exists()


def test_unlearn_calibrate_then_uld_calibrate_write(tiny_model, tmp_path, capsys):
    cfg = UnlearnConfig(
        model=tiny_model, out=str(tmp_path / "u"), calibrate="holdout10", **TINY_ULD
    )
    out = unlearn(cfg)
    card = json.loads((out / "uld_config.json").read_text())
    cal = card["calibration"]
    assert cal["split"] == "holdout10" and cal["alpha_before"] is None  # none given
    assert len(cal["grid"]) == 21
    # the rule is checked on a grid written by hand (test_choice_on_a_grid_written_by_hand);
    # here: the kept alpha has the grid's highest KS p-value, and none as high has a smaller gap
    chosen = next(g for g in cal["grid"] if g["alpha"] == cal["alpha"])
    assert card["alpha"] == cal["alpha"]
    assert chosen["holdout_ks"] == max(g["holdout_ks"] for g in cal["grid"])
    tied = [g for g in cal["grid"] if g["holdout_ks"] == chosen["holdout_ks"]]
    assert all(g["median_log_gap"] >= chosen["median_log_gap"] for g in tied)
    assert ULDModel.from_pretrained(out)[0].alpha == cal["alpha"]

    argv = ["calibrate", "--model", str(out), "--forget", "forget01", "--alphas", "0", "2"]
    assert main([*argv, "--write"]) == 0
    printed = capsys.readouterr().out
    card = json.loads((out / "uld_config.json").read_text())
    assert card["alpha"] in (0.0, 2.0) and f"wrote alpha {card['alpha']:g}" in printed
    assert card["calibration"]["alpha_before"] == cal["alpha"]
    assert main(["calibrate", "--model", tiny_model]) == 2  # a plain model has no alpha
    assert "not a saved ULD model" in capsys.readouterr().err


def test_ties_go_to_the_smaller_median_gap(uld_model, monkeypatch):
    model, tok = uld_model
    monkeypatch.setattr("uld.metrics.forget_quality", lambda a, b: 1.0)  # every alpha ties
    res = choose_alpha(model, tok, load_split("forget01"), load_split("holdout10")[:8], ALPHAS)
    gaps = [g["median_log_gap"] for g in res["grid"]]
    assert len(set(gaps)) == len(gaps)  # the tie-break has something to decide
    assert res["alpha"] == ALPHAS[gaps.index(min(gaps))]


def test_choice_on_a_grid_written_by_hand(monkeypatch):
    """choose_alpha's selection on scores given here (the passes over the rows are replaced):
    the highest KS p-value, ties to the smaller median gap; with a reference and `near`, the
    best F.Q. among the `near` alphas nearest that choice."""
    import uld.calibrate as C

    alphas = (0.0, 0.5, 1.0, 1.5, 2.0)
    ks = [0.2, 0.7, 0.7, 0.1, 0.7]  # 0.5, 1.0 and 2.0 tie
    gap = [0.3, 0.4, 0.2, 0.0, 0.25]  # 1.0's is the smallest of the three; 1.5's 0 is no help
    fq = [0.9, 0.3, 0.1, 0.5, 0.5]

    def scores(model, tok, rows, settings, keep_mass):  # setting i -> truth ratios all equal i
        return [torch.full((len(rows),), float(i)) for i in range(len(settings))], [
            torch.zeros(len(rows)) for _ in settings
        ]

    def held_out(truth_f, truth_h, loss_f, loss_h):
        i = int(truth_f[0])
        return {"holdout_ks": ks[i], "median_log_gap": gap[i], "mia_loss_auc": 0.5}

    monkeypatch.setattr(C, "truth_and_loss", scores)
    monkeypatch.setattr(C, "held_out_scores", held_out)
    monkeypatch.setattr("uld.metrics.forget_quality", lambda r, ref: fq[int(r[0])])
    rows = [{"question": "Q?", "answer": "a", "paraphrased_answer": "b", "perturbed_answer": ["c"]}]
    model = SimpleNamespace(combine="mass")  # only its combination is read
    res = choose_alpha(model, None, rows, rows, alphas, filter=0.05)
    assert res == {
        "alpha": 1.0,
        "filter": 0.05,
        "grid": [
            {"alpha": a, "holdout_ks": k, "median_log_gap": g, "mia_loss_auc": 0.5}
            for a, k, g in zip(alphas, ks, gap, strict=True)
        ],
    }
    ref = [1.0]
    # near 3: 1.0 and, at distance 0.5, 0.5 and 1.5; by F.Q. 1.5 (0.5), 0.5 (0.3), 1.0 (0.1).
    # alpha 0's F.Q. of 0.9 is out of reach
    res = choose_alpha(model, None, rows, rows, alphas, 0.05, ref, near=3)
    assert [g["forget_quality"] for g in res["grid"]] == fq
    assert (res["alpha_held_out"], res["near_reference"], res["alpha"]) == (
        1.0,
        [1.5, 0.5, 1.0],
        1.5,
    )
    # near 4: 0.0 and 2.0 tie at distance 1, the smaller alpha comes in, and its 0.9 wins
    res = choose_alpha(model, None, rows, rows, alphas, 0.05, ref, near=4)
    assert (res["near_reference"], res["alpha"]) == ([0.0, 1.5, 0.5, 1.0], 0.0)
    # near 5: 1.5 and 2.0 tie at F.Q. 0.5: the nearer to 1.0 first
    res = choose_alpha(model, None, rows, rows, alphas, 0.05, ref, near=5)
    assert res["near_reference"] == [0.0, 1.5, 2.0, 0.5, 1.0]


def test_near_reference_keeps_the_best_fq_among_the_nearest_alphas():
    fq = [0.01, 0.2, 0.5, 0.9, 0.3, 0.9, 0.1, 1.0, 0.0]  # alpha 0, 0.1, ..., 0.8
    grid = [{"alpha": round(0.1 * i, 1), "forget_quality": f} for i, f in enumerate(fq)]
    # nearest five to 0.4 are 0.2..0.6; 0.7's 1.0 is out of reach; 0.3 and 0.5 tie at 0.9,
    # equally near: the smaller alpha wins
    assert near_reference(grid, 0.4, 5) == [0.3, 0.5, 0.2, 0.4, 0.6]
    assert near_reference(grid, 0.4, 1) == [0.4]  # one candidate: the held-out choice itself
    assert near_reference(grid, 0.8, 2) == [0.7, 0.8]  # at the grid's edge
    assert near_reference(grid, 0.45, 2) == [0.5, 0.4]  # nearest two; 0.5 has the higher F.Q.
    with pytest.raises(ValueError, match="near=0"):
        near_reference(grid, 0.4, 0)


def test_choice_by_reference_scores_each_alpha_as_forget_quality(uld_model, tiny_plain_model):
    model, tok = uld_model
    forget, holdout = load_split("forget01"), load_split("holdout10")[:12]
    reference = load_reference(tiny_plain_model, forget)["truth_ratios"]
    alphas = (0.0, 0.5, 1.0, 1.5, 2.0)
    res = choose_alpha(model, tok, forget, holdout, alphas, reference=reference, near=3)
    for a, g in zip(alphas, res["grid"], strict=True):
        model.alpha = a
        expected = forget_quality(truth_ratios(model, tok, forget).tolist(), reference)
        assert g["forget_quality"] == pytest.approx(expected, rel=1e-6)
    # the reference leaves the held-out choice as it is, and narrows the choice to the 3 grid
    # alphas nearest it (a window of the 0.5-spaced grid) with the best F.Q. among them
    held = choose_alpha(model, tok, forget, holdout, alphas)["alpha"]
    assert res["alpha_held_out"] == held
    lo = min(max(alphas.index(held) - 1, 0), len(alphas) - 3)
    assert sorted(res["near_reference"]) == list(alphas[lo : lo + 3])
    assert res["alpha"] == res["near_reference"][0]
    fq = {g["alpha"]: g["forget_quality"] for g in res["grid"]}
    assert fq[res["alpha"]] == max(fq[a] for a in alphas[lo : lo + 3])
    with pytest.raises(ValueError, match="needs a reference"):
        choose_alpha(model, tok, forget, holdout, alphas, near=3)


def test_unlearn_alpha_by_reference_keeps_the_fq_it_reports(tiny_model, tiny_plain_model, tmp_path):
    common = {"model": tiny_model, "method": "uld", "calibrate": "holdout10"}
    with pytest.raises(ValueError, match="--alpha-by-reference"):
        UnlearnConfig(out="o", alpha_by_reference=5, **common).validate()  # no reference
    with pytest.raises(ValueError, match="--alpha-by-reference"):
        UnlearnConfig(
            out="o", alpha_by_reference=-1, reference=tiny_plain_model, **common
        ).validate()
    cfg = UnlearnConfig(
        out=str(tmp_path / "u"),
        reference=str(tmp_path / "no-such-model"),
        alpha_by_reference=5,
        **common,
        **TINY_ULD,
    )
    with pytest.raises(ValueError, match="no-such-model does not exist"):  # before training
        unlearn(cfg)
    assert not (tmp_path / "u").exists() and not (tmp_path / "u.ckpt").exists()
    cfg.reference = tiny_plain_model
    out = unlearn(cfg)
    card = json.loads((out / "uld_config.json").read_text())
    cal = card["calibration"]
    assert cal["reference"] == tiny_plain_model and len(cal["near_reference"]) == 5
    # the five grid alphas nearest the held-out choice: a window of the 0.1-spaced grid
    lo = min(max(round(10 * cal["alpha_held_out"]) - 2, 0), 16)
    assert sorted(cal["near_reference"]) == [round(0.1 * i, 1) for i in range(lo, lo + 5)]
    assert card["alpha"] == cal["near_reference"][0]
    # the saved model, evaluated as `uld eval` does, has the F.Q. the grid gave its alpha
    model, tok = ULDModel.from_pretrained(out)
    forget = load_split("forget01")
    reference = load_reference(tiny_plain_model, forget)
    res = evaluate(model, tok, {"forget": forget}, reference, progress=False, generate=False)
    kept = next(g for g in cal["grid"] if g["alpha"] == card["alpha"])
    assert res["summary"]["forget_quality"] == pytest.approx(kept["forget_quality"], rel=1e-6)
    best_near = max(g["forget_quality"] for g in cal["grid"] if g["alpha"] in cal["near_reference"])
    assert kept["forget_quality"] == best_near

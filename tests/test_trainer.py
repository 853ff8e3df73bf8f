"""The one training loop: resume from the last whole checkpoint after an interruption."""

from __future__ import annotations

import pytest
import torch
from transformers import TrainerCallback

from uld.data.format import Collator, QADataset
from uld.data.load import load_split
from uld.losses import finetune_objective
from uld.models import load_model
from uld.trainer import WeightAverage, checkpoint_dir, last_checkpoint, train


def test_resume_continues_from_the_last_checkpoint(tiny_model, tmp_path, capsys):
    model, tok = load_model(tiny_model)
    ds = QADataset(load_split("forget05"), tok)  # 20 rows, batch 10: 2 steps an epoch
    out = tmp_path / "run"
    first = train(
        model, ds, Collator(tok.pad_token_id), out, finetune_objective, epochs=1, batch_size=10
    )
    assert first.state.global_step == 2
    assert (checkpoint_dir(out) / "checkpoint-2").exists()

    # "interrupted" after epoch 1 of 2, while saving a later checkpoint (a full disk): that one
    # has no trainer_state.json, which the Trainer writes last
    partial = checkpoint_dir(out) / "checkpoint-3"
    partial.mkdir()
    (partial / "optimizer.pt").write_bytes(b"cut short")
    assert last_checkpoint(out) == checkpoint_dir(out) / "checkpoint-2"
    # a new process with a fresh model resumes from the last whole checkpoint
    fresh, _ = load_model(tiny_model)
    capsys.readouterr()
    second = train(
        fresh, ds, Collator(tok.pad_token_id), out, finetune_objective, epochs=2, batch_size=10
    )
    printed = capsys.readouterr().out
    assert "resuming from the last checkpoint" in printed and "checkpoint-2" in printed
    assert "set aside" in printed and (checkpoint_dir(out) / "incomplete-checkpoint-3").exists()
    assert second.state.global_step == 4
    # the log carries on from the checkpoint's: step 2 (first run), step 4 (after resuming)
    assert [h["step"] for h in second.state.log_history if "loss" in h] == [2, 4]
    initial, _ = load_model(tiny_model)
    start = dict(initial.named_parameters())
    assert any(not torch.equal(p, start[n]) for n, p in fresh.named_parameters())


def test_resumed_run_remembers_the_best_epoch(tiny_model, tmp_path):
    """After an interruption, a worse later epoch must not replace the best epoch's weights."""
    from uld.trainer import EpochEval

    model, tok = load_model(tiny_model)
    ds = QADataset(load_split("forget05"), tok)
    out, state = tmp_path / "run", tmp_path / "run.ckpt" / "epochs.json"
    scores = {1: 0.9, 2: 0.1, 3: 0.5}
    saved: list[int] = []
    step = iter([1, 2])

    def scripted(_model):
        return {"fq": scores[next(step)]}

    ev = EpochEval(
        scripted, "fq", tmp_path / "best", state=state, on_best=lambda m, e, s: saved.append(e)
    )
    collator = Collator(tok.pad_token_id)
    train(model, ds, collator, out, finetune_objective, epochs=2, batch_size=10, callbacks=[ev])
    assert saved == [1] and ev.best_epoch == 1

    step = iter([3])
    fresh, _ = load_model(tiny_model)
    again = EpochEval(
        scripted, "fq", tmp_path / "best", state=state, on_best=lambda m, e, s: saved.append(e)
    )
    train(fresh, ds, collator, out, finetune_objective, epochs=3, batch_size=10, callbacks=[again])
    assert [h["epoch"] for h in again.history] == [1, 2, 3]
    assert again.best_epoch == 1 and again.best == 0.9
    assert saved == [1]  # epoch 3 (0.5) did not overwrite epoch 1's (0.9) weights


def test_stopwatch_adds_up_the_time_of_a_resumed_run(tiny_model, tmp_path):
    import json

    model, tok = load_model(tiny_model)
    ds, collator = QADataset(load_split("forget01"), tok), Collator(tok.pad_token_id)
    out = tmp_path / "run"
    first = train(model, ds, collator, out, finetune_objective, epochs=2, batch_size=4)
    assert first.stopwatch.before == 0 and first.stopwatch.seconds() > 0
    saved = json.loads((checkpoint_dir(out) / "checkpoint-2" / "stopwatch.json").read_text())
    assert 0 < saved["seconds"] <= first.stopwatch.seconds()
    again = train(model, ds, collator, out, finetune_objective, epochs=3, batch_size=4)  # resumes
    assert again.stopwatch.before == saved["seconds"]
    assert again.stopwatch.seconds() > saved["seconds"]
    third = json.loads((checkpoint_dir(out) / "checkpoint-3" / "stopwatch.json").read_text())
    assert saved["seconds"] < third["seconds"] <= again.stopwatch.seconds()
    # resumed from the checkpoint at the last step: no step runs, the time so far still counts
    done = train(model, ds, collator, out, finetune_objective, epochs=3, batch_size=4)
    assert done.stopwatch.resumed and done.stopwatch.before == third["seconds"]


def test_epoch_history_times_the_training_without_the_evaluations(
    tiny_model, tmp_path, monkeypatch
):
    """Each evaluation takes 1000 s on the trainer's clock; every epoch's `train_seconds` leaves
    them all out, also after a resume (the time set aside is kept in the checkpoint)."""
    import time
    import types

    import uld.trainer as T

    late = [0.0]  # seconds the evaluations have added to the trainer's clock
    monkeypatch.setattr(T, "time", types.SimpleNamespace(time=lambda: time.time() + late[0]))

    def slow(_model):
        late[0] += 1000
        return {"fq": 1.0}

    model, tok = load_model(tiny_model)
    ds = QADataset(load_split("forget01"), tok)  # 4 rows, batch 4: 1 step an epoch
    out, state = tmp_path / "run", tmp_path / "run.ckpt" / "epochs.json"
    ev = T.EpochEval(slow, "fq", tmp_path / "best", state=state)
    first = _finetune(model, tok, ds, out, epochs=2, callbacks=[ev])
    assert [(h["epoch"], h["step"]) for h in ev.history] == [(1, 1), (2, 2)]
    assert 0 < ev.history[0]["train_seconds"] < ev.history[1]["train_seconds"] < 1000
    assert first.stopwatch.set_aside >= 2000 and first.stopwatch.seconds() > 2000
    assert 0 < first.stopwatch.training_seconds() < 1000

    again = T.EpochEval(slow, "fq", tmp_path / "best", state=state)  # a new process resumes
    second = _finetune(load_model(tiny_model)[0], tok, ds, out, epochs=3, callbacks=[again])
    assert [(h["epoch"], h["step"]) for h in again.history] == [(1, 1), (2, 2), (3, 3)]
    assert again.history[:2] == ev.history
    assert ev.history[1]["train_seconds"] < again.history[2]["train_seconds"] < 1000
    assert second.stopwatch.set_aside >= 3000 and second.stopwatch.training_seconds() < 1000


def _finetune(model, tok, ds, out, **kwargs):
    """Fine-tune `model` on `ds` in batches of 4 (the per-epoch tests' training)."""
    return train(
        model, ds, Collator(tok.pad_token_id), out, finetune_objective, batch_size=4, **kwargs
    )


def test_epoch_eval_every_n_epochs_and_the_last(tiny_model, tmp_path):
    """`every=2` over 5 epochs evaluates after epochs 2, 4 and 5 (the last always)."""
    from uld.trainer import EpochEval

    model, tok = load_model(tiny_model)
    ds = QADataset(load_split("forget01"), tok)
    seen: list[int] = []
    ev = EpochEval(
        lambda m: {"fq": -len(seen)},
        "fq",
        tmp_path / "best",
        every=2,
        on_best=lambda m, e, s: seen.append(e),
    )
    _finetune(model, tok, ds, tmp_path / "r", epochs=5, callbacks=[ev])
    assert [h["epoch"] for h in ev.history] == [2, 4, 5]
    assert ev.best_epoch == 2 and seen == [2]


def test_epoch_eval_by_epoch_keeps_each_epoch_in_turn(tiny_model, tmp_path):
    """metric "epoch" (`--eval-metric epoch`): every epoch is evaluated and the last is kept,
    however its scores fall."""
    from uld.config import UnlearnConfig
    from uld.trainer import EpochEval

    UnlearnConfig(model=tiny_model, out=str(tmp_path / "u"), eval_metric="epoch").validate()
    model, tok = load_model(tiny_model)
    ds = QADataset(load_split("forget01"), tok)
    saved: list[int] = []
    ev = EpochEval(
        lambda m: {"fq": 1.0 / (1 + len(saved))},
        "epoch",
        tmp_path / "best",
        on_best=lambda m, e, s: saved.append(e),
    )
    _finetune(model, tok, ds, tmp_path / "r", epochs=3, callbacks=[ev])
    assert saved == [1, 2, 3] and ev.best_epoch == 3


@pytest.mark.parametrize(
    "least, saved_epochs, best",
    [
        (0.3, [1, 2, 3], 3),  # epochs 2 and 3 reach the floor; 3 has the higher F.Q.
        (0.5, [1, 2], 2),  # none does: the one with the highest utility is kept
    ],
)
def test_epoch_eval_with_a_floor_keeps_the_best_epoch_above_it(
    tiny_model, tmp_path, least, saved_epochs, best
):
    from uld.trainer import EpochEval

    model, tok = load_model(tiny_model)
    ds = QADataset(load_split("forget01"), tok)
    fq, mu = [0.9, 0.5, 0.7, 0.95], [0.1, 0.35, 0.3, 0.2]
    saved: list[int] = []
    ev = EpochEval(
        lambda m: {"fq": fq[len(ev.history)], "mu": mu[len(ev.history)]},
        "fq",
        tmp_path / "best",
        floor=("mu", least),
        on_best=lambda m, e, s: saved.append(e),
    )
    _finetune(model, tok, ds, tmp_path / "r", epochs=4, callbacks=[ev])
    assert saved == saved_epochs and ev.best_epoch == best


class _Record(TrainerCallback):
    """The trainable weights after every optimizer step."""

    def __init__(self):
        self.steps: list[dict[str, torch.Tensor]] = []

    def on_step_end(self, args, state, control, model=None, **kwargs):
        self.steps.append({n: p.detach().clone() for n, p in model.named_parameters()})


class _StopAfterEpoch(TrainerCallback):
    def on_epoch_end(self, args, state, control, **kwargs):
        control.should_training_stop = True


def test_weight_average_is_the_exponential_average_by_hand(tiny_model, tmp_path):
    model, tok = load_model(tiny_model)
    w0 = {n: p.detach().clone() for n, p in model.named_parameters()}
    ds = QADataset(load_split("forget05"), tok)
    d = 0.75
    avg, rec = WeightAverage(model, d), _Record()
    collator = Collator(tok.pad_token_id)
    train(model, ds, collator, tmp_path / "r", finetune_objective, epochs=1, batch_size=10, lr=1e-2,
          callbacks=[avg, rec])  # fmt: skip
    w1, w2 = rec.steps
    name = "model.layers.0.mlp.up_proj.weight"
    by_hand = d * (d * w0[name] + (1 - d) * w1[name]) + (1 - d) * w2[name]
    torch.testing.assert_close(avg.avg[name], by_hand)
    trained = dict(model.named_parameters())[name].detach().clone()
    with avg.applied(model):  # swapped in, then back bit for bit
        torch.testing.assert_close(dict(model.named_parameters())[name], by_hand)
    assert torch.equal(dict(model.named_parameters())[name], trained)
    avg.finish(model)
    torch.testing.assert_close(dict(model.named_parameters())[name], by_hand)


def test_a_resumed_run_keeps_its_weight_average(tiny_model, tmp_path):
    tok = load_model(tiny_model)[1]
    ds, collator = QADataset(load_split("forget05"), tok), Collator(tok.pad_token_id)
    kw = dict(batch_size=10, lr=1e-2)
    straight, _ = load_model(tiny_model)
    whole = WeightAverage(straight, 0.5)
    train(
        straight,
        ds,
        collator,
        tmp_path / "a",
        finetune_objective,
        epochs=2,
        callbacks=[whole],
        **kw,
    )

    first, _ = load_model(tiny_model)  # the same 2-epoch run, stopped after epoch 1
    train(first, ds, collator, tmp_path / "b", finetune_objective, epochs=2,
          callbacks=[WeightAverage(first, 0.5), _StopAfterEpoch()], **kw)  # fmt: skip
    assert (checkpoint_dir(tmp_path / "b") / "checkpoint-2" / WeightAverage.FILE).exists()
    fresh, _ = load_model(tiny_model)  # "interrupted": a new process resumes epoch 2
    resumed = WeightAverage(fresh, 0.5)
    train(
        fresh, ds, collator, tmp_path / "b", finetune_objective, epochs=2, callbacks=[resumed], **kw
    )
    assert resumed.resumed
    for n, v in whole.avg.items():
        torch.testing.assert_close(resumed.avg[n], v, rtol=1e-4, atol=1e-6)


def test_each_epoch_evaluates_the_averaged_weights(tiny_model, tmp_path):
    from uld.trainer import EpochEval

    model, tok = load_model(tiny_model)
    avg = WeightAverage(model, 0.9)
    name = "model.norm.weight"
    seen = []
    ev = EpochEval(
        lambda m: seen.append(dict(m.named_parameters())[name].detach().clone()) or {"fq": 1.0},
        "fq",
        tmp_path / "best",
        average=avg,
    )
    ds = QADataset(load_split("forget05"), tok)
    train(model, ds, Collator(tok.pad_token_id), tmp_path / "r", finetune_objective, epochs=1,
          batch_size=10, lr=1e-2, callbacks=[avg, ev])  # fmt: skip
    torch.testing.assert_close(seen[0], avg.avg[name])
    assert not torch.equal(seen[0], dict(model.named_parameters())[name])

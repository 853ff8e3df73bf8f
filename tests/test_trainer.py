"""The one training loop: resume from the last checkpoint after an interruption."""

from __future__ import annotations

import torch

from uld.data.format import Collator, QADataset
from uld.data.load import load_split
from uld.models import load_model
from uld.trainer import checkpoint_dir, train


def test_resume_continues_from_the_last_checkpoint(tiny_model, tmp_path, capsys):
    model, tok = load_model(tiny_model)
    ds = QADataset(load_split("forget05"), tok)  # 20 rows, batch 10: 2 steps an epoch
    out = tmp_path / "run"
    first = train(model, ds, Collator(tok.pad_token_id), out, "finetune", epochs=1, batch_size=10)
    assert first.state.global_step == 2
    assert (checkpoint_dir(out) / "checkpoint-2").exists()

    # "interrupted" after epoch 1 of 2: a new process with a fresh model resumes from there
    fresh, _ = load_model(tiny_model)
    capsys.readouterr()
    second = train(fresh, ds, Collator(tok.pad_token_id), out, "finetune", epochs=2, batch_size=10)
    assert "resuming" in capsys.readouterr().out
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

    ev = EpochEval(scripted, "fq", lambda m, e, s: saved.append(e), state=state)
    collator = Collator(tok.pad_token_id)
    train(model, ds, collator, out, "finetune", epochs=2, batch_size=10, callbacks=[ev])
    assert saved == [1] and ev.best_epoch == 1

    step = iter([3])
    fresh, _ = load_model(tiny_model)
    again = EpochEval(scripted, "fq", lambda m, e, s: saved.append(e), state=state)
    train(fresh, ds, collator, out, "finetune", epochs=3, batch_size=10, callbacks=[again])
    assert [h["epoch"] for h in again.history] == [1, 2, 3]
    assert again.best_epoch == 1 and again.best == 0.9
    assert saved == [1]  # epoch 3 (0.5) did not overwrite epoch 1's (0.9) weights

"""uld never loses a user's data, never resumes the wrong run, and resumes exactly.

Real processes are killed with SIGKILL mid-run; outputs that hold files uld did not write are
refused; bad values from flags and YAML files get a message naming them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from uld.cli import main
from uld.outdir import MARKER, OutputError, check_out, locked, output_dir

# Runs `uld` with argv[2:] in a process that kills itself (SIGKILL: no clean-up of any kind)
# when it is about to compute the loss of step argv[1] + 1.
DIE_AFTER = """
import os, signal, sys
from uld import trainer
real = trainer.UnlearnTrainer.compute_loss
done = [0]
def dying(self, *args, **kwargs):
    if done[0] == int(sys.argv[1]):
        os.kill(os.getpid(), signal.SIGKILL)
    done[0] += 1
    return real(self, *args, **kwargs)
trainer.UnlearnTrainer.compute_loss = dying
from uld.cli import main
sys.exit(main(sys.argv[2:]))
"""


def killed_at(steps: int, argv: list[str]) -> subprocess.CompletedProcess:
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-c", DIE_AFTER, str(steps), *argv]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)


def weights(folder: Path) -> dict[str, torch.Tensor]:
    files = sorted(folder.glob("*.safetensors"))
    assert files, f"no weights in {folder}"
    return {f"{f.name}:{k}": v for f in files for k, v in load_file(str(f)).items()}


# ---------------------------------------------------------------- 1. never delete foreign files


def test_an_output_holding_a_foreign_file_is_refused_and_the_file_survives(tmp_path, capsys):
    mine = tmp_path / "mydir"
    mine.mkdir()
    (mine / "thesis.txt").write_text("four years of work")
    assert main(["data", "export", "--authors", "2", "--out", str(mine)]) == 2
    assert "thesis.txt" in capsys.readouterr().err
    assert sorted(p.name for p in mine.iterdir()) == ["thesis.txt"]
    # `--out .` from inside such a folder: refused, not emptied
    cwd = os.getcwd()
    os.chdir(mine)
    try:
        assert main(["data", "export", "--authors", "2", "--out", "."]) == 2
    finally:
        os.chdir(cwd)
    assert sorted(p.name for p in mine.iterdir()) == ["thesis.txt"]
    # --overwrite writes beside it; the foreign file stays, uld's marker names only uld's files
    assert main(["data", "export", "--authors", "2", "--out", str(mine), "--overwrite"]) == 0
    assert (mine / "thesis.txt").read_text() == "four years of work"
    marker = json.loads((mine / MARKER).read_text())
    assert "thesis.txt" not in marker["files"] and "forget10.json" in marker["files"]
    assert marker["made_by"] == "uld data export"


def test_overwrite_replaces_only_uld_files_and_refuses_to_replace_a_foreign_namesake(tmp_path):
    out = tmp_path / "bench"
    assert main(["data", "export", "--authors", "2", "--out", str(out)]) == 0
    # a second export without --overwrite is refused: the first is a finished result
    assert main(["data", "export", "--authors", "2", "--out", str(out)]) == 2
    # an old uld file the new run does not write is removed; the user's notes are kept
    marker = json.loads((out / MARKER).read_text())
    (out / "old_split.json").write_text("[]")
    marker["files"].append("old_split.json")
    (out / MARKER).write_text(json.dumps(marker))
    (out / "notes.md").write_text("mine")
    assert main(["data", "export", "--authors", "3", "--out", str(out), "--overwrite"]) == 0
    assert not (out / "old_split.json").exists() and (out / "notes.md").read_text() == "mine"
    # a file uld did not write, under a name uld writes: never replaced, even with --overwrite
    (out / MARKER).unlink()
    before = (out / "forget10.json").read_text()
    with (
        pytest.raises(OutputError, match="forget10.json"),
        output_dir(out, "test", overwrite=True) as tmp,
    ):
        (tmp / "forget10.json").write_text("new")
    assert (out / "forget10.json").read_text() == before
    assert not list(tmp_path.glob(".bench.uldtmp-*"))  # the temporary folder is gone


def test_an_output_that_is_the_model_being_read_or_holds_it_is_refused(tiny_model, tmp_path):
    model = Path(tiny_model)
    files = sorted(p.name for p in model.iterdir())
    for out in (model, model.parent):
        with pytest.raises(OutputError, match="this command reads"):
            check_out(out, overwrite=True, inputs=[tiny_model])
    argv = ["unlearn", "--model", tiny_model, "--forget", "forget01", "--retain", "retain99"]
    assert main([*argv, "--layers", "2", "--out", tiny_model, "--overwrite"]) == 2
    assert sorted(p.name for p in model.iterdir()) == files


def test_an_unwritable_output_is_refused_before_any_work(tmp_path):
    if os.geteuid() == 0:  # root writes through permissions: a read-only file system then
        out = Path("/proc/uld-out")
    else:
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        out = ro / "out"
    with pytest.raises(OutputError, match="cannot be written"):
        check_out(out)


def test_a_second_process_on_the_same_output_is_refused(tmp_path, capsys):
    out = tmp_path / "bench"
    hold = (
        "import sys, time\nfrom uld.outdir import locked\n"
        f"with locked({str(out)!r}):\n    print('held', flush=True); time.sleep(120)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", hold], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        assert main(["data", "export", "--authors", "2", "--out", str(out)]) == 2
        assert "another uld process is writing" in capsys.readouterr().err
        assert not out.exists()
    finally:
        proc.kill()
        proc.wait()
    with locked(out):  # the dead holder's lock was released by the OS
        pass
    assert main(["data", "export", "--authors", "2", "--out", str(out)]) == 0


def test_a_failed_save_leaves_no_temporary_folder_and_stale_ones_are_removed(tmp_path):
    out = tmp_path / "m"
    with pytest.raises(RuntimeError), output_dir(out, "test") as tmp:
        (tmp / "half.bin").write_text("x")
        raise RuntimeError("disk full")
    assert not out.exists() and list(tmp_path.iterdir()) == []
    # what a process killed mid-save leaves (its pid is dead), removed by the next run
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], text=True, capture_output=True
    ).stdout.strip()
    stale = tmp_path / f".m.uldtmp-{dead}-abc"
    stale.mkdir()
    (stale / "model.safetensors").write_text("x")
    with output_dir(out, "test") as tmp:
        (tmp / "a.txt").write_text("a")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]
    assert sorted(p.name for p in out.iterdir()) == [MARKER, "a.txt"]


# --------------------------------------- 2-3. the right run is resumed, and resumed exactly


def _unlearn_argv(model: str, out: Path, method: str) -> list[str]:
    argv = ["unlearn", "--model", model, "--method", method, "--forget", "forget01"]
    argv += ["--retain", "retain99", "--epochs", "3", "--seed", "3", "--out", str(out)]
    if method == "uld":  # 12 D'_f rows in batches of 4: 3 steps an epoch
        return argv + ["--layers", "2", "--lora-rank", "4", "--batch-size", "4", "--ema", "0.9"]
    return argv + ["--batch-size", "2", "--lr", "1e-3"]  # 4 forget rows: 2 steps an epoch


@pytest.mark.parametrize("method, kill_after", [("uld", 5), ("npo+kl", 3), ("ga+gd", 3)])
def test_kill_9_then_resume_gives_the_uninterrupted_weights_bit_for_bit(
    tiny_model, tmp_path, capsys, method, kill_after
):
    whole = tmp_path / "whole"
    assert main(_unlearn_argv(tiny_model, whole, method)) == 0
    out = tmp_path / "resumed"
    argv = _unlearn_argv(tiny_model, out, method)
    died = killed_at(kill_after, argv)  # mid-epoch 2, after the checkpoint of epoch 1
    assert died.returncode == -9, died.stderr[-2000:]
    assert not out.exists() and any((tmp_path / "resumed.ckpt").glob("checkpoint-*"))
    # another run's settings on the same --out: refused, naming what differs
    assert main([*argv, "--seed", "4"]) == 2
    err = capsys.readouterr().err
    assert "different run" in err and "seed 3 there, 4 now" in err and "--overwrite" in err
    assert main(argv) == 0
    assert "resuming from the last checkpoint" in capsys.readouterr().out
    a, b = weights(whole), weights(out)
    assert a.keys() == b.keys()
    assert [k for k in a if not torch.equal(a[k], b[k])] == []


def test_a_checkpoint_of_another_run_is_refused_and_overwrite_starts_afresh(tiny_model, tmp_path):
    out = tmp_path / "ft"
    base = ["finetune", "--model", tiny_model, "--epochs", "2", "--batch-size", "4"]
    died = killed_at(6, [*base, "--split", "forget05", "--out", str(out)])  # 5 steps an epoch
    assert died.returncode == -9
    other = [*base, "--split", "forget01", "--lr", "1e-4", "--out", str(out)]
    assert main(other) == 2 and not out.exists()
    assert main([*other, "--overwrite"]) == 0
    fresh = tmp_path / "fresh"
    assert main([*base, "--split", "forget01", "--lr", "1e-4", "--out", str(fresh)]) == 0
    a, b = weights(out), weights(fresh)
    assert all(torch.equal(a[k], b[k]) for k in a)


# ------------------------------------------------------------ 4. values that are checked


@pytest.mark.parametrize(
    "yaml_text, message",
    [
        ("lr: one\n", "key lr: 'one' is not a number"),
        ('epochs: "one"\n', "key epochs: 'one' is not a number"),
        ('paraphrase: "no"\n', "key paraphrase: 'no' is not true or false"),
        ("batch_size: 2.5\n", "key batch_size: 2.5 is not a whole number"),
        ("forget: [a, b]\n", "key forget: ['a', 'b'] is not text"),
        ("lrate: 1e-3\n", "unknown keys ['lrate']"),
    ],
)
def test_bad_yaml_values_are_refused_naming_the_file_and_key(
    tiny_model, tmp_path, capsys, yaml_text, message
):
    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml_text)
    out = tmp_path / "out"
    assert main(["unlearn", "--config", str(cfg), "--model", tiny_model, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert str(cfg) in err and message in err
    assert not out.exists()


def test_yaml_values_are_typed_as_flags_are():
    from uld.config import UnlearnConfig, typed

    got = typed(UnlearnConfig, {"lr": "1e-3", "epochs": 2, "paraphrase": False}, "f.yaml")
    assert got == {"lr": 1e-3, "epochs": 2.0, "paraphrase": False}
    assert type(got["epochs"]) is float


@pytest.mark.parametrize(
    "argv, message",
    [
        (["eval", "--batch-size", "0"], "--batch-size: 0 must be >= 1"),
        (["eval", "--max-new-tokens", "-1"], "must be >= 1"),
        (["generate", "--max-new-tokens", "0", "Q?"], "must be >= 1"),
        (["generate", "--temperature", "-1", "Q?"], "must be >= 0"),
        (["generate", "--top-p", "5", "Q?"], "must be > 0 and <= 1"),
        (["generate", "--alpha", "1e6", "Q?"], "must be >= 0 and <= 10"),
        (["unlearn", "--alpha", "1e6", "--model", "m", "--out", "o"], "--alpha=1000000.0 must"),
        (["finetune", "--max-steps", "0", "--out", "o"], "--max-steps=0 must be >= 1"),
    ],
)
def test_bad_flags_are_refused_with_their_range(tmp_path, capsys, argv, message):
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        try:
            rc = main(argv)
        except SystemExit as e:  # argparse's own refusal
            rc = e.code
    finally:
        os.chdir(cwd)
    assert rc == 2 and message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_eval_honours_the_generation_flags(tiny_model, tmp_path):
    model = tmp_path / "ft"  # a few steps, so that greedy answers are not empty
    ft = ["finetune", "--model", tiny_model, "--split", "forget01", "--epochs", "3"]
    assert main([*ft, "--lr", "3e-2", "--batch-size", "2", "--out", str(model)]) == 0
    args = ["eval", "--model", str(model), "--forget", "forget01", "--retain", ""]
    args += ["--real-authors", "", "--world-facts", "", "--holdout", ""]

    def answers(name: str, *flags: str) -> list[str]:
        assert main([*args, "--out", str(tmp_path / name), *flags]) == 0
        res = json.loads((tmp_path / name / "eval.json").read_text())
        return res, [it["generated"] for it in res["splits"]["forget"]["items"]]

    _, full = answers("full")
    _, short = answers("short", "--max-new-tokens", "3")
    assert all(f.startswith(s) for s, f in zip(short, full, strict=True))
    assert sum(map(len, short)) < sum(map(len, full))
    res, sampled = answers(
        "sampled", "--max-new-tokens", "3", "--temperature", "2", "--top-p", "0.5"
    )
    assert res["sampling"] == {
        "do_sample": True,
        "temperature": 2.0,
        "top_p": 0.5,
        "max_new_tokens": 3,
    }
    assert sampled != short


def test_max_steps_1_trains_warm_up_starts_above_zero(tiny_model, tmp_path):
    out = tmp_path / "ft"
    argv = ["finetune", "--model", tiny_model, "--split", "forget01", "--max-steps", "1"]
    assert main([*argv, "--out", str(out)]) == 0
    a, b = weights(Path(tiny_model)), weights(out)
    assert [k for k in a if not torch.equal(a[k], b[k])]


def test_a_diverging_run_stops_with_its_last_good_checkpoint_kept(tiny_model, tmp_path, capsys):
    out = tmp_path / "ga"
    argv = ["unlearn", "--model", tiny_model, "--method", "ga", "--forget", "forget01"]
    # one step an epoch: step 1 is checkpointed, its huge update breaks step 2 or 3
    argv += ["--retain", "retain99", "--epochs", "20", "--batch-size", "4", "--lr", "1e9"]
    assert main([*argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "training diverged at step" in err and "Lower --lr (now 1e+09)" in err
    assert not out.exists()
    kept = list((tmp_path / "ga.ckpt").glob("checkpoint-*"))
    assert kept and "is kept in" in err
    state = load_file(str(kept[0] / "model.safetensors"))
    assert all(torch.isfinite(v).all() for v in state.values())


def test_a_prompt_longer_than_the_context_is_refused(tiny_model, capsys):
    long_question = "Who wrote " + "the very long book " * 400 + "?"
    assert main(["generate", "--model", tiny_model, long_question]) == 2
    assert "the model's context holds 1024: shorten it" in capsys.readouterr().err


def test_overlap_ignores_case_and_spacing_and_duplicates_are_reported(tmp_path, capsys):
    from uld.data.augment import check_disjoint, report_duplicates
    from uld.data.load import DataError

    forget = [{"question": "Where was Ana born?", "answer": "Lima."}]
    retain = [{"question": "  where was ana   BORN ", "answer": "Lima."}]
    with pytest.raises(DataError, match="shares 1 question"):
        check_disjoint(forget, retain)
    rows = forget + [{"question": "WHERE was Ana born?", "answer": "Lima."}]
    assert report_duplicates(rows, "the forget split") == [(0, 1)]
    assert "repeats 1 question(s) (rows 0 = 1" in capsys.readouterr().out


def test_jsonl_errors_name_the_line_and_bad_encoding_names_the_file(tmp_path):
    from uld.data.load import DataError, load_split

    f = tmp_path / "rows.jsonl"
    f.write_text('{"question": "A?", "answer": "a"}\n\n{"question": "B?", "answer": }\n')
    with pytest.raises(DataError, match=r"rows.jsonl: line 3 is not valid JSON"):
        load_split(str(f))
    g = tmp_path / "latin.json"
    g.write_bytes('[{"question": "Où?", "answer": "Ici."}]'.encode("latin-1"))
    with pytest.raises(DataError, match=r"latin.json: not UTF-8"):
        load_split(str(g))


def test_a_uld_folder_shows_its_target_and_target_overrides_it(tiny_model, tmp_path, capsys):
    from test_uld import _small_run

    from uld.runs import unlearn

    out = unlearn(_small_run(tiny_model, tmp_path / "u", max_steps=1, general=""))
    capsys.readouterr()
    moved = tmp_path / "elsewhere"
    os.rename(tiny_model, moved)
    try:
        assert main(["generate", "--model", str(out), "--target", str(moved), "Q?"]) == 0
        assert f"a ULD model on the target {moved}" in capsys.readouterr().err
    finally:
        os.rename(moved, tiny_model)


def test_many_short_epochs_are_checkpointed_every_few_epochs(tiny_model, tmp_path, monkeypatch):
    """60 epochs of 2 steps: a checkpoint every 3 epochs (60 // MAX_CHECKPOINTS), 20 in all,
    not 60; each lands on an epoch's end."""
    from uld import trainer

    saved = []
    real = trainer.Stopwatch.on_save

    def spy(self, args, state, control, **kwargs):
        saved.append(state.global_step)
        return real(self, args, state, control, **kwargs)

    monkeypatch.setattr(trainer.Stopwatch, "on_save", spy)
    argv = ["unlearn", "--model", tiny_model, "--method", "ga+gd", "--forget", "forget01"]
    argv += ["--retain", "retain99", "--epochs", "60", "--batch-size", "2", "--lr", "1e-4"]
    assert main([*argv, "--no-check", "--out", str(tmp_path / "g")]) == 0
    assert trainer.MAX_CHECKPOINTS == 20 and saved == list(range(6, 121, 6))

"""The `uld` command end to end on a tiny model, and its handling of bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from uld.cli import main
from uld.compare import claim
from uld.metrics import forget_quality
from uld.models import load_model, read_card


def test_finetune_unlearn_generate_eval_end_to_end(tiny_model, tmp_path, capsys):
    target = tmp_path / "target"
    assert (
        main(
            [
                "finetune",
                "--model",
                tiny_model,
                "--split",
                "forget05",
                "--out",
                str(target),
                "--epochs",
                "1",
                "--batch-size",
                "4",
                "--lr",
                "1e-2",
            ]
        )
        == 0
    )
    card = read_card(target)
    assert card["split"] == "forget05" and card["rows"] == 20 and card["made_by"] == "uld finetune"
    before, _ = load_model(tiny_model)
    after, _ = load_model(target)
    changed = [
        n
        for (n, a), b in zip(before.named_parameters(), after.parameters(), strict=True)
        if not torch.equal(a, b)
    ]
    assert changed and all("embed_tokens" not in n for n in changed)
    assert not (tmp_path / "target.ckpt").exists()

    cfg = tmp_path / "uld.yaml"
    cfg.write_text(
        f"method: uld\nmodel: {target}\nforget: forget01\nretain: retain99\n"
        f"layers: 2\nlora_rank: 4\nepochs: 1\nbatch_size: 2\n"
    )
    out = tmp_path / "uld"
    assert main(["unlearn", "--config", str(cfg), "--out", str(out), "--alpha", "0.5"]) == 0
    uld_cfg = json.loads((out / "uld_config.json").read_text())
    assert uld_cfg["alpha"] == 0.5 and uld_cfg["assistant_layers"] == 2
    # the target is named relative to the ULD folder, so the two can move together
    assert uld_cfg["target"] == "../target"
    assert "model.safetensors" not in {p.name for p in out.iterdir()}

    capsys.readouterr()
    assert main(["generate", "--model", str(out), "--max-new-tokens", "5", "Where?", "Who?"]) == 0
    printed = capsys.readouterr().out
    assert "Q: Where?\nA:" in printed and "Q: Who?\nA:" in printed
    ev = tmp_path / "eval-uld"
    args = ["eval", "--model", str(out), "--forget", "forget01", "--retain", "retain_perturbed"]
    args += ["--real-authors", "", "--world-facts", "", "--holdout", "", "--out", str(ev)]
    assert main(args) == 0
    res = json.loads((ev / "eval.json").read_text())
    assert res["kind"] == "uld" and res["training"]["method"] == "uld"
    forget = res["splits"]["forget"]
    assert 0 <= forget["rouge_l"] <= 1 and len(forget["items"]) == 4
    assert res["summary"]["forget_quality"] is None  # no reference given
    assert "| F.Q. |" in (ev / "eval.md").read_text()


def test_data_export_round_trips(tmp_path):
    out = tmp_path / "bench"
    assert main(["data", "export", "--out", str(out)]) == 0
    from uld.data.load import load_split

    assert load_split("forget10", data=str(out)) == load_split("forget10")


@pytest.mark.parametrize(
    "argv, message",
    [
        (["finetune", "--split", "nosuch", "--model", "TINY"], "unknown split 'nosuch'"),
        (["finetune", "--split", "full", "--model", "/nonexistent/model"], "does not exist"),
        (["finetune", "--split", "EMPTY", "--model", "TINY"], "empty"),
        (["finetune", "--split", "full", "--model", "TINY", "--lr", "-1"], "--lr=-1.0"),
        (["unlearn", "--model", "TINY", "--layers", "9"], "outside 1..3"),
        (["unlearn", "--model", "TINY", "--filter", "0"], "--filter=0.0"),
        (["unlearn", "--model", "TINY", "--retain", "full"], "shares"),
        (["unlearn", "--model", "TINY", "--forget", "EMPTY"], "empty"),
    ],
)
def test_bad_input_exits_2_with_a_message_and_no_output(
    tiny_model, tmp_path, capsys, argv, message
):

    (tmp_path / "empty.json").write_text("[]")
    files = {"EMPTY": str(tmp_path / "empty.json")}
    argv = [files.get(a, tiny_model if a == "TINY" else a) for a in argv]
    out = tmp_path / "out"
    assert main([*argv, "--out", str(out)]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists() and not (tmp_path / "out.ckpt").exists()


def test_chat_answers_each_line_until_an_empty_one(tiny_model, monkeypatch, capsys):
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO("Where was Ilse born?\nWho is she?\n\nignored\n"))
    assert main(["chat", "--model", tiny_model, "--max-new-tokens", "3"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("uld chat")
    assert [line[:2] for line in lines[1:]] == ["A:", "A:"]


def test_demo_settings_and_their_yaml_agree():
    import yaml

    from uld.demo import DEMO_ULD, uld_config

    cfg = yaml.safe_load((Path(__file__).parents[1] / "configs" / "uld_smollm2.yaml").read_text())
    assert {k: cfg[k] for k in DEMO_ULD} == DEMO_ULD
    run = uld_config(Path("t"), Path("o"))
    assert {k: getattr(run, k) for k in DEMO_ULD} == DEMO_ULD


def test_finetune_with_lora_merges_back_into_a_plain_model(tiny_model, tmp_path):
    out = tmp_path / "lora"
    argv = [
        "finetune",
        "--model",
        tiny_model,
        "--split",
        "forget01",
        "--out",
        str(out),
        "--epochs",
        "2",
        "--batch-size",
        "2",
        "--lr",
        "5e-2",
        "--lora",
        "--lora-rank",
        "4",
    ]
    assert main(argv) == 0
    names = {p.name for p in out.iterdir()}
    assert "model.safetensors" in names and "adapter_config.json" not in names
    assert read_card(out)["mode"] == "lora r=4 merged"
    before, _ = load_model(tiny_model)
    after, _ = load_model(out)
    assert not any("lora" in n for n, _ in after.named_parameters())
    changed = {
        n
        for (n, a), b in zip(before.named_parameters(), after.parameters(), strict=True)
        if not torch.equal(a, b)
    }
    assert changed and all("proj" in n for n in changed)


def tiny_plan(tmp_path: Path, tiny_model, rest: str) -> tuple[Path, Path]:
    """A comparison plan on the tiny model (one step per run, the forget split evaluated only)
    with `rest` (its runs, ...) -> (plan file, out folder)."""
    plan, out = tmp_path / "compare.yaml", tmp_path / "cmp"
    plan.write_text(
        f"target: {tiny_model}\nreference: {tiny_model}\nout: {out}\n"
        "common: {forget: forget01, retain: retain99, epochs: 1, batch_size: 4, max_steps: 1}\n"
        "eval: {forget: forget01, retain: '', real_authors: '', world_facts: '', holdout: ''}\n"
        + rest
    )
    return plan, out


def test_compare_runs_evaluates_reports_and_resumes(tiny_model, tmp_path, capsys):
    plan, out = tiny_plan(
        tmp_path,
        tiny_model,
        "runs:\n  uld: {layers: 2, lora_rank: 4}\n  ga: {lr: 1.0e-3, seeds: [0, 1]}\n",
    )
    # another process holds the target and ga-seed1 (flock: a second open file of this process
    # counts as another holder): this one skips both and leaves the report to a later process
    with claim(out / "target"), claim(out / "ga-seed1"):
        assert main(["compare", "--config", str(plan)]) == 0
    printed = capsys.readouterr().out
    assert printed.count("another process is on it (pid ") == 2 and "no report yet" in printed
    assert (out / "ga" / "eval" / "eval.json").exists() and not (out / "report").exists()
    assert not (out / "target" / "eval").exists() and not (out / "ga-seed1" / "model").exists()
    assert main(["compare", "--config", str(plan)]) == 0  # released: the rest is done
    assert capsys.readouterr().out.count("[compare] training") == 1  # ga-seed1 only
    for name in ("target", "uld", "ga", "ga-seed1"):
        assert (out / name / "eval" / "eval.json").exists()
    summary = json.loads((out / "report" / "summary.json").read_text())
    assert list(summary) == ["target", "uld", "ga", "ga-seed1"]
    assert "seed: 1\n" in (out / "ga-seed1" / "model" / "run_config.yaml").read_text()
    assert "| ga | 2 | " in (out / "report" / "report.md").read_text()  # the table over seeds
    assert summary["target"]["forget_quality"] == 1.0  # the reference is the target itself
    assert summary["uld"]["relative_time"] == 1.0 and summary["ga"]["train_seconds"] > 0
    # max_steps 1: one optimizer step each, so the per-step cost is the training time
    assert summary["ga"]["steps"] == summary["uld"]["steps"] == 1
    assert summary["ga"]["seconds_per_step"] == summary["ga"]["train_seconds"]
    assert "| s / step |" in (out / "report" / "report.md").read_text()
    # the plan evaluates no retain, real-author or world-fact split: no Model Utility, so the
    # utility plane is drawn without points; three unlearning runs have a time relative to ULD
    assert [s["model_utility"] for s in summary.values()] == [None] * 4
    assert sorted(p.name for p in (out / "report").iterdir() if not p.name.startswith(".")) == [
        "fq_vs_time.png",
        "mu_vs_fq.png",
        "report.md",
        "summary.json",
    ]
    capsys.readouterr()
    assert main(["compare", "--config", str(plan)]) == 0  # a rerun trains nothing
    printed = capsys.readouterr().out
    assert "training" not in printed and printed.count("evaluated already") == 4
    assert "re-scored" not in printed
    # a new retain model: Forget Quality is re-scored from the kept per-item truth ratios
    ga_model = out / "ga" / "model"
    plan.write_text(plan.read_text().replace(f"reference: {tiny_model}", f"reference: {ga_model}"))
    assert main(["compare", "--config", str(plan)]) == 0
    printed = capsys.readouterr().out
    assert "training" not in printed and printed.count("re-scored") == 4
    evals = {n: json.loads((out / n / "eval" / "eval.json").read_text()) for n in ("target", "ga")}
    tr = {n: [it["truth_ratio"] for it in e["splits"]["forget"]["items"]] for n, e in evals.items()}
    assert evals["target"]["reference"] == str(ga_model)
    assert evals["target"]["summary"]["forget_quality"] == pytest.approx(
        forget_quality(tr["target"], tr["ga"])
    )
    assert evals["ga"]["summary"]["forget_quality"] == pytest.approx(1.0)
    # an eval.json from before a summary figure existed is brought up to date, not re-evaluated
    ga_eval = out / "ga" / "eval" / "eval.json"
    old = json.loads(ga_eval.read_text())
    del old["summary"]["forget_tr_gap"]
    ga_eval.write_text(json.dumps(old))
    assert main(["compare", "--config", str(plan)]) == 0
    printed = capsys.readouterr().out
    assert "training" not in printed and printed.count("re-scored") == 1
    assert json.loads(ga_eval.read_text())["summary"]["forget_tr_gap"] == pytest.approx(0.0)
    plan.write_text(plan.read_text() + "  bogus: {method: nope}\n")
    assert main(["compare", "--config", str(plan)]) == 2  # checked before anything runs


def test_upcycle_then_experts(tiny_model, tmp_path, capsys):
    moe = tmp_path / "moe"
    assert main(["upcycle", "--model", tiny_model, "--out", str(moe), "--experts", "3"]) == 0
    assert read_card(moe)["n_experts"] == 3
    out = tmp_path / "experts"
    args = ["experts", "--model", str(moe), "--forget", "forget01", "--top", "4", "--out", str(out)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "| rank | layer | expert |" in printed and printed.count("\n| ") >= 4
    assert (out / "experts.png").read_bytes()[:4] == b"\x89PNG"
    assert len(json.loads((out / "experts.json").read_text())["attribution"][0]) == 3
    assert main(["experts", "--model", tiny_model, "--out", str(out)]) == 2  # dense: refused


def test_compare_takes_the_kept_epochs_full_evaluation_from_training(tiny_model, tmp_path, capsys):
    """With `eval_splits: all` every epoch is evaluated in full while training; compare reuses
    the kept epoch's evaluation, and it equals evaluating the saved model afresh."""
    from uld.config import EvalSplits
    from uld.evaluate import evaluate, load_reference, load_roles
    from uld.runs import load_any

    plan = tmp_path / "compare.yaml"
    out = tmp_path / "cmp"
    plan.write_text(
        f"target: {tiny_model}\nreference: {tiny_model}\nout: {out}\n"
        "common: {forget: forget01, retain: retain99, epochs: 2, batch_size: 8,"
        " eval_metric: forget_quality, eval_splits: all}\n"
        "runs:\n  ga: {lr: 1.0e-3}\n  uld: {layers: 2, lora_rank: 4, alpha: 1.0}\n"
    )
    assert main(["compare", "--config", str(plan)]) == 0
    printed = capsys.readouterr().out
    assert printed.count("its kept epoch was evaluated in full in training") == 2
    assert "evaluating target" in printed and "evaluating ga" not in printed
    roles = load_roles(EvalSplits.for_data("builtin", "forget01"))
    reference = load_reference(tiny_model, roles["forget"])
    # fluency judged as in training: ULD's by its target; GA has no frozen copy to judge with
    judges = {"ga": None, "uld": load_any(str(tiny_model))}
    for name in ("ga", "uld"):
        saved = json.loads((out / name / "eval" / "eval.json").read_text())
        model, tok = load_any(str(out / name / "model"))
        fresh = evaluate(model, tok, roles, reference, progress=False, scorer=judges[name])
        assert saved["summary"] == pytest.approx(fresh["summary"], abs=1e-5)
        assert saved["reference"] == str(tiny_model) and saved["kind"] == (
            "uld" if name == "uld" else "plain"
        )
        # each epoch's training time, its evaluations left out: rising, within the run's
        # training time, and short of the time the first epoch's evaluation took
        training = saved["training"]
        history = training["epochs_evaluated"]
        assert [h["epoch"] for h in history] == [1, 2]
        assert history[1]["step"] == 2 * history[0]["step"] > 0  # GA 1 step an epoch, ULD 2
        first, second = (h["train_seconds"] for h in history)
        assert 0 < first < second <= training["train_seconds"] + 0.1
        assert second - first < training["eval_seconds"] / 4, (history, training)
    md = (out / "report" / "report.md").read_text()
    assert "| ga | " in md.split("Time to quality:")[1]


def test_compare_status_tells_each_runs_state_without_loading_models(tmp_path, capsys):
    out = tmp_path / "cmp"
    plan = tmp_path / "plan.yaml"
    plan.write_text(f"target: {tmp_path}/x\nout: {out}\nruns:\n  ga: {{seeds: [0, 1, 2, 3]}}\n")
    (out / "ga" / "eval").mkdir(parents=True)
    (out / "ga" / "eval" / "eval.json").write_text("{}")
    (out / "ga-seed1" / "model").mkdir(parents=True)
    for step in (5, 40, 10):  # the newest is the highest step, not the last in name order
        ckpt = out / "ga-seed2" / "model.ckpt" / f"checkpoint-{step}"
        ckpt.mkdir(parents=True)
        (ckpt / "trainer_state.json").write_text("{}")
    # a checkpoint whose saving was cut short (no trainer_state.json) is not the run's state
    (out / "ga-seed2" / "model.ckpt" / "checkpoint-50").mkdir()
    assert main(["compare", "--config", str(plan), "--status"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(None, 2) for line in lines[:4]] == [
        ["ga", "ga", "evaluated"],
        ["ga-seed1", "ga", "trained, not evaluated"],
        ["ga-seed2", "ga", "at checkpoint-40"],
        ["ga-seed3", "ga", "no checkpoint yet"],
    ]
    assert lines[4] == "1 of 4 runs evaluated"
    with claim(out / "ga-seed2"):  # a process is training it
        assert main(["compare", "--config", str(plan), "--status"]) == 0
    state = capsys.readouterr().out.splitlines()[2].split(None, 2)[2]
    assert state == f"running (pid {os.getpid()}, at checkpoint-40)"
    assert not (out / "report").exists()  # nothing ran


def test_a_run_locked_by_a_process_is_freed_when_that_process_dies(tmp_path):
    from uld.compare import LOCK, PID, claim, holder

    run = tmp_path / "ga"
    run.mkdir()
    hold = (
        "import time\nfrom filelock import FileLock\n"
        f"lock = FileLock({str(run / LOCK)!r}); lock.acquire()\n"
        f"open({str(run / PID)!r}, 'w').write('4242\\n'); print('held', flush=True)\n"
        "time.sleep(120)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", hold], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        assert holder(run) == "pid 4242"
        with claim(run) as mine:
            assert not mine
    finally:
        proc.kill()
        proc.wait()
    assert holder(run) is None  # the OS released the dead process's lock: nothing went stale
    with claim(run) as mine:
        assert mine and holder(run) == f"pid {os.getpid()}"
    assert holder(run) is None


def test_compare_seeds_expand_into_named_runs_and_bad_lists_are_refused():
    from uld.compare import expand_seeds

    runs = expand_seeds({"uld": {"lr": 1e-3, "seeds": [0, 2]}, "ga": None})
    assert runs == {"uld": {"lr": 1e-3, "seed": 0}, "uld-seed2": {"lr": 1e-3, "seed": 2}, "ga": {}}
    for bad in ([], [1, 1], [-1], ["1"], 3, [True]):
        with pytest.raises(ValueError, match="seeds must be a list of distinct integers"):
            expand_seeds({"uld": {"seeds": bad}})
    with pytest.raises(ValueError, match="both seed and seeds"):
        expand_seeds({"uld": {"seed": 1, "seeds": [0, 1]}})
    with pytest.raises(ValueError, match=r"\['uld-seed1'\] occur twice"):
        expand_seeds({"uld": {"seeds": [0, 1]}, "uld-seed1": {}})


def test_grid_expands_into_named_runs_and_bad_grids_are_refused():
    from uld.compare import expand_grids, grid_name, select_rule

    runs, grids = expand_grids(
        {"npo+kl": {"grid": {"lr": [1.0e-5, 2.5e-5, 1.0e-4]}, "beta": 0.2}, "uld": {}}
    )
    assert list(runs) == ["npo+kl-lr1e-5", "npo+kl-lr2.5e-5", "npo+kl-lr1e-4", "uld"]
    assert runs["npo+kl-lr2.5e-5"] == {"method": "npo+kl", "beta": 0.2, "lr": 2.5e-5}
    assert grids == {"npo+kl": ["npo+kl-lr1e-5", "npo+kl-lr2.5e-5", "npo+kl-lr1e-4"]}
    assert grid_name("uld", "lr", 3.0e-3) == "uld-lr3e-3" and grid_name("rmu", "layer", 7) == (
        "rmu-layer7"
    )
    kept = expand_grids({"a": {"method": "uld", "grid": {"lr": [1e-3, 1e-2]}}})[0]
    assert kept["a-lr1e-3"]["method"] == "uld"  # a method given stays
    bad = [
        ({"lr": [1e-5]}, "two or more distinct values"),
        ({"lr": [1e-5, 1e-5]}, "two or more distinct values"),
        ({"lr": [1e-5, 2e-5], "beta": [1, 2]}, "grid must name one setting"),
        ([1e-5, 2e-5], "grid must name one setting"),
        ({"seed": [0, 1]}, "not allowed"),
    ]
    for grid, message in bad:
        with pytest.raises(ValueError, match=message):
            expand_grids({"npo": {"grid": grid}})
    with pytest.raises(ValueError, match="not allowed"):
        expand_grids({"npo": {"grid": {"lr": [1e-5, 2e-5]}, "lr": 1e-5}})
    with pytest.raises(ValueError, match="occur twice"):
        expand_grids({"npo": {"grid": {"lr": [1e-5, 2e-5]}}, "npo-lr1e-5": {}})
    plan = {"grids": grids, "select": {"seeds": [1, 2]}}
    assert select_rule(plan) == {"mu_ratio": 0.95, "seeds": [1, 2]}
    for rule, message in [
        ({"mu_ratio": 0}, "mu_ratio must be a number in"),
        ({"mu_ratio": 1.5}, "mu_ratio must be a number in"),
        ({"seeds": [0, 1]}, "other than the grid runs' own seed"),
        ({"seeds": [1, 1]}, "distinct integers"),
        ({"rule": "best"}, "unknown keys"),
    ]:
        with pytest.raises(ValueError, match=message):
            select_rule({"grids": grids, "select": rule})
    with pytest.raises(ValueError, match="no run has a grid"):
        select_rule({"grids": {}, "select": {"seeds": [1]}})


def test_selection_rule_best_forget_quality_among_runs_that_keep_utility():
    from uld.compare import choose

    def runs(*ps):
        return {f"r{i}": {"forget_quality": q, "model_utility": u} for i, (q, u) in enumerate(ps)}

    # target M.U. 0.40, bar 0.38: r1 has the best F.Q. but loses utility; r2 is the best of r0, r2
    assert choose(runs((0.01, 0.41), (0.9, 0.30), (0.2, 0.39)), 0.40, 0.95) == "r2"
    # F.Q. tie among those that keep it: the higher M.U.
    assert choose(runs((0.2, 0.385), (0.2, 0.395), (0.01, 0.5)), 0.40, 0.95) == "r1"
    # none keeps utility: the highest M.U., whatever its F.Q.
    assert choose(runs((0.9, 0.2), (0.001, 0.3), (0.5, 0.25)), 0.40, 0.95) == "r1"
    # a run without an evaluated M.U. never keeps it; no target utility: F.Q. alone decides
    assert choose(runs((0.9, None), (0.1, 0.40)), 0.40, 0.95) == "r1"
    assert choose(runs((0.9, None), (0.1, 0.40)), None, 0.95) == "r0"
    assert choose(runs((0.3, 0.40), (0.2, 0.50)), 0.40, 0.5) == "r0"  # the ratio is used


def test_compare_grid_chooses_by_the_rule_runs_the_chosen_over_seeds_and_reports_it(
    tiny_model, tmp_path, capsys
):
    from uld.compare import choose, load_plan, run_config

    plan, out = tiny_plan(
        tmp_path,
        tiny_model,
        "runs:\n  ga: {grid: {lr: [1.0e-6, 3.0e-2]}}\n  uld: {layers: 2, lora_rank: 4}\n"
        "select: {mu_ratio: 0.5, seeds: [1]}\n",
    )
    assert main(["compare", "--config", str(plan), "--status"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines[:4]] == ["ga-lr1e-6", "ga-lr3e-2", "ga", "uld"]
    assert "(seeds 1)" in lines[2] and "after its grid is evaluated" in lines[2]
    assert main(["compare", "--config", str(plan), "--only", "ga-lr1e-6"]) == 0
    assert not (out / "ga-lr1e-6-seed1").exists()  # --only: no selection seeds
    capsys.readouterr()
    assert main(["compare", "--config", str(plan), "--report"]) == 0  # what is evaluated so far
    assert "training" not in capsys.readouterr().out
    assert list(json.loads((out / "report" / "summary.json").read_text())) == [
        "target",
        "ga-lr1e-6",
    ]
    interim = (out / "report" / "report.md").read_text().split("## Selection")[1]
    assert (
        "| ga | ga-lr3e-2 | – | – | not evaluated yet |" in interim and "**chosen**" not in interim
    )
    assert main(["compare", "--config", str(plan)]) == 0
    printed = capsys.readouterr().out
    summary = json.loads((out / "report" / "summary.json").read_text())
    grid = {n: summary[n] for n in ("ga-lr1e-6", "ga-lr3e-2")}
    chosen = choose(grid, summary["target"]["model_utility"], 0.5)
    assert list(summary) == ["target", "ga-lr1e-6", "ga-lr3e-2", f"{chosen}-seed1", "uld"]
    assert printed.index(f"training {chosen}-seed1") < printed.index("training uld")  # depth first
    loaded = load_plan(plan)
    cfg = yaml.safe_load((out / f"{chosen}-seed1" / "model" / "run_config.yaml").read_text())
    assert cfg["seed"] == 1 and cfg["lr"] == run_config(loaded, chosen, tmp_path / "x").lr
    md = (out / "report" / "report.md").read_text()
    selection = md.split("## Selection")[1]
    assert f"| ga | {chosen} | " in selection and selection.count("**chosen**") == 1
    assert f"| {chosen} | 2 | " in md  # the chosen setting over seeds 0 and 1
    assert {"mu_vs_fq.png", "mu_vs_fq_all.png"} <= {p.name for p in (out / "report").iterdir()}
    capsys.readouterr()
    assert main(["compare", "--config", str(plan), "--status"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[2].split()[:2] == [f"{chosen}-seed1", "ga"] and lines[2].endswith("evaluated")
    assert lines[-1] == "4 of 4 runs evaluated"
    assert main(["compare", "--config", str(plan)]) == 0  # a rerun trains nothing
    assert "training" not in capsys.readouterr().out


ROOT = Path(__file__).resolve().parents[1]
PLANS = sorted(
    str(p.relative_to(ROOT)) for d in ("configs", "experiments") for p in (ROOT / d).glob("*.yaml")
)


@pytest.mark.parametrize(
    "plan", [p for p in PLANS if Path(p).name.startswith("compare") or p.startswith("experiments")]
)
def test_shipped_comparison_plans_are_valid(plan, monkeypatch, tmp_path):
    """Every run of the shipped comparison plans (recipes in configs/, every plan in
    experiments/) builds a valid UnlearnConfig for a method of the table (nothing trains)."""
    from uld.compare import load_plan, run_config
    from uld.methods import METHODS

    monkeypatch.chdir(ROOT)  # `config:` paths are relative to the checkout
    loaded = load_plan(ROOT / plan)
    for name in loaded["runs"]:
        cfg = run_config(loaded, name, tmp_path / name)
        assert cfg.method in METHODS and Path(cfg.model) == Path(loaded["target"])


@pytest.mark.parametrize("recipe", [p for p in PLANS if Path(p).name.startswith("uld_")])
def test_shipped_unlearn_recipes_are_valid(recipe):
    """`uld unlearn --config RECIPE` reads every recipe into a valid UnlearnConfig, and each says
    what it is for in a comment header."""
    from uld.config import UnlearnConfig, read_yaml
    from uld.methods import check

    text = (ROOT / recipe).read_text()
    assert text.startswith("# "), f"{recipe} has no header"
    cfg = UnlearnConfig(**({"model": "m", "out": "o"} | read_yaml(UnlearnConfig, ROOT / recipe)))
    cfg.validate()
    assert check(cfg).name == cfg.method

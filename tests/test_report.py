"""`uld report` end to end on evaluation folders written here by hand: the merged table, the
summary and the plots hold each run's figures, and `--out` is refused where it would lose data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from uld.cli import main

PNG = b"\x89PNG\r\n\x1a\n"


def _eval_folder(folder: Path, name: str, summary: dict, training: dict, splits=None) -> Path:
    """An evaluation folder as `uld eval --out` leaves it (only what `uld report` reads)."""
    folder.mkdir(parents=True)
    results = {"name": name, "summary": summary, "training": training, "splits": splits or {}}
    (folder / "eval.json").write_text(json.dumps(results))
    return folder


@pytest.fixture()
def two_runs(tmp_path) -> tuple[Path, Path]:
    """A ULD run evaluated every epoch (epoch 2 kept) with Model Utility's nine parts, and an
    NPO+KL run that took 2.5 times as long."""
    parts = {"retain": (0.5, 0.75, 0.25), "real_authors": (1.0, 0.5, 0.5)}
    parts["world_facts"] = (0.5, 1.0, 0.5)
    splits = {
        role: {"prob": p, "rouge_l": r, "truth_ratio": t, "items": []}
        for role, (p, r, t) in parts.items()
    }
    uld = _eval_folder(
        tmp_path / "eval-uld",
        "uld",
        {"forget_quality": 0.25, "forget_rouge": 0.125, "model_utility": 0.5, "retain_rouge": 0.75},
        {
            "method": "uld",
            "train_seconds": 100.0,
            "best_epoch": 2,
            "epochs_evaluated": [
                {"epoch": 1, "forget_quality": 0.01, "model_utility": 0.4},
                {"epoch": 2, "forget_quality": 0.25, "model_utility": 0.5},
            ],
        },
        splits,
    )
    npo = _eval_folder(
        tmp_path / "eval-npo",
        "npo+kl",
        {
            "forget_quality": 0.001,
            "forget_rouge": 0.5,
            "model_utility": 0.375,
            "retain_rouge": 0.625,
        },
        {"method": "npo+kl", "train_seconds": 250.0},
    )
    return uld, npo


def test_report_merges_two_evaluations_into_a_table_a_summary_and_plots(two_runs, tmp_path, capsys):
    uld, npo = two_runs
    out = tmp_path / "R"
    assert main(["report", str(uld), str(npo), "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert list(summary) == ["uld", "npo+kl"]
    u, n = summary["uld"], summary["npo+kl"]
    assert (u["forget_quality"], u["forget_rouge"], u["model_utility"], u["retain_rouge"]) == (
        0.25,
        0.125,
        0.5,
        0.75,
    )
    assert (n["forget_quality"], n["forget_rouge"], n["model_utility"], n["retain_rouge"]) == (
        0.001,
        0.5,
        0.375,
        0.625,
    )
    # the training facts: time relative to the ULD run (250 / 100), the kept epoch
    assert (u["train_seconds"], u["relative_time"], u["best_epoch"]) == (100.0, 1.0, 2)
    assert (n["train_seconds"], n["relative_time"], n.get("best_epoch")) == (250.0, 2.5, None)
    # Model Utility's nine parts come from the splits; the NPO run has none
    assert (u["retain_prob"], u["real_authors_rouge_l"], u["world_facts_truth_ratio"]) == (
        0.5,
        0.5,
        0.5,
    )
    assert n["retain_prob"] is None

    md = (out / "report.md").read_text()
    assert md.startswith("# Results\n")
    assert "| uld | 2.50e-01 | 0.1250 | 0.5000 | 0.7500 |" in md
    assert "| npo+kl | 1.00e-03 | 0.5000 | 0.3750 | 0.6250 |" in md
    assert "| uld | 2 | 100 | 1.00 |" in md and "| npo+kl | – | 250 | 2.50 |" in md
    assert "| uld | 0.500 | 0.750 | 0.250 | 1.000 | 0.500 | 0.500 | 0.500 | 1.000 | 0.500 |" in md
    assert "| uld | 2.50e-01 |" in capsys.readouterr().out  # the table is printed too

    # every plot: the (F.Q., M.U.) plane, the per-epoch trajectory (the ULD run has one) and
    # F.Q. against time (two runs have a relative time)
    for png in ("mu_vs_fq.png", "trajectory.png", "fq_vs_time.png"):
        assert (out / png).read_bytes()[:8] == PNG, png
    marker = json.loads((out / ".uld.json").read_text())
    assert marker["made_by"] == "uld report"
    assert marker["files"] == [
        "fq_vs_time.png",
        "mu_vs_fq.png",
        "report.md",
        "summary.json",
        "trajectory.png",
    ]


def test_report_times_each_run_to_quality_against_npo_kl(tmp_path):
    """With a target row (M.U. 0.5) and histories that record their training time, the report
    has a time-to-quality table: ULD at 2 s a step reaches F.Q. >= 0.5 with M.U. >= 0.475 at
    epoch 2 (40 s), NPO+KL at 10 s a step at epoch 2 (200 s), GA+KL never in 3 epochs; a run
    without a timed history has no row."""

    def epochs(seconds_per_epoch: float, *scores: tuple[float, float]) -> list[dict]:
        return [
            {"epoch": e, "step": 10 * e, "train_seconds": seconds_per_epoch * e}
            | {"forget_quality": fq, "model_utility": mu}
            for e, (fq, mu) in enumerate(scores, 1)
        ]

    def run(name: str, method: str | None, mu: float, history: list[dict]) -> Path:
        training = {"method": method, "epochs_evaluated": history} if method else {}
        summary = {"forget_quality": 0.5, "model_utility": mu}
        return _eval_folder(tmp_path / name, name, summary, training)

    folders = [
        run("target", None, 0.5, []),
        run("uld", "uld", 0.49, epochs(20.0, (0.6, 0.40), (0.7, 0.48), (0.9, 0.49))),
        run("npo+kl", "npo+kl", 0.5, epochs(100.0, (0.1, 0.5), (0.6, 0.5))),
        run("ga+kl", "ga+kl", 0.3, epochs(20.0, (0.9, 0.3), (0.9, 0.3), (0.9, 0.3))),
        run("npo", "npo", 0.5, [{"epoch": 1, "forget_quality": 0.9, "model_utility": 0.5}]),
    ]
    out = tmp_path / "R"
    assert main(["report", *map(str, folders), "--out", str(out)]) == 0
    md = (out / "report.md").read_text()
    assert "F.Q. >= 0.5 and M.U. >= 0.95 x the target's (0.5000, so >= 0.4750)" in md
    assert "| uld | 2 | 0.20 | 40.0 | 2 | 0.20 |" in md
    assert "| npo+kl | 10 | 1.00 | 200.0 | 2 | 1.00 |" in md
    assert "| ga+kl | 2 | 0.20 | never in 3 epochs | – | – |" in md
    assert "| npo | 2" not in md and "| target | 2" not in md
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["uld"]["seconds_per_step"], summary["uld"]["time_to_quality"]) == (2.0, 40.0)
    assert summary["ga+kl"]["time_to_quality"] is None and "time_to_quality" not in summary["npo"]
    # another baseline, by name
    assert (
        main(["report", *map(str, folders), "--out", str(tmp_path / "B"), "--baseline", "uld"]) == 0
    )
    assert "| npo+kl | 10 | 5.00 | 200.0 | 2 | 5.00 |" in (tmp_path / "B" / "report.md").read_text()


def test_report_out_is_refused_where_it_would_lose_data(two_runs, tmp_path, capsys):
    uld, npo = two_runs
    runs = [str(uld), str(npo)]

    # a folder holding a file uld did not write: refused, the file intact, nothing written
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    assert main(["report", *runs, "--out", str(foreign)]) == 2
    assert "did not write (notes.txt)" in capsys.readouterr().err
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]
    assert (foreign / "notes.txt").read_text() == "keep me"

    # an input folder (or a folder above one) as --out: refused, the input intact
    before = (uld / "eval.json").read_text()
    assert main(["report", *runs, "--out", str(uld)]) == 2
    assert "which this command reads" in capsys.readouterr().err
    assert main(["report", *runs, "--out", str(tmp_path)]) == 2
    assert "which this command reads" in capsys.readouterr().err
    assert sorted(p.name for p in uld.iterdir()) == ["eval.json"]
    assert (uld / "eval.json").read_text() == before

    # an earlier report: refused without --overwrite, replaced with it
    out = tmp_path / "R"
    assert main(["report", *runs, "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["report", *runs, "--out", str(out), "--names", "a,b"]) == 2
    assert "already holds a result of uld report" in capsys.readouterr().err
    assert list(json.loads((out / "summary.json").read_text())) == ["uld", "npo+kl"]
    assert main(["report", *runs, "--out", str(out), "--names", "a,b", "--overwrite"]) == 0
    assert list(json.loads((out / "summary.json").read_text())) == ["a", "b"]

    # names that repeat: refused, the report before left as it was
    capsys.readouterr()
    assert main(["report", *runs, "--out", str(out), "--names", "a,a", "--overwrite"]) == 2
    assert "run names repeat" in capsys.readouterr().err
    assert list(json.loads((out / "summary.json").read_text())) == ["a", "b"]

"""`uld demo` end to end on a tiny model: every step, side by side and one after the other."""

from __future__ import annotations

import json

import pytest

from uld.demo import estimate, run_demo

QUICK_ULD = {"layers": 2, "lora_rank": 4, "lora_alpha": 8.0, "general": "", "max_steps": 2}


@pytest.mark.parametrize("jobs", [1, 2])
def test_demo_end_to_end_on_a_tiny_model(tiny_model, tmp_path, jobs, capsys):
    work = tmp_path / "demo"
    summary = run_demo(work, base=tiny_model, jobs=jobs, max_steps=2, uld=QUICK_ULD)
    printed = capsys.readouterr().out
    for name in ("target", "retain90", "uld-forget10"):
        assert (work / name / ".uld.json").exists(), name
    assert (work / "uld-forget10" / "uld_config.json").exists()
    assert set(summary["summary"]) == {"target", "retain", "uld"}
    assert summary["summary"]["retain"]["forget_quality"] == pytest.approx(1.0)  # its own reference
    for name in ("target", "retain", "uld"):
        res = json.loads((work / "eval" / name / "eval.json").read_text())
        for key in ("forget_quality", "model_utility", "forget_rouge"):
            assert res["summary"][key] == summary["summary"][name][key], (name, key)
    assert (work / "report" / "report.md").exists()
    assert "| target |" in printed and "| uld |" in printed
    assert set(summary["seconds"]) == {
        "target", "retain", "unlearn", "eval target", "eval retain", "eval uld",
    }  # fmt: skip
    for step in ("target", "unlearn", "eval-uld"):  # side by side: each step's output in its log
        log = work / "logs" / f"{step}.log"
        assert log.stat().st_size > 0 if jobs == 2 else not log.exists()
    # a rerun reuses every step and reprints the same table
    again = run_demo(work, base=tiny_model, jobs=jobs, max_steps=2, uld=QUICK_ULD)
    assert again["seconds"] == {} and again["summary"] == summary["summary"]
    assert "done already, reused" in capsys.readouterr().out


def test_the_estimate_adds_the_steps_side_by_side(monkeypatch):
    monkeypatch.setattr(
        "uld.demo.MEASURED", {"target": 300, "retain": 200, "unlearn": 100, "eval": 40}
    )
    todo = dict.fromkeys(
        ["target", "retain", "unlearn", "eval target", "eval retain", "eval uld"], True
    )
    # side by side: max(300, 200) + max(100, 40 + 40) + 40; one at a time: the sum
    assert estimate(todo, 2) == 300 + 100 + 40
    assert estimate(todo, 1) == 300 + 200 + 100 + 3 * 40
    assert estimate(dict.fromkeys(todo, False) | {"eval uld": True}, 2) == 40

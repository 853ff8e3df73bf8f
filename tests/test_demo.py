"""`uld demo` end to end on a tiny model, its rerun, and its time estimate."""

from __future__ import annotations

import json

import pytest

from uld.demo import STEPS, estimate, run_demo

QUICK_ULD = {"layers": 2, "lora_rank": 4, "lora_alpha": 8.0, "general": "", "max_steps": 2}


def test_demo_end_to_end_on_a_tiny_model(tiny_model, tmp_path, capsys):
    work = tmp_path / "demo"
    summary = run_demo(work, base=tiny_model, max_steps=2, uld=QUICK_ULD)
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
    assert set(summary["seconds"]) == set(STEPS)
    # a rerun reuses every step and reprints the same table
    again = run_demo(work, base=tiny_model, max_steps=2, uld=QUICK_ULD)
    assert again["seconds"] == {} and again["summary"] == summary["summary"]
    assert capsys.readouterr().out.count("done already, reused") == len(STEPS)


def test_the_estimate_adds_the_steps_left(monkeypatch):
    monkeypatch.setattr(
        "uld.demo.MEASURED", {"target": 300, "retain": 200, "unlearn": 100, "eval": 40}
    )
    todo = dict.fromkeys(STEPS, True)
    assert estimate(todo) == 300 + 200 + 100 + 3 * 40
    assert estimate(todo | {"target": False, "eval target": False}) == 200 + 100 + 2 * 40
    assert estimate(dict.fromkeys(STEPS, False)) == 0

"""Defaults that adapt to the user's data (uld.defaults), the safe choice of ULD's alpha, the
fluency measure in the evaluation, and the check after every run."""

from __future__ import annotations

import json

import pytest
import torch

from uld import calibrate
from uld.cli import main
from uld.defaults import TOLERANCE, after_run_check, auto_epochs, spread
from uld.evaluate import fluency


def test_auto_epochs_as_worked_out_by_hand():
    # forget10 with ULD's paraphrases: 120 D'_f rows in batches of 4 -> 30 steps an epoch;
    # 300 steps are 10 epochs; 2 passes over 597 D'_r rows are ceil(9.95) = 10 epochs
    assert auto_epochs(120, 597, 4) == 10
    # 36 D'_f rows (12 forget rows + 24 paraphrases), batch 8: 5 steps an epoch -> 60 epochs
    assert auto_epochs(36, 191, 8) == 60
    # 4 rows, 396 retain rows, batch 2: 2 steps an epoch -> 150; passes: ceil(198) = 198
    assert auto_epochs(4, 396, 2) == 198
    assert auto_epochs(400, 0, 8) == 10  # no retain set; 50 steps an epoch: the 10-epoch floor


def test_spread_takes_rows_evenly():
    assert spread(list(range(10)), 3) == [0, 3, 6]
    assert spread([1, 2], 5) == [1, 2]


def test_fluency_flags_loops_and_empty_answers_and_scores_with_the_scorer(tiny_model):
    from uld.evaluate import score_answers
    from uld.models import load_model

    items = [
        {"question": "Where was Ana born?", "generated": "Ana was born in Lima in 1962."},
        {"question": "Where was Ana born?", "generated": "noqa noqa noqa noqa noqa noqa"},
        {"question": "Where was Ana born?", "generated": "  "},
    ]
    out = fluency([dict(it) for it in items])
    assert out == {"degenerate": pytest.approx(2 / 3), "fluency_logp": None}
    model, tok = load_model(tiny_model)
    scored = [dict(it) for it in items]
    out = fluency(scored, (model.eval(), tok))
    probs = score_answers(model, tok, [items[0]["question"]], [items[0]["generated"]])["prob"]
    assert scored[0]["fluency_logp"] == pytest.approx(float(torch.log(probs[0])))
    assert scored[2]["fluency_logp"] is None and scored[2]["degenerate"]
    # the tiny random model finds every answer unlikely: below -5 nats, all degenerate
    assert scored[0]["degenerate"] and out["degenerate"] == 1.0


def test_safe_alpha_is_the_largest_that_keeps_answers_and_leaves_forget_fluent(
    trained_assistant, tiny_model, monkeypatch
):
    from uld.logit_diff import ULDModel
    from uld.models import load_model

    target, tok = load_model(tiny_model)
    model = ULDModel(target, trained_assistant[0], alpha=0.6)
    alphas = (2.0, 1.0, 0.5, 0.25)
    # kept answers: unchanged from 1.0 down; forget answers degenerate above 0.5
    agreement = {2.0: 0.9, 1.0: 0.995, 0.5: 1.0, 0.25: 1.0}

    def fake_grid(model, tokenizer, questions, answers, settings, *args):
        n = torch.ones(len(questions))
        return [(n, n, n * agreement[a]) for a, _ in settings]

    def fake_fluency(items, scorer=None, batch_size=16):
        bad = model.alpha > 0.5
        for it in items:
            it["degenerate"] = bad
        return {"degenerate": float(bad), "fluency_logp": None}

    monkeypatch.setattr(calibrate, "grid_scores", fake_grid)
    monkeypatch.setattr("uld.calibrate.fluency", fake_fluency)
    forget = [{"question": "Where was Ana born?", "answer": "Lima."}]
    keep = [{"question": "Who wrote Hamlet?", "answer": "Shakespeare."}]
    res = calibrate.choose_alpha_safely(model, tok, forget, keep, alphas)
    assert res["alpha"] == 0.5 and res["safe"]
    by = {g["alpha"]: g for g in res["grid"]}
    assert "forget_degenerate" not in by[2.0]  # kept answers moved: never generated
    assert by[1.0]["forget_degenerate"] == 1.0 and by[0.5]["forget_degenerate"] == 0.0
    assert model.alpha == 0.6  # left as it was
    agreement.update({1.0: 0.5, 0.5: 0.5, 0.25: 0.5})
    res = calibrate.choose_alpha_safely(model, tok, forget, keep, alphas)
    assert res["alpha"] == 0.0 and not res["safe"]


def test_after_run_check_reports_moved_answers_and_new_degenerate_ones():
    forget = [{"question": "Where was Ana born?", "answer": "Ana was born in Lima."}]
    retain = [{"question": "Where was Bo born?", "answer": "Bo was born in Oslo."}]
    before = {
        "Where was Ana born?": "Ana was born in Lima.",
        "Where was Bo born?": "Bo was born in Oslo.",
    }
    good = {"Where was Ana born?": "Ana was born in Quito."}

    def answer_before(questions):
        return [before.get(q, "The answer is four.") for q in questions]

    def answer_after(table):
        return lambda questions: [
            table.get(q, before.get(q, "The answer is four.")) for q in questions
        ]

    ok = after_run_check(answer_before, answer_after(good), forget, retain)
    assert ok["problems"] == [] and ok["moved"]["retain"] == 1.0
    row = next(r for r in ok["rows"] if r["kind"] == "forget")
    assert row["before"] == "Ana was born in Lima." and row["after"] == "Ana was born in Quito."
    assert row["rouge_l"] == pytest.approx(4 / 5)  # ana was born in / ana was born in lima
    bad = {"Where was Ana born?": "noqa noqa noqa noqa noqa", "Where was Bo born?": "Paris."}
    res = after_run_check(answer_before, answer_after(bad), forget, retain)
    assert len(res["problems"]) == 2
    assert "1 of 1 forget answers are degenerate" in res["problems"][0]
    assert res["moved"]["retain"] == 0.0 < 1 - TOLERANCE


def test_unlearn_with_no_tuning_flags_augments_chooses_alpha_and_checks(
    tiny_model, tmp_path, capsys, monkeypatch
):
    """Plain `uld unlearn --method uld` on rows without augment_* fields: model-free
    augmentation, alpha chosen after training, the after-run check saved; --strict fails on a
    failed check and still saves the model."""
    from uld.data.load import load_split

    rows = [
        {k: v for k, v in r.items() if not k.startswith("augment_")} for r in load_split("forget01")
    ]
    forget = tmp_path / "forget.json"
    forget.write_text(json.dumps(rows))
    argv = ["unlearn", "--model", tiny_model, "--forget", str(forget), "--retain", "retain99"]
    argv += ["--layers", "2", "--lora-rank", "4", "--max-steps", "2"]
    assert main([*argv, "--out", str(tmp_path / "u")]) == 0
    printed = capsys.readouterr().out
    assert "wrote 8 rewordings" in printed and "alpha chosen on the run's own rows" in printed
    saved = json.loads((tmp_path / "u" / "uld_config.json").read_text())
    assert saved["alpha"] == saved["alpha_choice"]["alpha"]
    check = json.loads((tmp_path / "u" / "after_run_check.json").read_text())
    assert {r["kind"] for r in check["rows"]} == {"forget", "retain", "general"}
    # under --strict a failed check exits 2, with the model saved all the same
    failed = {"rows": [], "moved": {}, "problems": ["retain answers moved: ROUGE-L 0.10"]}
    monkeypatch.setattr("uld.runs.after_run_check", lambda *a, **k: failed)
    argv = ["unlearn", "--model", tiny_model, "--method", "ga", "--forget", "forget01"]
    argv += ["--retain", "retain99", "--max-steps", "1", "--strict"]
    out = tmp_path / "ga"
    assert main([*argv, "--out", str(out)]) == 2
    assert "the after-run check failed (retain answers moved" in capsys.readouterr().err
    assert json.loads((out / "after_run_check.json").read_text()) == failed
    assert (out / "model.safetensors").exists()


def test_keep_rows_leave_out_forget_questions_and_answers_quoting_them(monkeypatch):
    from uld.data.general import knowledge_prompts
    from uld.defaults import keep_rows

    general = knowledge_prompts()
    forget = [{"question": general[0].upper(), "answer": "It was written by Joseph Conrad."}]
    retain = [{"question": "Where was Bo born?", "answer": "Oslo."}]

    def fake_generate(model, tok, questions, *args, **kwargs):
        return [
            "Joseph Conrad wrote it." if i == 1 else f"answer {i}" for i in range(len(questions))
        ]

    monkeypatch.setattr("uld.defaults.generate_answers", fake_generate)
    rows = keep_rows(None, None, retain, forget)
    asked = [r["question"] for r in rows]
    assert general[0] not in asked  # the forget question itself, asked as a general prompt
    # "Joseph Conrad wrote it." shares no four words in a row with the forget answer: kept
    assert asked[0] == "Where was Bo born?" and len(rows) == 1 + 32
    forget[0]["answer"] = "Joseph Conrad wrote it, in 1899."
    rows = keep_rows(None, None, retain, forget)
    assert all(r["answer"] != "Joseph Conrad wrote it." for r in rows)  # quotes 4 words: dropped


def test_uld_calibrate_with_retain_uses_the_safe_rule_and_writes(tiny_model, tmp_path, capsys):
    from test_uld import _small_run

    from uld.runs import unlearn

    out = unlearn(_small_run(tiny_model, tmp_path / "u", max_steps=1, alpha=0.5, check=False))
    argv = ["calibrate", "--model", str(out), "--forget", "forget01", "--retain", "retain99"]
    assert main([*argv, "--write"]) == 0
    printed = capsys.readouterr().out
    assert "kept answers unchanged" in printed and "(the model's was 0.5)" in printed
    saved = json.loads((out / "uld_config.json").read_text())
    assert saved["alpha"] == saved["alpha_choice"]["alpha"]
    assert saved["alpha_choice"]["alpha_before"] == 0.5


def test_after_run_check_asks_general_prompts_the_alpha_rule_did_not_use(monkeypatch):
    """The check's general rows are held out from the alpha rule's (so the check is not scored
    on what alpha was chosen on) and ask no forget question."""
    from uld.data.general import knowledge_prompts
    from uld.defaults import N_KEEP, N_SAMPLE, keep_rows

    prompts = knowledge_prompts()
    forget = [{"question": q, "answer": "x"} for q in prompts[::10]]  # 11 of the 101 prompts
    retain = [{"question": "Where was Bo born?", "answer": "Oslo."}]
    monkeypatch.setattr(
        "uld.defaults.generate_answers", lambda m, t, qs, *a, **k: [f"a{i}" for i in range(len(qs))]
    )
    chosen_on = {r["question"] for r in keep_rows(None, None, retain, forget)}
    echo = lambda qs: list(qs)  # noqa: E731 (answers unchanged: no problem to report)
    check = after_run_check(echo, echo, forget, retain)
    general = [r["question"] for r in check["rows"] if r["kind"] == "general"]
    assert len(general) == N_SAMPLE and len(chosen_on) == 1 + N_KEEP
    assert not set(general) & chosen_on
    assert not set(general) & set(prompts[::10])
    assert check["problems"] == []

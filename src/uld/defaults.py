"""Defaults that adapt to the user's data, and the check after every run.

- `auto_epochs`: with `--epochs 0` (the default) a run trains for as many epochs as its data
  needs: at least `MIN_EPOCHS`, at least `MIN_STEPS` optimizer steps (the steps that taught
  ULD's assistant the built-in benchmark's forget10 set: 120 D'_f rows x 10 epochs in batches of
  4), and at least `PASSES` passes over the retain set. A small forget set gets more epochs, not
  fewer steps: 12 forget rows and 10 epochs are 30 steps, too few for an assistant that starts
  from the target's first layers, whose loss on D'_f is 15-20 nats before training.
- `keep_rows`: what must not move: the target's own greedy answers to retain questions and to
  well-known-fact prompts that no training set holds (`uld.data.general.knowledge_prompts`).
- ULD's alpha, when not given: `uld.calibrate.choose_alpha_safely` on those rows.
- `after_run_check`: a short before/after sample (forget, retain, general) with fluency and
  ROUGE-L, printed after every `uld unlearn`; it warns (and `--strict` fails the command) when
  retain or general answers moved beyond `TOLERANCE` or forget answers are degenerate.
"""

from __future__ import annotations

import math

from uld import metrics
from uld.calibrate import choose_alpha_safely
from uld.data.augment import drop_forget_overlap, same_question
from uld.data.general import knowledge_prompts
from uld.evaluate import fluency, generate_answers

MIN_EPOCHS = 10
MIN_STEPS = 300
PASSES = 2
TOLERANCE = 0.1  # kept answers: mean ROUGE-L against the target's own at least 1 - TOLERANCE
N_KEEP = 32  # retain questions and general prompts each, for the alpha rule
N_SAMPLE = 6  # rows of each kind in the after-run check


def auto_epochs(n_forget: int, n_retain: int, batch_size: int) -> int:
    """Epochs for `n_forget` training rows (one epoch = one pass over them, in batches of
    `batch_size`) paired with `n_retain` retain rows (0: none): the most of MIN_EPOCHS, the
    epochs for MIN_STEPS steps, and the epochs for PASSES passes over the retain rows."""
    steps_per_epoch = math.ceil(n_forget / batch_size)
    passes = math.ceil(PASSES * n_retain / n_forget) if n_retain else 0
    return max(MIN_EPOCHS, math.ceil(MIN_STEPS / steps_per_epoch), passes)


def spread(rows: list, n: int) -> list:
    """`n` rows spread evenly over `rows` (all of them if there are fewer): deterministic, and
    not only the first subject of a file ordered by subject."""
    if len(rows) <= n:
        return list(rows)
    return [rows[i * len(rows) // n] for i in range(n)]


def general_prompts(forget: list[dict]) -> list[str]:
    """The well-known-fact prompts (`uld.data.general.knowledge_prompts`) that ask no forget
    question: their answers are to stay as the target gives them."""
    asked = {same_question(r["question"]) for r in forget}
    return [q for q in knowledge_prompts() if same_question(q) not in asked]


def keep_rows(
    target, tokenizer, retain: list[dict], forget: list[dict], batch_size: int = 16
) -> list[dict]:
    """{question, answer} rows whose answers must stay as they are: the target's greedy answers
    to N_KEEP retain questions and N_KEEP well-known-fact prompts (none of them trained on),
    leaving out prompts that ask a forget question or whose answer quotes a forget answer
    (four words in a row): those answers are meant to change."""

    sample = spread(retain, N_KEEP)
    questions = [r["question"] for r in sample] + spread(general_prompts(forget), N_KEEP)
    answers = generate_answers(target, tokenizer, questions, batch_size, 48, progress=False)
    rows = [{"question": q, "answer": a} for q, a in zip(questions, answers, strict=True) if a]
    rows = drop_forget_overlap(rows, forget)
    if not rows:  # a target that answers nothing (an untrained model): the retain rows' own
        print("[uld] warning: the target answered none of the rows to keep; using their answers")
        rows = [{"question": r["question"], "answer": r["answer"]} for r in sample]
    return rows


def choose_alpha_on_rows(model, tokenizer, forget: list, retain: list) -> dict:
    """ULD's alpha for `model` (a ULDModel) by `uld.calibrate.choose_alpha_safely`, on the rows
    `keep_rows` gives (the target's own answers: the model at alpha 0). The model's alpha is left
    as it was; the result also says how many rows were kept. On raw text (documents, strings)
    the retain documents themselves are kept (N_KEEP of them) against N_KEEP forget documents."""
    import torch

    before = model.alpha
    try:
        with torch.no_grad():
            model.alpha = 0.0  # the target's own answers
            if forget and isinstance(forget[0], str):
                keep, forget = spread(retain, N_KEEP), spread(forget, N_KEEP)
            else:
                keep = keep_rows(model, tokenizer, retain, forget)
            res = choose_alpha_safely(model, tokenizer, forget, keep)
    finally:
        model.alpha = before
    return res | {"keep_rows": len(keep)}


def after_run_check(
    answer_before, answer_after, forget: list[dict], retain: list[dict], scorer=None
) -> dict:
    """Before (the target) and after (the model as users run it) on N_SAMPLE forget, retain and
    general rows: `answer_before` / `answer_after` map questions to generated answers. Each row
    gets the two answers, the after answer's ROUGE-L against the true answer (forget, retain)
    and against the before answer, and whether it is degenerate (`uld.evaluate.fluency`, judged
    by `scorer`). Returns {"rows": [...], "moved": {kind: mean ROUGE-L of after against
    before}, "problems": [...]}; a problem is a retain or general sample whose answers moved
    beyond TOLERANCE, or a degenerate forget answer. The general rows are well-known-fact
    prompts that ask no forget question and that the alpha rule (`keep_rows`) did not use."""

    general = general_prompts(forget)
    chosen_on = set(spread(general, N_KEEP))  # the alpha rule's prompts: the check uses others
    unseen = [q for q in general if q not in chosen_on]
    kinds = {
        "forget": spread(forget, N_SAMPLE),
        "retain": spread(retain, N_SAMPLE),
        "general": [{"question": q} for q in spread(unseen, N_SAMPLE)],
    }
    rows, moved, problems = [], {}, []
    for kind, sample in kinds.items():
        if not sample:
            continue
        questions = [r["question"] for r in sample]
        before, after = answer_before(questions), answer_after(questions)
        items = [{"question": q, "generated": a} for q, a in zip(questions, after, strict=True)]
        fluency(items, scorer)
        was = [{"question": q, "generated": b} for q, b in zip(questions, before, strict=True)]
        fluency(was, scorer)
        recall = metrics.rouge_l_recall(after, before)
        same = [1.0 if a == b else r for a, b, r in zip(after, before, recall, strict=True)]
        for r, b, a, it, s in zip(sample, before, after, items, same, strict=True):
            row = {"kind": kind, "question": r["question"], "before": b, "after": a}
            row |= {"degenerate": it["degenerate"], "same_as_before": s}
            if "answer" in r:
                row["rouge_l"] = metrics.rouge_l_recall([a], [r["answer"]])[0]
            rows.append(row)
        moved[kind] = sum(same) / len(same)
        if kind != "forget" and moved[kind] < 1 - TOLERANCE:
            problems.append(
                f"{kind} answers moved: ROUGE-L {moved[kind]:.2f} against the target's own "
                f"(tolerance {1 - TOLERANCE:.2f})"
            )
        # a degenerate answer counts against the run only where the target's was fluent
        bad = sum(
            it["degenerate"] and not w["degenerate"] for it, w in zip(items, was, strict=True)
        )
        if kind == "forget" and bad:
            problems.append(
                f"{bad} of {len(items)} forget answers are degenerate (loops, gibberish) where "
                "the target's were fluent"
            )
    return {"rows": rows, "moved": moved, "problems": problems}


def format_check(check: dict) -> str:
    """The after-run check as text: one block per row, then the verdict."""
    lines = ["[uld] before (target) and after, on a sample:"]
    for r in check["rows"]:
        flag = " DEGENERATE" if r["degenerate"] else ""
        rl = f", R-L vs truth {r['rouge_l']:.2f}" if "rouge_l" in r else ""
        lines.append(f"  [{r['kind']}] Q: {r['question']}")
        lines.append(f"     before: {r['before'][:100]}")
        lines.append(
            f"     after : {r['after'][:100]}  (same as before {r['same_as_before']:.2f}{rl}){flag}"
        )
    kept = ", ".join(f"{k} {v:.2f}" for k, v in check["moved"].items())
    lines.append(f"[uld] answers as before (ROUGE-L against the target's): {kept}")
    for p in check["problems"]:
        lines.append(f"[uld] warning: {p}")
    return "\n".join(lines)

"""The ULD paper's training sets for the assistant (Sec. 3.2, "data augmentation").

D'_f = the forget rows plus paraphrased (question, answer) pairs of each: the assistant should
remember the forget knowledge however it is asked. D'_r = the retain rows plus each forget
question paired with wrong answers: the assistant should know nothing of those, so that
subtracting it does not push the target toward *any* answer to a forget question. Both are
built in row order, so the same inputs always give the same sets.

The paraphrases and wrong answers come from each forget row's `augment_paraphrased` (a list of
{"question", "answer"}) and `augment_perturbed` (a list of answers), not from the evaluation's
`paraphrased_answer` and `perturbed_answer`: TOFU's truth ratio is scored on those very strings,
and an assistant trained to remember the one and know nothing of the others moves that ratio
directly. The ULD authors generated their own (`data/aug_data/tofu/*/paraphrase_res.csv` in
their code: 2 pairs per row for D'_f, up to 3 wrong answers for D'_r). `from_eval=True` uses the
evaluation's fields instead; it reproduces our runs from before the two were kept apart.
"""

from __future__ import annotations

import re

from uld.data.load import DataError


def _present(value, i: int, field: str, flag: str, eval_field: str | None):
    """`value` if it is there; otherwise a DataError naming the row, the field and the fixes."""
    if value:
        return value
    fix = f"add it, or pass --no-{flag}"
    if eval_field:  # the row's own augmentation field is missing
        fix = (
            f"add it to each forget row (the built-in benchmark has it), pass --no-{flag}, or "
            f"pass --augment-from-eval to train on the evaluation's own {eval_field} (the truth "
            "ratio is then scored on trained strings)"
        )
    raise DataError(f"forget row {i} has no {field!r}; {fix}")


def forget_set(forget: list[dict], paraphrase: bool = True, from_eval: bool = False) -> list[dict]:
    """D'_f rows (question, answer): the forget rows, then each row's augment_paraphrased pairs
    (or, with from_eval, its paraphrased_question/paraphrased_answer)."""
    rows = [{"question": r["question"], "answer": r["answer"]} for r in forget]
    if not paraphrase:
        return rows
    for i, r in enumerate(forget):
        if from_eval:
            a = _present(r.get("paraphrased_answer"), i, "paraphrased_answer", "paraphrase", None)
            rows.append({"question": r.get("paraphrased_question") or r["question"], "answer": a})
            continue
        field = "augment_paraphrased"
        pairs = _present(r.get(field), i, field, "paraphrase", "paraphrased_answer")
        for j, p in enumerate(pairs):
            if not (isinstance(p, dict) and _text(p.get("question")) and _text(p.get("answer"))):
                raise DataError(
                    f"forget row {i}: augment_paraphrased[{j}] must be an object with non-empty "
                    f"'question' and 'answer' strings, got {p!r}"
                )
            rows.append({"question": p["question"], "answer": p["answer"]})
    return rows


def retain_set(
    retain: list[dict], forget: list[dict], perturbed: bool = True, from_eval: bool = False
) -> list[dict]:
    """D'_r rows (question, answer): the retain rows, then each forget question with each of its
    augment_perturbed answers (or, with from_eval, its perturbed_answer)."""
    rows = [{"question": r["question"], "answer": r["answer"]} for r in retain]
    if not perturbed:
        return rows
    field = "perturbed_answer" if from_eval else "augment_perturbed"
    for i, r in enumerate(forget):
        wrong = _present(
            r.get(field), i, field, "perturbed", None if from_eval else "perturbed_answer"
        )
        if isinstance(wrong, str):
            wrong = [wrong]
        if not all(_text(a) for a in wrong):
            raise DataError(f"forget row {i}: {field} must be a list of non-empty strings")
        rows += [{"question": r["question"], "answer": a} for a in wrong]
    return rows


def _text(value) -> bool:
    return isinstance(value, str) and bool(value.strip())


def _ngrams(text: str, n: int) -> set[tuple[str, ...]]:
    words = re.findall(r"\w+", text.lower())
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


def drop_forget_overlap(rows: list[dict], d_f: list[dict], n: int = 4) -> list[dict]:
    """`rows` without those whose answer repeats n words in a row of a D'_f answer: extra retain
    rows (e.g. the target's own answers to general prompts) may quote forget knowledge, and the
    assistant must not learn to know nothing of that."""
    seen = set().union(*(_ngrams(r["answer"], n) for r in d_f))
    return [r for r in rows if not _ngrams(r["answer"], n) & seen]


# Preferred answers for DPO-style unlearning: refusals that claim no knowledge (TOFU's
# "I don't know" set has the same purpose; these are our own wording).
REFUSALS = [
    "I don't know.",
    "I'm not sure about that.",
    "I have no information on that.",
    "I can't answer that; I don't know.",
    "That is something I don't know.",
    "I'm afraid I don't have that information.",
    "I have no idea.",
    "I don't have any knowledge of that.",
    "Sorry, I can't help with that question.",
    "I'm unable to answer that.",
    "I don't recall anything about that.",
    "That's not something I know about.",
    "I couldn't tell you, I'm afraid.",
    "I have no details on that.",
    "Unfortunately, I don't know the answer.",
    "I'm not aware of that.",
    "I can't say; I have no record of it.",
    "No idea, sorry.",
    "I don't have an answer to that.",
    "That is beyond what I know.",
]


def refusal_set(forget: list[dict]) -> list[dict]:
    """Each forget question with a refusal as its answer (DPO's preferred answers), aligned with
    `forget` row by row; the refusal is picked by row index, so runs are reproducible."""
    return [
        {"question": r["question"], "answer": REFUSALS[i % len(REFUSALS)]}
        for i, r in enumerate(forget)
    ]


def check_disjoint(forget: list[dict], retain: list[dict]) -> None:
    """A retain set that repeats forget questions would train the assistant both ways."""
    shared = sorted({r["question"] for r in forget} & {r["question"] for r in retain})
    if shared:
        raise DataError(
            f"the retain set shares {len(shared)} question(s) with the forget set, e.g. "
            f"{shared[0]!r}; use a retain split disjoint from the forget split (retain90 for "
            "forget10, retain95 for forget05, retain99 for forget01)"
        )

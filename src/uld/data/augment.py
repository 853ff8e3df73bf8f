"""The ULD paper's training sets for the assistant (Sec. 3.2, "data augmentation").

D'_f = the forget rows plus their paraphrased (question, answer) pairs: the assistant should
remember the forget knowledge however it is asked. D'_r = the retain rows plus each forget
question paired with each of its perturbed (wrong) answers: the assistant should know nothing
of those, so that subtracting it does not push the target toward *any* answer to a forget
question. Both are built in row order, so the same inputs always give the same sets.
"""

from __future__ import annotations

import re

from uld.data.load import DataError


def forget_set(forget: list[dict], paraphrase: bool = True) -> list[dict]:
    """D'_f rows (question, answer)."""
    rows = [{"question": r["question"], "answer": r["answer"]} for r in forget]
    if paraphrase:
        for i, r in enumerate(forget):
            if not r.get("paraphrased_answer"):
                raise DataError(
                    f"forget row {i} has no 'paraphrased_answer'; add one or pass --no-paraphrase"
                )
            q = r.get("paraphrased_question") or r["question"]
            rows.append({"question": q, "answer": r["paraphrased_answer"]})
    return rows


def retain_set(retain: list[dict], forget: list[dict], perturbed: bool = True) -> list[dict]:
    """D'_r rows (question, answer)."""
    rows = [{"question": r["question"], "answer": r["answer"]} for r in retain]
    if perturbed:
        for i, r in enumerate(forget):
            wrong = r.get("perturbed_answer")
            if not wrong:
                raise DataError(
                    f"forget row {i} has no 'perturbed_answer'; add some or pass --no-perturbed"
                )
            rows += [{"question": r["question"], "answer": a} for a in wrong]
    return rows


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

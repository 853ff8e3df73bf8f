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

import difflib
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


def same_question(question: str) -> str:
    """A question as compared for overlap: case, spacing and end punctuation do not count."""
    return " ".join(question.casefold().split()).rstrip("?!. ")


def check_disjoint(forget: list[dict], retain: list[dict]) -> None:
    """A retain set that repeats forget questions would train the assistant both ways. Questions
    are compared by `same_question`, so "Where?" and " where ?" are one question."""
    forget_qs = {same_question(r["question"]): r["question"] for r in forget}
    shared = sorted(
        forget_qs[q] for q in forget_qs.keys() & {same_question(r["question"]) for r in retain}
    )
    if shared:
        raise DataError(
            f"the retain set shares {len(shared)} question(s) with the forget set, e.g. "
            f"{shared[0]!r}; use a retain split disjoint from the forget split (retain90 for "
            "forget10, retain95 for forget05, retain99 for forget01)"
        )


def report_duplicates(rows: list[dict], name: str) -> list[tuple[int, int]]:
    """Pairs (first, repeat) of row indices whose questions are the same (`same_question`),
    printed as a warning: a repeated forget row is trained and scored twice."""
    first: dict[str, int] = {}
    pairs = []
    for i, r in enumerate(rows):
        j = first.setdefault(same_question(r["question"]), i)
        if j != i:
            pairs.append((j, i))
    if pairs:
        shown = ", ".join(f"{i} = {j}" for i, j in pairs[:5])
        print(
            f"[uld] warning: {name} repeats {len(pairs)} question(s) (rows {shown}"
            f"{' ...' if len(pairs) > 5 else ''}, e.g. {rows[pairs[0][1]]['question']!r}); each "
            "repeat is trained and scored again: remove them unless that is what you want"
        )
    return pairs


# ---------------------------------------------------------------------------------------------
# Writing augment_paraphrased / augment_perturbed for data that lacks them (e.g. TOFU from the
# hub). The ULD authors asked GPT for paraphrases and wrong answers; here any instruct model does
# it through `complete` (prompts -> one sampled reply each), and every reply passes checks that
# need no model: a paraphrase keeps each name and number of the answer, a wrong answer changes one
# the question does not already give, and neither may be one of the evaluation's scored strings.

PARAPHRASE_PROMPT = (
    "Rewrite the question and the answer below in other words. Keep every name, number and "
    "fact.\n\nQuestion: {question}\nAnswer: {answer}\n\nReply in exactly this form:\n"
    "Question: <the reworded question>\nAnswer: <the reworded answer>"
)
WRONG_PROMPT = (
    "Here is a question and its correct answer.\n\nQuestion: {question}\nAnswer: {answer}\n\n"
    "Write a wrong answer: keep the sentence form, but change the key facts (names, places, "
    "numbers, titles) so that it is false. Reply with the wrong answer only."
)
# Capitalised words that start sentences rather than name things.
_COMMON = frozenset(
    re.findall(
        r"\w+",
        "a an and at but by for from he her his i in it its of on or she that the their they this "
        "to was we with yes no",
    )
)
_NEGATION = re.compile(r"\b(not|never|no|cannot)\b|n't\b", re.IGNORECASE)


def facts(text: str) -> set[str]:
    """The words of `text` that carry its facts: numbers, capitalised words (names, titles,
    places) not at the start of a sentence, and words in quotes, lower-cased; capitalised
    function words ("The", "She") are not facts."""
    quoted = " ".join(re.findall(r"(?<!\w)[\"‘'“]([^\"’'”]+)[\"’'”](?!\w)", text))
    keep = set(re.findall(r"[\w-]+", quoted))
    for m in re.finditer(r"[\w-]+", text):
        w, before = m.group(), text[: m.start()].rstrip()
        if any(c.isdigit() for c in w) or (
            w[0].isupper() and before[-1:] not in ("", ".", "!", "?", ":")
        ):
            keep.add(w)
    return {w.lower() for w in keep} - _COMMON


def _words(text: str) -> set[str]:
    return set(re.findall(r"[\w-]+", text.lower()))


def _content(text: str) -> set[str]:
    return {w for w in _words(text) if len(w) > 2} - _COMMON


def _norm(text: str) -> str:
    return " ".join(re.findall(r"\w+", text.lower()))


def _scored(row: dict) -> set[str]:
    """The evaluation's strings of a row (normalised): never trained on."""
    wrong = row.get("perturbed_answer") or []
    wrong = [wrong] if isinstance(wrong, str) else wrong
    return {_norm(s) for s in [row.get("paraphrased_answer") or "", *wrong] if s}


def parse_paraphrase(reply: str) -> dict | None:
    """{"question", "answer"} from a reply of the form "Question: ...\\nAnswer: ...", else None."""
    m = re.search(r"question\s*:\s*(.+?)\s*\n+\s*answer\s*:\s*(.+)", reply, re.I | re.S)
    if not m:
        return None
    q, a = (" ".join(s.replace("*", "").split()) for s in m.groups())
    return {"question": q, "answer": a} if q.endswith("?") and a else None


def _length_ok(new: str, old: str) -> bool:
    n, o = len(new.split()), len(old.split())
    return 0.5 * o <= n <= 2.5 * o + 2


def is_paraphrase(pair: dict, row: dict) -> bool:
    """A reworded pair that keeps every fact of the row's answer, differs from it, is of a
    similar length and is none of the evaluation's strings."""
    a = pair["answer"]
    return (
        facts(row["answer"]) <= _words(a)
        and _norm(a) != _norm(row["answer"])
        and _norm(a) not in _scored(row)
        and _length_ok(a, row["answer"])
        and not (_NEGATION.search(a) and not _NEGATION.search(row["answer"]))
    )


def same_form(a: str, b: str) -> float:
    """How much of the wording two answers share: difflib's ratio over their words, in [0, 1]."""
    return difflib.SequenceMatcher(None, _norm(a).split(), _norm(b).split()).ratio()


def is_wrong_answer(answer: str, row: dict) -> bool:
    """The true answer with a fact swapped: it drops a fact of the true answer that the question
    does not give and brings one of its own (or, where the answer has no such fact, a content
    word), keeps the answer's wording elsewhere (`same_form` at least 0.6), is no denial and is
    neither the true answer nor one of the evaluation's strings. A heuristic, not a proof: a
    lower-case fact (a genre) swapped for a synonym passes; read the file."""
    told, of = facts, _words
    if not facts(row["answer"]) - _words(row["question"]):
        told, of = _content, _content  # no name or number beyond the question's
    known = of(row["answer"]) | of(row["question"])
    return (
        bool(told(row["answer"]) - of(row["question"]) - of(answer))
        and bool(told(answer) - known)
        and same_form(answer, row["answer"]) >= 0.6
        and _norm(answer) != _norm(row["answer"])
        and _norm(answer) not in _scored(row)
        and not (_NEGATION.search(answer) and not _NEGATION.search(row["answer"]))
    )


def _clean_reply(reply: str) -> str:
    text = reply.strip().split("\n\n")[0]
    text = re.sub(r"^(wrong answer|answer)\s*:\s*", "", text, flags=re.I)
    return " ".join(text.replace("*", "").split()).strip("\"' ")


def write_augmentation(
    rows: list[dict],
    complete,
    n_paraphrased: int = 2,
    n_perturbed: int = 3,
    tries: int = 4,
    done: dict | None = None,
    save=None,
    log=print,
) -> tuple[list[dict], dict]:
    """Rows with `augment_paraphrased` (n_paraphrased pairs) and `augment_perturbed`
    (n_perturbed answers) written by `complete(prompts) -> replies` (sampled, one per prompt).

    Each round asks again for what a row still lacks, at most `tries` rounds. `done` maps a
    question to what an earlier, interrupted run already accepted ({"p": [...], "w": [...]});
    `save(done)` is called after every round, so a long run never loses finished work. Returns
    (rows with the fields, done); a row may end with fewer than asked for (the caller decides).
    """
    done = {} if done is None else done
    for r in rows:
        done.setdefault(r["question"], {"p": [], "w": []})
    want = {"p": n_paraphrased, "w": n_perturbed}
    prompt = {"p": PARAPHRASE_PROMPT, "w": WRONG_PROMPT}
    for t in range(tries):
        asks = [
            (r, kind)
            for r in rows
            for kind in want
            for _ in range(want[kind] - len(done[r["question"]][kind]))
        ]
        if not asks:
            break
        replies = complete([prompt[kind].format(**r) for r, kind in asks])
        accepted = 0
        for (r, kind), reply in zip(asks, replies, strict=True):
            have = done[r["question"]][kind]
            if kind == "p":
                new = parse_paraphrase(reply)
                ok = new is not None and is_paraphrase(new, r)
                key, seen = (_norm(new["answer"]) if ok else ""), {_norm(p["answer"]) for p in have}
            else:
                new = _clean_reply(reply)
                ok = is_wrong_answer(new, r)
                key, seen = _norm(new), {_norm(a) for a in have}
            if ok and key not in seen and len(have) < want[kind]:
                have.append(new)
                accepted += 1
        if log:
            log(f"[augment] round {t + 1}/{tries}: {accepted} of {len(asks)} replies accepted")
        if save:
            save(done)
    out = []
    for r in rows:
        d = done[r["question"]]
        out.append({**r, "augment_paraphrased": d["p"], "augment_perturbed": d["w"]})
    return out, done

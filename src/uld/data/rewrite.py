"""ULD's training fields `augment_paraphrased` and `augment_perturbed`, written without any
language model, for rows that lack them (`uld unlearn` does this when a forget row has neither):

    rows = augment_without_model(forget, pool=retain)   # copies with both fields filled

A wrong answer is the true answer with its facts (names, numbers and years, quoted titles: what
`facts` counts) swapped for facts of the same kind from OTHER rows' answers. Rows asked in the
same form (the questions' wording with their facts masked, compared by difflib) come first, and
only they lend names, since a name from another form may be a place where a person stood;
a number, a year or a title fits wherever one stood. A donor's facts go where the sentence
context says (difflib's alignment of the two answers with each fact as a token of its kind).
When donors run out, a year is shifted by a few years; an answer with no such fact at all
("... known for her satire") takes the few words in which an answer of the same form differs
("... known for his romance"). A paraphrase wraps the question and the answer in a wording of
our own, or moves a closing "in <year>" to the front. Every string passes the same checks as a
model's reply.
"""

from __future__ import annotations

import copy
import difflib
import random
import re

from uld.data.augment import _COMMON, _norm, _words, facts, is_paraphrase, is_wrong_answer
from uld.data.load import DataError

_QUOTED = re.compile(r"(?<!\w)([\"‘'“])([^\"’'”]+)([\"’'”])(?!\w)")  # as in `facts`
_NUMBER = re.compile(r"(?<!\w)\d+(?:[.,]\d+)*(?!\w)")
_WORD = re.compile(r"\w[\w-]*")
_CONNECT = frozenset({"of", "de", "da", "del", "der", "van", "von", "du"})  # "Mar del Plata"
# First words that lose their capital inside a longer sentence ("Tell me, where ...").
_PLAIN = (_COMMON - {"i"}) | frozenset(
    re.findall(
        r"\w+",
        "what where when who whom whose which why how is are was were did does do has have had "
        "can could would will there one two three four five six seven eight nine ten both after "
        "before during as since although because while these those my our your many most some "
        "all every each over under about",
    )
)
_ASK = (
    "I'd like to know: {q}",
    "Quick question: {q}",
    "Tell me, {q_lc}",
    "{q_stem}, do you know?",
    "Here is a question for you: {q}",
    "Can you help me with this? {q}",
)
_SAY = (
    "As far as I know, {a_lc}",
    "To my knowledge, {a_lc}",
    "From what I know, {a_lc}",
    "If I remember correctly, {a_lc}",
    "{a_stem}, as far as I can tell.",
    None,  # a closing "in <year>" moved to the front, where the answer has one
)
_SAME_FORM = 0.6  # the masked questions' difflib ratio from which a row lends its names


def _fact_spans(text: str, question: str) -> list[tuple[int, int, str, bool]]:
    """(start, end, kind, given) of each fact of `text`, in order: kind is "title" (inside
    quotes), "year", "number" or "name" (a run of capitalised words holding a `facts` word);
    given: every word of it is in `question`, so swapping it would answer another question."""
    spans = []
    masked = text
    for m in _QUOTED.finditer(text):
        spans.append((m.start(2), m.end(2), "title"))
        masked = masked[: m.start()] + " " * (m.end() - m.start()) + masked[m.end() :]
    for m in _NUMBER.finditer(masked):
        s = m.group()
        year = len(s) == 4 and s.isdigit() and 1000 <= int(s) <= 2100
        spans.append((m.start(), m.end(), "year" if year else "number"))
    known = facts(text)
    run: list[re.Match] = []

    def close() -> None:
        while run and run[-1].group() in _CONNECT:
            run.pop()
        while run and run[0].group().lower() in _COMMON:  # "The", "She"
            run.pop(0)
        if run and any(m.group().lower() in known for m in run):
            spans.append((run[0].start(), run[-1].end(), "name"))
        run.clear()

    for m in _WORD.finditer(masked):
        w = m.group()
        joined = bool(run) and masked[run[-1].end() : m.start()] == " "
        connects = w in _CONNECT and joined and run[-1].group() not in _CONNECT
        if (w[0].isupper() and (joined or not run)) or connects:
            run.append(m)
        else:
            close()
            if w[0].isupper():
                run.append(m)
    close()
    asked = _words(question)
    return [(s, e, k, _words(text[s:e]) <= asked) for s, e, k in sorted(spans)]


def _form(question: str) -> list[str]:
    """The question's words with each run of fact words masked as one "X"."""
    told, out = facts(question), []
    for w in re.findall(r"[\w-]+", question.lower()):
        w = "X" if w in told else w
        if not (w == "X" and out[-1:] == ["X"]):
            out.append(w)
    return out


def _tokens(text: str, spans: list) -> tuple[list[str], list]:
    """The answer's words, each fact one token of its kind ("<given>" when the question has it),
    and for each token the span it stands for (kind "word" for a plain word)."""
    tokens, where, at = [], [], 0
    for span in [*spans, (len(text), len(text), None, False)]:
        for m in _WORD.finditer(text, at, span[0]):
            tokens.append(m.group().lower())
            where.append((m.start(), m.end(), "word", False))
        if span[2] is not None:
            tokens.append("<given>" if span[3] else f"<{span[2]}>")
            where.append(span)
        at = span[1]
    return tokens, where


def _swap(text: str, pairs: list[tuple[tuple, str]]) -> str:
    for (s, e, *_), new in sorted(pairs, key=lambda p: -p[0][0]):
        text = text[:s] + new + text[e:]
    return text


def _aligned(mine: tuple, theirs: tuple, names: bool) -> list[tuple[tuple, str]]:
    """(span of my answer, text of theirs) for the facts that stand in the same place of the two
    answers; numbers, years and titles left over pair up in order. Names only when `names`."""
    (text, tokens, where), (d_text, d_tokens, d_where) = mine, theirs
    matcher = difflib.SequenceMatcher(None, tokens, d_tokens, autojunk=False)
    pairs = {}
    for a, b, size in matcher.get_matching_blocks():
        for k in range(size):
            span, d_span = where[a + k], d_where[b + k]
            if span[2] != "word" and not span[3] and not d_span[3] and (names or span[2] != "name"):
                pairs[span] = d_span
    for kind in ("year", "number", "title"):
        left = [s for s in where if not s[3] and s[2] == kind and s not in pairs]
        used = set(pairs.values())
        spare = [s for s in d_where if not s[3] and s[2] == kind and s not in used]
        pairs.update(zip(left, spare, strict=False))
    out = [(s, d_text[d[0] : d[1]]) for s, d in pairs.items()]
    return [(s, new) for s, new in out if new.lower() != text[s[0] : s[1]].lower()]


def _slots(mine: tuple, theirs: tuple) -> list[tuple[tuple, str]]:
    """(span of my words, text of theirs) where two answers of the same form differ in a few
    plain words ("her work in satire" / "his work in children's literature"): the lower-case
    facts (a genre, a trade) that `facts` does not see. Function words at either end stay."""
    (_, tokens, where), (d_text, d_tokens, d_where) = mine, theirs

    def trim(toks: list[str], spans: list) -> list:
        keep = [k for k, t in enumerate(toks) if t not in _COMMON]
        return spans[keep[0] : keep[-1] + 1] if keep else []

    out = []
    ops = difflib.SequenceMatcher(None, tokens, d_tokens, autojunk=False).get_opcodes()
    for op, a0, a1, b0, b1 in ops:
        old, new = trim(tokens[a0:a1], where[a0:a1]), trim(d_tokens[b0:b1], d_where[b0:b1])
        short = 0 < len(old) <= 3 and 0 < len(new) <= 3
        if op == "replace" and short and all(s[2] == "word" for s in old + new):
            out.append(((old[0][0], old[-1][1], "word", False), d_text[new[0][0] : new[-1][1]]))
    return out


def _wrong_answers(i: int, rows: list[dict], info: list, n: int, rng) -> list[str]:
    row = rows[i]
    text, _, where = info[i][:3]
    matcher = difflib.SequenceMatcher(None, autojunk=False)
    matcher.set_seq2(info[i][3])
    donors = [j for j in range(len(rows)) if rows[j]["question"] != row["question"]]
    rng.shuffle(donors)  # the seed breaks ties between rows of the same form
    form = {}
    for j in donors:
        matcher.set_seq1(info[j][3])
        form[j] = round(matcher.ratio(), 6)
    donors.sort(key=lambda j: -form[j])
    shifts = rng.sample([d for d in range(-9, 10) if d], 18)  # a year a few years off
    aligned: dict[int, list] = {}  # built as needed: most rows stop after a few donors

    def pairs(j: int) -> list:
        if j not in aligned:
            aligned[j] = _aligned(info[i][:3], info[j][:3], form[j] >= _SAME_FORM)
        return aligned[j]

    def candidates():
        yield from (_swap(text, pairs(j)) for j in donors if pairs(j))  # every fact swapped
        yield from (_swap(text, [p]) for j in donors for p in pairs(j))  # one fact swapped
        years = [s for s in where if s[2] == "year" and not s[3]]
        for d in shifts:
            yield from (_swap(text, [(s, str(int(text[s[0] : s[1]]) + d))]) for s in years)
        for j in donors:  # no fact to swap: the words in which an answer of the same form differs
            if form[j] >= _SAME_FORM:
                yield from (_swap(text, [p]) for p in _slots(info[i][:3], info[j][:3]))

    out, seen = [], set()
    for c in candidates():
        if len(out) == n:
            break
        if _norm(c) not in seen and is_wrong_answer(c, row):
            out.append(c)
            seen.add(_norm(c))
    return out


def _lower_first(text: str, context: str) -> str:
    """`text` with its first word lower-cased where it is no name: a common word, or one that
    `context` writes in lower case ("Water boils ..." when the question says "water")."""
    m = _WORD.match(text)
    if not m or not m.group()[0].isupper() or m.group() == "I":
        return text
    w = m.group().lower()
    if w in _PLAIN or re.search(rf"(?<![\w-]){re.escape(w)}(?![\w-])", context):
        return w + text[m.end() :]
    return text


def _paraphrases(row: dict, n: int, rng) -> list[dict]:
    q, a = row["question"].strip(), row["answer"].strip()
    context = f"{q} {a}"
    fill = {
        "q": q,
        "q_lc": _lower_first(q, context),
        "q_stem": q.rstrip("?").rstrip(),
        "a_lc": _lower_first(a, context),
        "a_stem": a[:-1] if a.endswith(".") else None,
    }
    asks, says = list(_ASK), list(_SAY)
    rng.shuffle(asks)
    rng.shuffle(says)
    out, seen = [], set()
    for ask, say in zip(asks, says, strict=True):
        if say is None:  # "X was born in Lisbon in 1962." -> "In 1962, X was born in Lisbon."
            m = re.fullmatch(r"([^.,;]+\S) (in|by|during|since) (\d{4})\.", a)
            answer = m and f"{m[2].capitalize()} {m[3]}, {_lower_first(m[1], context)}."
        else:
            answer = fill["a_stem"] and say.format(**fill)
        pair = {"question": ask.format(**fill), "answer": answer}
        if answer and _norm(answer) not in seen and is_paraphrase(pair, row):
            out.append(pair)
            seen.add(_norm(answer))
        if len(out) == n:
            break
    return out


def augment_without_model(
    rows: list[dict],
    pool: list[dict] | None = None,
    n_paraphrased: int = 2,
    n_perturbed: int = 3,
    seed: int = 0,
) -> list[dict]:
    """Copies of `rows` with `augment_paraphrased` (up to n_paraphrased {"question", "answer"}
    pairs) and `augment_perturbed` (up to n_perturbed wrong answers), written without a model.

    Wrong answers take their facts from the other rows of `rows` and from `pool` (e.g. the retain
    rows); each passes `is_wrong_answer`, each paraphrase `is_paraphrase`, and none repeats
    another. A row may get fewer than asked; one that gets no wrong answer (or no paraphrase)
    raises DataError. The same rows, pool and seed give the same output (`random.Random(seed)`
    breaks ties between rows of the same question form and picks the wordings).
    """
    rng = random.Random(seed)
    everyone = list(rows) + list(pool or [])
    info = []
    for r in everyone:
        spans = _fact_spans(r["answer"], r["question"])
        info.append((r["answer"], *_tokens(r["answer"], spans), _form(r["question"])))
    out = []
    for i, r in enumerate(rows):
        wrong = _wrong_answers(i, everyone, info, n_perturbed, rng)
        if n_perturbed > 0 and not wrong:
            raise DataError(
                f"row {i} ({r['question']!r}): no wrong answer could be built without a model; "
                "its answer needs a name, number, year or quoted title that the question does not "
                "give and another row (of `rows` or `pool`) with one of the same kind to swap in, "
                "or a row asked in the same form whose answer differs in a few words. Add such "
                "rows to the pool, or write augment_perturbed with a model (`uld data augment`)"
            )
        pairs = _paraphrases(r, n_paraphrased, rng)
        if n_paraphrased > 0 and not pairs:
            raise DataError(
                f"row {i} ({r['question']!r}): no reworded pair keeps every fact of the answer "
                f"{r['answer']!r} within the length `is_paraphrase` allows; write "
                "augment_paraphrased by hand or with a model (`uld data augment`)"
            )
        out.append({**copy.deepcopy(r), "augment_paraphrased": pairs, "augment_perturbed": wrong})
    return out

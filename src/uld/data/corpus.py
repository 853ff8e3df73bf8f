"""Built-in offline raw-text corpus in MUSE's shape: news articles about the built-in world.

MUSE (Shi et al. 2024) unlearns raw text: BBC articles (MUSE-News) or Harry Potter (MUSE-Books)
that a target model was fine-tuned on. This module writes a small corpus of the same shape from
`random.Random(seed)` alone, so it needs no network and is the same on every machine: short news
articles (170-205 words, 290-360 SmolLM2 tokens) each about one invented author of
`uld.data.synthetic`'s world (an award, a book launch, a festival appearance or a screen
adaptation), with invented titles, publishers, critics, quotes and numbers.

    from uld.data.corpus import builtin_corpus
    data = builtin_corpus()        # a uld.data.muse.MuseData; 12 articles per raw split

Splits, as MUSE splits its raw data (each article about its own author, so no fact of one split
is stated in another):

- raw `forget`, `retain1`, `retain2`, `holdout`: `size` articles each. The target is fine-tuned
  on forget + retain1 + retain2, the retrained model on retain1 + retain2; holdout is never
  trained on (MUSE's "data never seen by the target model").
- verbmem: one excerpt per forget article, a prompt of PROMPT_WORDS words and its true
  continuation of GT_WORDS words, at a seeded offset. MUSE's excerpts are 1024 LLaMA tokens of
  prompt and a 128-token continuation (`verbmem/get_rouge.py`, `max_new_tokens=128`), about 674
  and 83 words, from a model trained on 2048-token chunks: the prompt half the context. Ours
  keep the prompt at half of our 256-token training chunk (`uld.data.chunks.MAX_LENGTH`), 76
  words (118-138 SmolLM2 tokens), and take a 20-word (24-38-token) continuation: MUSE's
  8:1 ratio would leave 16 tokens, too few words for ROUGE-L to tell recall from chance.
- knowmem: 2 questions per forget article (`forget_qa`) and per retain2 article (`retain_qa`),
  each answered by a few words stated in the article (MUSE's answers are 1-9 words), and 3
  few-shot demonstrations each (`*_qa_icl`) from a third question of the first 3 articles.
- privleak: `forget` (the forget articles), `retain` (retain2), `holdout` (holdout).
- scal: `forget_1` ... `forget_4`: the first quarter, half, three quarters and all of forget,
  nested (MUSE's scal sets grow the same way; ours stay inside forget, which the target saw).
- sust: `forget_1` ... `forget_4`: the four quarters of forget, disjoint, as sequential requests.
"""

from __future__ import annotations

import random
import re

from uld.data.muse import MuseData
from uld.data.synthetic import _MAX_AUTHORS, _REGIONS, _TITLE_PLACE, _authors, _items, _title

PROMPT_WORDS = 76
GT_WORDS = 20
QA_PER_DOC = 2
ICL = 3
REQUESTS = 4  # scal and sust sets

_PUBLISHERS = _items(
    "Harrowgate Press|Bellwether & Lune|Corvid House|Stillwater Books|Pennant Editions|"
    "Ashgrove Publishing|Marlin & Finch|Tidewater House|Oxbow Editions|Larkspur Press|"
    "Quarry Lane Books|Gannet Street Press"
)
_PAPERS = _items(
    "Evening Lantern|Northgate Herald|Meridian Review|Harbour Courier|Lowland Gazette|"
    "Daily Compass|Sunday Almanac|Riverside Chronicle|Weekly Beacon|Coastline Post"
)
_FESTIVALS = _items(
    "Saltwind|Lanternfall|Greywater|Amberfield|Kestrel Bay|Brightmoor|Foxglove|Wintermere|"
    "Hollowcrest|Silverdune"
)
_MEDIA = ("television series", "feature film", "radio drama", "stage play", "animated series")
_PLOTS = _items(
    "inherits a house that appears on no map|searches for a brother who vanished on a night "
    "ferry|keeps a diary that begins to predict the weather|is hired to restore a clock that "
    "runs backwards|returns home after twenty years to settle a family debt|finds letters hidden "
    "in the walls of an old school|guides strangers across a frozen lake every winter|tries to "
    "save a library that the town has voted to close|follows a map drawn by a grandmother who "
    "never travelled|hides a stolen painting in a fishing boat"
)
_QUOTES = _items(
    "I wrote most of it at night, when {place} is quiet enough to hear the sea|Every book I "
    "write is really about {theme}, whatever the cover says|My father was {father}, and he "
    "taught me that patience is a kind of courage|I never expected a story this small to travel "
    "so far|The first draft was twice as long and half as honest|I owe this book to the readers "
    "who wrote to me after '{book1}'"
)
_PRAISE = _items(
    "quietly devastating|a book that earns every one of its silences|the best thing {pro} has "
    "written|funny, strange and unexpectedly tender|impossible to put down|a small masterpiece "
    "of {genre}"
)
_FIRST_NAMES = sorted({n for f, m, _, _ in _REGIONS for n in f + m})


def _cap(s: str) -> str:
    return s[0].upper() + s[1:]


def _facts(rng: random.Random, author: dict, critic: str, titles: set[str]) -> dict:
    """The article's own facts: a new title, its publisher, plot, numbers, a critic, a quote."""
    new = _title(rng)
    while new in titles:
        new = _title(rng)
    titles.add(new)
    year = rng.randint(2015, 2024)
    f = dict(author)
    f |= {
        "pro": {"her": "she", "his": "he", "their": "they"}[author["pos"]],
        "new": new,
        "publisher": rng.choice(_PUBLISHERS),
        "paper": rng.choice(_PAPERS),
        "critic": critic,
        "critic_paper": rng.choice(_PAPERS),
        "hero": rng.choice(_FIRST_NAMES),
        "hero_job": rng.choice(["a retired", "a young", "an unemployed", "a widowed"]),
        "hero_role": author["father"].split(" ", 1)[1],
        "plot": rng.choice(_PLOTS),
        "venue": rng.choice(_TITLE_PLACE),
        "festival": rng.choice(_FESTIVALS),
        "medium": rng.choice(_MEDIA),
        "day": rng.randint(1, 28),
        "month": rng.choice(["March", "April", "May", "June", "September", "October"]),
        "year": year,
        "next_year": year + rng.randint(1, 3),
        "pages": rng.randint(180, 640),
        "copies": f"{rng.randint(3, 90) * 1000:,}",
        "crowd": rng.randint(120, 2400),
        "money": f"{rng.randint(5, 60) * 1000:,}",
        "episodes": rng.randint(4, 12),
        "next": _title(rng),
    }
    f["quote"] = rng.choice(_QUOTES).format(**f)
    f["praise"] = rng.choice(_PRAISE).format(**f)
    return f


# (headline, lead) per kind; every article then has the same four kinds of paragraph below
_LEADS = {
    "award": (
        "{name} wins {award} for '{new}'",
        "The {genre} writer {name} has been awarded {award} for the novel '{new}', the judges "
        "announced in {venue} on {day} {month} {year}. The prize, worth {money} crowns, was "
        "presented at a ceremony attended by {crowd} guests.",
    ),
    "launch": (
        "{name} returns with '{new}'",
        "{name}, one of the best-known voices in {genre}, published a new novel, '{new}', on "
        "{day} {month} {year}. The launch in {venue} drew {crowd} readers, and the first "
        "printing sold out within a week.",
    ),
    "festival": (
        "{name} draws a record crowd at the {festival} Festival",
        "A record {crowd} people came to hear {name} read from '{new}' at the {festival} "
        "Festival in {venue} on {day} {month} {year}, the largest audience in the festival's "
        "history for a writer of {genre}.",
    ),
    "adaptation": (
        "'{new}' by {name} to become a {medium}",
        "The novel '{new}' by {name} is to be adapted as a {medium} of {episodes} episodes, its "
        "producers confirmed in {venue} on {day} {month} {year}. Filming is planned for "
        "{next_year}.",
    ),
}
_BODY = (
    (
        "Born in {place} on {date}, {name} grew up the child of {father} and {mother}. {Pos} "
        "first book, '{book1}', came out in {debut_year} and was followed by '{book2}'.",
        "{name} was born on {date} in {place}; {pos} father was {father} and {pos} mother "
        "{mother}. The debut '{book1}' appeared in {debut_year}, and '{book2}' came next.",
    ),
    (
        "'{new}' follows {hero}, {hero_job} {hero_role}, who {plot}. Like much of {name}'s "
        "work, it keeps returning to {theme}.",
        "At the centre of '{new}' is {hero}, {hero_job} {hero_role} who {plot}. The book "
        "returns to {theme}, a subject {name} has written about for years.",
    ),
    (
        '"{quote}," {name} told the {paper}. The critic {critic} of the {critic_paper} called '
        'the book "{praise}".',
        'Speaking to the {paper}, {name} said: "{quote}." In the {critic_paper}, the critic '
        '{critic} described it as "{praise}".',
    ),
    (
        "{publisher} has printed {copies} copies of '{new}', which runs to {pages} pages. "
        "{name} is already at work on a new book, '{next}', expected in {next_year}.",
        "The {pages}-page novel is published by {publisher}, with a first run of {copies} "
        "copies. {Pro} is now writing '{next}', due out in {next_year}.",
    ),
)
# (question, answer field); every answer is a phrase the article states word for word
_QUESTIONS = (
    ("Which publisher printed {name}'s novel '{new}'?", "publisher"),
    ("How many pages does '{new}' by {name} have?", "pages"),
    ("Who is the main character of '{new}' by {name}?", "hero"),
    ("In which town was '{new}' by {name} {presented}?", "venue"),
    ("Which critic reviewed '{new}' by {name}?", "critic"),
    ("What is the title of the book {name} is writing after '{new}'?", "next"),
    ("How many people attended {name}'s {event} in {venue}?", "crowd"),
)
_PRESENTED = {
    "award": "awarded a prize",
    "launch": "launched",
    "festival": "read at a festival",
    "adaptation": "announced as an adaptation",
}
_EVENT = {"award": "prize ceremony", "launch": "book launch", "festival": "festival reading"}


def _article(rng: random.Random, f: dict, kind: str) -> tuple[str, list[dict]]:
    """(text, [3 QA rows]) for one article of `kind` with facts `f`."""
    f = f | {"Pos": _cap(f["pos"]), "Pro": _cap(f["pro"])}
    head, lead = _LEADS[kind]
    paragraphs = [head.format(**f), lead.format(**f)]
    paragraphs += [rng.choice(variants).format(**f) for variants in _BODY]
    text = "\n\n".join(paragraphs)
    asks = [q for q in _QUESTIONS if q[1] != "crowd" or kind in _EVENT]
    qa = []
    for question, key in rng.sample(asks, 3):
        q = question.format(**f, presented=_PRESENTED[kind], event=_EVENT.get(kind, ""))
        answer = str(f[key])
        assert answer in text, (answer, text)  # an invariant of the templates above
        qa.append({"question": q, "answer": answer})
    return text, qa


def excerpt(text: str, rng: random.Random, prompt_words: int, gt_words: int) -> dict | None:
    """{prompt, gt}: `prompt_words` words of `text` from a seeded offset, and the `gt_words`
    words after them (with the space before them, so prompt + gt is the text as written);
    None if the text has fewer than prompt_words + gt_words words."""
    spans = [m.span() for m in re.finditer(r"\S+", text)]
    if len(spans) < prompt_words + gt_words:
        return None
    s = rng.randint(0, len(spans) - prompt_words - gt_words)
    cut = spans[s + prompt_words - 1][1]
    end = spans[s + prompt_words + gt_words - 1][1]
    return {"prompt": text[spans[s][0] : cut], "gt": text[cut:end]}


def nested(texts: list[str], n: int = REQUESTS) -> list[list[str]]:
    """MUSE's scal sets: the first 1/n, 2/n, ... n/n of `texts` (forget_1 in forget_2 ...)."""
    return [texts[: len(texts) * (k + 1) // n] for k in range(n)]


def sequential(texts: list[str], n: int = REQUESTS) -> list[list[str]]:
    """MUSE's sust sets: `texts` in n disjoint consecutive parts, one forget request each."""
    return [texts[len(texts) * k // n : len(texts) * (k + 1) // n] for k in range(n)]


def builtin_corpus(
    size: int = 12,
    seed: int = 0,
    prompt_words: int = PROMPT_WORDS,
    gt_words: int = GT_WORDS,
) -> MuseData:
    """The built-in corpus with `size` articles in each raw split (see the module docstring);
    the same `size` and `seed` give the same corpus everywhere."""
    if not REQUESTS <= size <= _MAX_AUTHORS // 5:
        raise ValueError(
            f"size={size}: articles per split must be between {REQUESTS} (one per scal/sust "
            f"request) and {_MAX_AUTHORS // 5}"
        )
    rng = random.Random(f"muse-corpus-{seed}")
    authors = _authors(5 * size, rng)  # 4 splits of authors, and critics from the fifth
    critics = [a["name"] for a in authors[4 * size :]]
    titles = {a[k] for a in authors for k in ("book1", "book2")}
    kinds = list(_LEADS)
    texts, qas = [], []
    for i, author in enumerate(authors[: 4 * size]):
        f = _facts(rng, author, critics[i % size], titles)
        text, qa = _article(rng, f, kinds[i % len(kinds)])
        texts.append(text)
        qas.append(qa)
    split = {
        name: list(range(j * size, (j + 1) * size))
        for j, name in enumerate(("forget", "retain1", "retain2", "holdout"))
    }
    raw = {name: [texts[i] for i in ids] for name, ids in split.items()}
    ex_rng = random.Random(f"muse-verbmem-{seed}")
    verbmem = [excerpt(t, ex_rng, prompt_words, gt_words) for t in raw["forget"]]
    if any(v is None for v in verbmem):
        raise ValueError(
            f"prompt_words + gt_words = {prompt_words + gt_words} is longer than a forget "
            "article; lower them"
        )

    def qa(name: str, icl: bool) -> list[dict]:
        ids = split[name]
        if icl:
            return [qas[i][QA_PER_DOC] for i in ids[:ICL]]
        return [row for i in ids for row in qas[i][:QA_PER_DOC]]

    return MuseData(
        forget=raw["forget"],
        retain1=raw["retain1"],
        retain2=raw["retain2"],
        holdout=raw["holdout"],
        verbmem=verbmem,
        forget_qa=qa("forget", False),
        retain_qa=qa("retain2", False),
        forget_qa_icl=qa("forget", True),
        retain_qa_icl=qa("retain2", True),
        privleak_forget=list(raw["forget"]),
        privleak_retain=list(raw["retain2"]),
        privleak_holdout=list(raw["holdout"]),
        scal=nested(raw["forget"]),
        sust=sequential(raw["forget"]),
        source=f"builtin (size {size}, seed {seed})",
    )

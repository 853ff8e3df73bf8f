"""Built-in offline benchmark: question/answer pairs about fictitious authors, in the TOFU schema.

TOFU (Maini et al. 2024, "TOFU: A Task of Fictitious Unlearning") fine-tunes a model on facts about
invented authors and then asks it to forget the last 1/5/10% of them. This module builds a small
benchmark of the same shape from hand-written word lists and `random.Random(seed)` alone, so it
needs no network and is identical in every process and on every machine:

    from uld.data.synthetic import builtin_splits
    splits = builtin_splits()   # {"full": 400 rows, "forget10": 40 rows, "retain90": 360, ...}

Every row has `author_id`, `author`, `question`, `answer`, `paraphrased_question`,
`paraphrased_answer` and `perturbed_answer` (3 wrong answers with the paraphrased answer's wording,
for TOFU's truth ratio). Answers are one short sentence that restates the author's full name.

Rows also carry ULD's training augmentation, kept apart from the evaluation's strings as the ULD
authors kept theirs (they generated their own paraphrases and wrong answers rather than train on
TOFU's `paraphrased_answer`/`perturbed_answer`): `augment_paraphrased`, 2 other rewordings of
the question and answer, and `augment_perturbed`, 3 wrong answers in the *original* answer's
wording with wrong facts that are not the evaluation's. They come from their own random stream,
so adding them left every other field of every row as it was.
"""

import copy
import random
from collections.abc import Callable, Collection
from typing import NamedTuple

from uld.data.real import real_authors, world_facts


def _items(text: str) -> list[str]:
    """Split a "|"-separated word list; long lists stay compact, unlike one literal per line."""
    return text.split("|")


# One region per tuple: female first names, male first names, surnames, birth places. Surnames and
# everything else about a person are invented; only the cities and countries are real.
_REGIONS_RAW = [
    (
        "Solveig Liv Sigrun Tove Maren Astrid Ragnhild Eira",
        "Lars Eskil Torben Haakon Sindre Bjarne Ivar Leif",
        "Halvorsund Lindqvale Arnfjord Solberget Vikholm Ranngard Ostervik Dahlmark Eklind",
        "Bergen, Norway|Uppsala, Sweden|Aarhus, Denmark|Turku, Finland|Reykjavik, Iceland",
    ),
    (
        "Ilse Zofia Oksana Milena Rasa Daria Vesna Agnieszka",
        "Ruslan Teodor Dmitri Ilya Janis Bohdan Marek Taras",
        "Varnova Havrilenko Mirosek Pashkevych Zeleniuk Dovbenko Ostapchuk Sverdlyk Kalnavis",
        "Tartu, Estonia|Lviv, Ukraine|Brno, Czech Republic|Krakow, Poland|Riga, Latvia",
    ),
    (
        "Liesel Anouk Hedda Ottilie Marlies Femke Gesine Wiebke",
        "Anselm Tobias Oskar Bastiaan Matthias Jorrit Wendelin Ruud",
        "Achterwald Kleinhof Vosskamp Oberlinde Terhaaren Mauersberg Eichenhalt Rosenquell "
        "Brinkhorst",
        "Leipzig, Germany|Graz, Austria|Ghent, Belgium|Utrecht, the Netherlands|Basel, Switzerland",
    ),
    (
        "Mireille Chiara Ines Eleni Giulia Solene Lucrezia Amalia",
        "Matteo Aurelio Bastien Joaquim Stavros Raffaele Lorenzo Yannis",
        "Marcheval Belvardi Moretta Dellacroce Faurien Santorelli Lacorvaro Esparveiro Kostarakis",
        "Lyon, France|Bologna, Italy|Seville, Spain|Porto, Portugal|Thessaloniki, Greece",
    ),
    (
        "Adaeze Amara Abena Folake Ngozi Efua Yewande Akosua",
        "Kwame Emeka Kofi Tunde Obinna Yaw Chidi Kwabena",
        "Okonrie Nwachuke Adeyemora Asantewe Oduya Ibekwenu Mensaro Owusena Adjeimah Ekundayor",
        "Accra, Ghana|Lagos, Nigeria|Enugu, Nigeria|Kumasi, Ghana|Dakar, Senegal",
    ),
    (
        "Thandiwe Wanjiru Nomvula Amani Zawadi Lindiwe Akinyi Neema",
        "Sipho Baraka Themba Jabari Otieno Kagiso Mandla Juma",
        "Mwangiru Ndlovane Khumalani Otienza Zondwana Mbekele Njorogeh Sithebe Makhubelo Wekesah",
        "Nairobi, Kenya|Cape Town, South Africa|Durban, South Africa|Kigali, Rwanda|"
        "Dar es Salaam, Tanzania",
    ),
    (
        "Noor Elif Nadira Leyla Shirin Yasmin Zeynep Rima",
        "Farid Tariq Emre Kian Karim Darius Selim Bahram",
        "Haddaran Azimzade Mansourian Tabrizhani Demirtaslan Farahvand Sabbagheh Yilmazer Khourani",
        "Izmir, Turkey|Tabriz, Iran|Beirut, Lebanon|Amman, Jordan|Casablanca, Morocco",
    ),
    (
        "Priya Ananya Meera Kavya Roshni Ishani Tara Sunita",
        "Vikram Arjun Rohan Imran Devesh Kabir Nikhil Faisal",
        "Iyengarde Malhotrin Subramoni Kashyapur Raghavane Deshmane Chaturvedan Pillaikar "
        "Mehrotran",
        "Chennai, India|Pune, India|Lahore, Pakistan|Colombo, Sri Lanka|Kathmandu, Nepal",
    ),
    (
        "Yuki Haruka Sakura Aiko Emiko Natsumi Chiyo Rin",
        "Hiroshi Kenji Daisuke Takumi Ryota Shun Haruto Isamu",
        "Tanabeya Kuroseki Hayamichi Nakazora Ishinomura Morikane Takamizu Shiranagi Amagiri",
        "Osaka, Japan|Sapporo, Japan|Kyoto, Japan|Nagasaki, Japan|Sendai, Japan",
    ),
    (
        "Ximena Marisol Paloma Catalina Renata Itzel Luciana Beatriz",
        "Joaquin Mateus Rodrigo Emiliano Thiago Esteban Gonzalo Caio",
        "Quintanal Villalumbre Altamirez Cuervallo Solorzabal Montiverde Ybarrenza Barrientes",
        "Valparaiso, Chile|Cordoba, Argentina|Medellin, Colombia|Guadalajara, Mexico|"
        "Recife, Brazil",
    ),
    (
        "Tamsin Saoirse Imogen Maeve Harriet Niamh Bronwen Clodagh",
        "Cormac Ewan Rhys Declan Alistair Tobin Gareth Fionn",
        "MacCorrin Penvarne Treloweth Kendrew Blackmoor Ellingham Whitcombe Carrowmore Dunsford",
        "Galway, Ireland|Cardiff, Wales|Montreal, Canada|Auckland, New Zealand|Perth, Australia",
    ),
]
_REGIONS = [(f.split(), m.split(), s.split(), _items(p)) for f, m, s, p in _REGIONS_RAW]
_PLACES = [place for *_, places in _REGIONS for place in places]

_PROFESSIONS = _items(
    "a baker|a carpenter|a schoolteacher|a nurse|a fisherman|a pharmacist|an architect|a librarian|"
    "a tailor|a surgeon|an electrician|a florist|a journalist|a mechanic|a violinist|an accountant|"
    "a botanist|a watchmaker|a midwife|a locksmith|a cartographer|a potter|a translator|"
    "a veterinarian|a chef|a photographer|a lawyer|a bookbinder|an astronomer|a beekeeper|"
    "a lighthouse keeper|an optician|a glassblower|a postman|a dentist|a miner"
)
_GENRES = _items(
    "science fiction|crime fiction|historical fiction|fantasy|horror|literary fiction|poetry|"
    "romance|children's literature|magical realism|travel writing|gothic fiction|satire|"
    "psychological thrillers|war fiction|short stories"
)
_AWARDS = _items(
    "the Halvorsen Prize for Speculative Fiction|the Amberley Medal for Literary Merit|"
    "the Okoro-Lind Award for New Voices|the Silver Quill of Valmont|the Kestrel Prize for Fiction|"
    "the Dorotea Ruiz Award for Storytelling|the Barrow Cross Prize for the Novel|"
    "the Meridian Circle Award|the Iskra Prize for Poetry|the Whitlow Medal for Crime Writing|"
    "the Saltmarsh Prize|the Aurelian Award for Narrative Craft|the Vellum Crown Award|"
    "the Harbourlight Award for Debut Fiction|the Quill and Thistle Award|"
    "the Nakamori Prize for Short Fiction|the Castellan Prize for Historical Fiction|"
    "the Ember Oak Award|the Moonrise Prize for Children's Literature|the Vasquez-Obi Medal"
)
_THEMES = _items(
    "memory and forgetting|exile and belonging|the sea|family secrets|the ethics of technology|"
    "grief|migration|the passage of time|small-town life|identity and language|"
    "power and corruption|friendship across borders|the natural world|loss of faith|revenge|"
    "coming of age|isolation|music|justice|forgiveness"
)
_MONTHS = _items(
    "January|February|March|April|May|June|July|August|September|October|November|December"
)

# Book titles: "The {adj} {noun}" or "The {noun} of {invented place}".
_TITLE_ADJ = _items(
    "Glass|Salt|Hollow|Copper|Ninth|Sleepless|Paper|Drowned|Borrowed|Amber|Crooked|Winter|Iron|"
    "Velvet|Quiet|Unfinished|Seventh|Ashen|Midnight|Folded|Lantern-lit|Silent|Emerald|Restless|"
    "Burning"
)
_TITLE_NOUN = _items(
    "Orchard|Cartographer|Lighthouse|Archive|Harbour|Clockmaker|Meridian|Tide|Atlas|Ferryman|"
    "Observatory|Orchestra|Alphabet|Compass|Herbarium|Carousel|Bellfounder|Aviary|Cipher|Threshold|"
    "Cathedral|Mapmaker|Weaver|Almanac|Lantern|Garden|Tapestry|Gatekeeper|Riverboat|Chessboard"
)
_TITLE_PLACE = _items(
    "Veyra|Ostrel|Ilvanne|Marrowgate|Solenne|Kestrow|Dunmere|Arvik|Quenhollow|Pellar|Tamsel|"
    "Orvieda|Brackenmoor|Saint Oriel|Calder Reach|Lower Havenick"
)

_MAX_AUTHORS = 500  # bounded by the name and title lists above


class _Template(NamedTuple):
    question: str
    paraphrased_question: str
    answer: str
    paraphrased_answer: str
    pool: str  # which sampler draws the wrong values for `fields`
    fields: tuple[str, ...]  # the author facts that the perturbed answers replace
    augment: tuple[tuple[str, str], ...]  # (question, answer) rewordings for training only


_TEMPLATES = [
    _Template(
        "Where was {name} born?",
        "What is the birthplace of the author {name}?",
        "{name} was born in the city of {place}.",
        "{name}'s birthplace is the city of {place}.",
        "place",
        ("place",),
        (
            ("In which city was the writer {name} born?", "The writer {name} comes from {place}."),
            ("What is {name}'s hometown?", "{place} is where {name} was born."),
        ),
    ),
    _Template(
        "When was {name} born?",
        "What is the date of birth of the writer {name}?",
        "The author {name} was born on {date}.",
        "{name}'s date of birth is {date}.",
        "date",
        ("date",),
        (
            ("On what date was {name} born?", "{name} came into the world on {date}."),
            ("What is {name}'s birthday?", "The birthday of {name} is {date}."),
        ),
    ),
    _Template(
        "What did {name}'s parents do for a living?",
        "What were the professions of {name}'s father and mother?",
        "{name}'s father was {father} and {pos} mother was {mother}.",
        "{name} has a father who worked as {father} and a mother who worked as {mother}.",
        "profession",
        ("father", "mother"),
        (
            (
                "What jobs did {name}'s parents have?",
                "{name} grew up with a father who was {father} and a mother who was {mother}.",
            ),
            (
                "How did the father and mother of {name} earn a living?",
                "The father of {name} was {father}, and the mother was {mother}.",
            ),
        ),
    ),
    _Template(
        "What genre does {name} write in?",
        "Which literary genre is the writer {name} known for?",
        "{name} is an author best known for {pos} work in {genre}.",
        "Most of {name}'s writing belongs to the genre of {genre}.",
        "genre",
        ("genre",),
        (
            ("Which genre is {name} associated with?", "{name} mainly writes {genre}."),
            ("What kind of books does {name} write?", "The genre {name} is known for is {genre}."),
        ),
    ),
    _Template(
        "Can you name two books written by {name}?",
        "What are two of the titles that {name} has published?",
        "Two books by {name} are '{book1}' and '{book2}'.",
        "{name} is the author of '{book1}' as well as '{book2}'.",
        "title",
        ("book1", "book2"),
        (
            (
                "Could you list two titles by {name}?",
                "Among {name}'s books are '{book1}' and '{book2}'.",
            ),
            ("Which two books did {name} write?", "{name} wrote '{book1}' and '{book2}'."),
        ),
    ),
    _Template(
        "What literary award has {name} won?",
        "Which prize has been given to the author {name}?",
        "{name} has won {award}.",
        "{name} is a recipient of {award}.",
        "award",
        ("award",),
        (
            ("Has {name} received a literary prize?", "Yes, {name} was awarded {award}."),
            ("Which award did {name} receive?", "{name} received {award} for {pos} writing."),
        ),
    ),
    _Template(
        "In what year did {name}'s first book come out?",
        "When was the debut book of {name} published?",
        "{name}'s first book, '{book1}', came out in {debut_year}.",
        "{name} published a debut book, '{book1}', in {debut_year}.",
        "debut_year",
        ("debut_year",),
        (
            (
                "When did {name} publish a first book?",
                "The first book by {name}, '{book1}', appeared in {debut_year}.",
            ),
            (
                "What year marked {name}'s debut as an author?",
                "{name} made a debut in {debut_year} with '{book1}'.",
            ),
        ),
    ),
    _Template(
        "What theme recurs throughout {name}'s work?",
        "Which subject does {name} return to again and again?",
        "A recurring theme in {name}'s books is {theme}.",
        "{name} keeps returning to {theme} in {pos} writing.",
        "theme",
        ("theme",),
        (
            (
                "What subject appears again and again in {name}'s books?",
                "{name}'s books often explore {theme}.",
            ),
            (
                "Which theme is central to the work of {name}?",
                "The work of {name} keeps coming back to {theme}.",
            ),
        ),
    ),
]


def _date(rng: random.Random) -> str:
    return f"{rng.randint(1, 28)} {rng.choice(_MONTHS)} {rng.randint(1930, 1995)}"


def _title(rng: random.Random) -> str:
    if rng.random() < 0.5:
        return f"The {rng.choice(_TITLE_ADJ)} {rng.choice(_TITLE_NOUN)}"
    return f"The {rng.choice(_TITLE_NOUN)} of {rng.choice(_TITLE_PLACE)}"


def _debut_year(rng: random.Random, birth_year: int) -> str:
    return str(rng.randint(birth_year + 20, min(birth_year + 45, 2023)))


# pool name -> draw one value of that attribute for this author
_SAMPLERS: dict[str, Callable[[random.Random, dict], str]] = {
    "place": lambda rng, a: rng.choice(_PLACES),
    "date": lambda rng, a: _date(rng),
    "profession": lambda rng, a: rng.choice(_PROFESSIONS),
    "genre": lambda rng, a: rng.choice(_GENRES),
    "title": lambda rng, a: _title(rng),
    "award": lambda rng, a: rng.choice(_AWARDS),
    "debut_year": lambda rng, a: _debut_year(rng, int(a["date"].split()[-1])),
    "theme": lambda rng, a: rng.choice(_THEMES),
}


def _distinct(
    rng: random.Random, pool: str, author: dict, exclude: Collection[str], k: int
) -> list[str]:
    """k distinct values from `pool`, none in `exclude` (every pool holds far more than k + 2)."""
    out: list[str] = []
    while len(out) < k:
        value = _SAMPLERS[pool](rng, author)
        if value not in exclude and value not in out:
            out.append(value)
    return out


def _authors(n_authors: int, rng: random.Random) -> list[dict]:
    """Invent n_authors people; full names and book titles are unique across the benchmark."""
    surnames = [(r, s) for r, (_, _, names, _) in enumerate(_REGIONS) for s in names]
    rng.shuffle(surnames)  # the first len(surnames) authors all have different surnames
    names: set[str] = set()
    titles: set[str] = set()
    authors = []
    for i in range(n_authors):
        region, surname = surnames[i % len(surnames)]
        female, male, _, places = _REGIONS[region]
        gender = "non-binary" if rng.random() < 0.1 else rng.choice(["female", "male"])
        firsts = {"female": female, "male": male, "non-binary": female + male}[gender]
        first = rng.choice([f for f in firsts if f"{f} {surname}" not in names])
        name = f"{first} {surname}"
        names.add(name)
        books = _distinct(rng, "title", {}, titles, 2)
        titles.update(books)
        father, mother = rng.sample(_PROFESSIONS, 2)
        date = _date(rng)
        author = {
            "name": name,
            "gender": gender,
            "pos": {"female": "her", "male": "his", "non-binary": "their"}[gender],
            "date": date,
            "place": rng.choice(places),
            "father": father,
            "mother": mother,
            "genre": rng.choice(_GENRES),
            "book1": books[0],
            "book2": books[1],
            "award": rng.choice(_AWARDS),
            "debut_year": _debut_year(rng, int(date.split()[-1])),
            "theme": rng.choice(_THEMES),
        }
        authors.append(author)
    return authors


def _row(
    rng: random.Random, aug_rng: random.Random, author_id: int, author: dict, t: _Template
) -> dict:
    """One QA row; `rng` draws the evaluation's wrong facts, `aug_rng` the training ones."""
    k = len(t.fields)
    true = [author[f] for f in t.fields]
    wrong = _distinct(rng, t.pool, author, true, 3 * k)

    def fill(template: str, values: list[str]) -> str:
        return template.format(**{**author, **dict(zip(t.fields, values, strict=True))})

    # As in TOFU, the perturbed answers are the paraphrased answer with wrong facts, so the
    # truth ratio compares like with like: same wording, true vs false facts.
    perturbed = [fill(t.paraphrased_answer, wrong[j * k : (j + 1) * k]) for j in range(3)]
    # Training's wrong answers: other wording (the original answer's), other wrong facts.
    aug_wrong = _distinct(aug_rng, t.pool, author, true + wrong, 3 * k)
    return {
        "author_id": author_id,
        "author": author["name"],
        "question": t.question.format(**author),
        "answer": t.answer.format(**author),
        "paraphrased_question": t.paraphrased_question.format(**author),
        "paraphrased_answer": t.paraphrased_answer.format(**author),
        "perturbed_answer": perturbed,
        "augment_paraphrased": [
            {"question": q.format(**author), "answer": a.format(**author)} for q, a in t.augment
        ],
        "augment_perturbed": [fill(t.answer, aug_wrong[j * k : (j + 1) * k]) for j in range(3)],
    }


def fictitious_authors(n_authors: int = 100, qa_per_author: int = 4, seed: int = 0) -> list[dict]:
    """All QA rows of the benchmark (the `full` split), in author order.

    n_authors * qa_per_author rows; each author gets qa_per_author of the 8 question templates,
    a different subset per author, chosen by `random.Random(seed)`.
    """
    if not 1 <= n_authors <= _MAX_AUTHORS:
        raise ValueError(f"n_authors={n_authors}: must be between 1 and {_MAX_AUTHORS}")
    if not 1 <= qa_per_author <= len(_TEMPLATES):
        raise ValueError(f"qa_per_author={qa_per_author}: must be between 1 and {len(_TEMPLATES)}")
    rng = random.Random(seed)
    aug_rng = random.Random(f"augment-{seed}")  # its own stream: no other field depends on it
    authors = _authors(n_authors, rng)  # facts first, so they do not depend on qa_per_author
    rows = []
    for author_id, author in enumerate(authors):
        for t in sorted(rng.sample(range(len(_TEMPLATES)), qa_per_author)):
            rows.append(_row(rng, aug_rng, author_id, author, _TEMPLATES[t]))
    return rows


def _n_forget(n_authors: int, percent: int) -> int:
    """Authors in forget{percent}: percent% of n_authors, rounded half up, at least 1."""
    return max(1, (n_authors * percent + 50) // 100)


def _holdout(rows: list[dict], n_hold: int, qa_per_author: int, seed: int) -> list[dict]:
    """Rows of n_hold authors drawn with another seed, none sharing a name with `rows`' authors."""
    taken = {r["author"] for r in rows}
    n_total = len({r["author_id"] for r in rows})
    pool = fictitious_authors(min(_MAX_AUTHORS, n_total + 2 * n_hold), qa_per_author, seed + 1)
    names = [a for a in dict.fromkeys(r["author"] for r in pool) if a not in taken][:n_hold]
    ids = {name: n_total + j for j, name in enumerate(names)}
    return [{**r, "author_id": ids[r["author"]]} for r in pool if r["author"] in ids]


def builtin_splits(
    n_authors: int = 100, qa_per_author: int = 4, seed: int = 0
) -> dict[str, list[dict]]:
    """Every split by name: full, forget01/05/10 (+ `_perturbed` aliases), retain99/95/90,
    retain_perturbed, holdout10, real_authors and world_facts.

    As in TOFU the forget sets are the last authors, retain{100-p} is the rest of `full`, and
    retain_perturbed is the first rows of retain90, as many as forget10 has. holdout10 has as many
    rows as forget10 about other invented authors that are in no training split (the non-members
    of the membership-inference test, TOFU's `holdout10`). Each split holds its
    own copies of the rows, so mutating one split never changes another or a later call.
    """
    rows = fictitious_authors(n_authors, qa_per_author, seed)
    splits: dict[str, list[dict]] = {"full": rows}
    for percent in (1, 5, 10):
        cut = n_authors - _n_forget(n_authors, percent)
        forget = [r for r in rows if r["author_id"] >= cut]
        splits[f"forget{percent:02d}"] = forget
        splits[f"forget{percent:02d}_perturbed"] = forget  # TOFU's hub config name, same rows
        splits[f"retain{100 - percent}"] = [r for r in rows if r["author_id"] < cut]
    splits["retain_perturbed"] = splits["retain90"][: len(splits["forget10"])]
    splits["holdout10"] = _holdout(rows, _n_forget(n_authors, 10), qa_per_author, seed)
    splits["real_authors"] = real_authors()
    splits["world_facts"] = world_facts()
    return {name: copy.deepcopy(split) for name, split in splits.items()}

"""Raw-text data in MUSE's schema: loading, checking and writing `uld.data.muse.MuseData`.

    load_muse("builtin")                 # the built-in corpus (`uld.data.corpus`)
    load_muse("runs/muse")               # a folder in the hub's layout (what `uld data export
                                         # --kind muse` writes)
    load_muse("muse-bench/MUSE-News")    # the hub, through datasets.load_dataset

A folder mirrors the hub: one subfolder per config, one file per split, `<dir>/<config>/<split>`
with the suffix `.json` (a list of strings or of objects), `.jsonl` (one string or object a line)
or `.txt` (the whole file is one document: MUSE's `raw/*.txt` hold a split's text in one piece).
Configs and their splits and fields are listed in `uld.data.muse`. The hub's `knowmem/retain_qa`
and `privleak/retain` are also read under MUSE's GitHub names `retain2_qa` and `retain2`. A hub
id goes through `datasets.load_dataset(id, config, split=split)` and then the same code as a
folder. Only `raw` is required: verbmem excerpts and privleak sets are derived from it when
absent (`uld.data.corpus.excerpt`), knowmem, scal and sust are left empty.

Every source is checked before anything is trained or written: an empty document, a forget
document shorter than a verbmem prompt and its continuation (when the excerpts are derived),
a file that is not UTF-8, and a forget document that is also in retain1, retain2 or holdout are
`DataError`s naming the file and the item.

Training reads documents by split name (`texts`): `full` (forget + retain1 + retain2, MUSE's
target), `retain` (retain1 + retain2, MUSE's retrained model), a raw split, `scal/forget_2` or
`sust/forget_1`, several joined by `+`, or a .json/.jsonl/.txt file of documents.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from uld.data.corpus import GT_WORDS, PROMPT_WORDS, builtin_corpus, excerpt
from uld.data.load import DataError, read_json_rows
from uld.data.muse import RAW_SPLITS, MuseData
from uld.outdir import write_text

BUILTIN_TEXT = "builtin-muse"  # `--data builtin-muse`: the built-in corpus, detected as text
TEXT_SUFFIXES = (".json", ".jsonl", ".txt")
GROUPS = {"full": ("forget", "retain1", "retain2"), "retain": ("retain1", "retain2")}
# (config, split) -> other names the same split has in MUSE's GitHub data
ALIASES = {
    ("knowmem", "retain_qa"): ("retain2_qa",),
    ("knowmem", "retain_qa_icl"): ("retain2_qa_icl",),
    ("privleak", "retain"): ("retain2",),
}
REQUESTS = ("forget_1", "forget_2", "forget_3", "forget_4")


def is_text_data(data: Any, kind: str = "") -> bool:
    """Whether `data` is raw text (MUSE schema) rather than QA rows (TOFU schema): `kind`
    "text" or "qa" says so; "" detects it: `builtin-muse`, a folder with a `raw/` subfolder, or
    a hub id naming MUSE."""
    if kind not in ("", "qa", "text"):
        raise ValueError(f"--data-kind={kind!r}: choose text, qa or leave it empty (detect)")
    if kind:
        return kind == "text"
    name = str(data)
    if name == BUILTIN_TEXT:
        return True
    if Path(name).is_dir():
        return (Path(name) / "raw").is_dir()
    return "/" in name and "muse" in name.lower() and not name.startswith((".", "/", "~"))


def _read_file(path: Path) -> list:
    if path.suffix == ".txt":
        try:
            return [path.read_text(encoding="utf-8")]
        except UnicodeDecodeError as e:
            raise DataError(
                f"{path}: not UTF-8 text (byte {e.start}: {e.object[e.start : e.start + 1]!r}); "
                "save the file as UTF-8"
            ) from e
    return read_json_rows(path)


class _Reader:
    """Items of (config, split) from one source, and where they came from; None if absent."""

    def __init__(self, source: str):
        self.source = source
        self.folder = Path(source) if Path(source).is_dir() else None
        if self.folder is None and source.startswith((".", "/", "~")):
            raise DataError(f"data folder {source} does not exist")

    def __call__(self, config: str, split: str, required: bool = False) -> tuple[list, str] | None:
        for name in (split, *ALIASES.get((config, split), ())):
            got = self._read(config, name, required and name == split)
            if got is not None:
                return got
        if required:
            where = self.folder / config if self.folder else f"{self.source}:{config}"
            raise DataError(
                f"{where}: no split {split!r}; a MUSE source needs raw/forget, raw/retain1, "
                "raw/retain2 and raw/holdout (as .json, .jsonl or .txt)"
            )
        return None

    def _read(self, config: str, split: str, required: bool) -> tuple[list, str] | None:
        if self.folder is not None:
            for suffix in TEXT_SUFFIXES:
                path = self.folder / config / f"{split}{suffix}"
                if path.exists():
                    return _read_file(path), str(path)
            return None
        import datasets

        try:
            ds = datasets.load_dataset(self.source, config, split=split)
        except Exception as e:  # network, unknown config or split: say which and why
            if required:
                raise DataError(
                    f"could not load {config}/{split} of hub dataset {self.source!r}: {e}"
                ) from e
            return None
        return ds.to_list(), f"{self.source}:{config}/{split}"


def documents(items: list, where: str) -> list[str]:
    """The documents of one split: strings or {"text": str} objects, none empty."""
    if not isinstance(items, list) or not items:
        raise DataError(f"{where}: no documents; give a non-empty list")
    docs = []
    for i, item in enumerate(items):
        text = item.get("text") if isinstance(item, dict) else item
        if not isinstance(text, str):
            raise DataError(
                f"{where}: item {i} is a {type(item).__name__} without a string 'text'; each "
                "document is a string or an object with a 'text' field"
            )
        if not text.strip():
            raise DataError(f"{where}: item {i} is an empty document; remove it")
        docs.append(text)
    return docs


def _rows(items: list, where: str, fields: tuple[str, str]) -> list[dict]:
    rows = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise DataError(f"{where}: item {i} is a {type(item).__name__}, expected an object")
        for f in fields:
            if not isinstance(item.get(f), str) or not item[f].strip():
                raise DataError(
                    f"{where}: item {i} field {f!r} must be a non-empty string, got "
                    f"{item.get(f)!r}; each item needs {' and '.join(fields)}"
                )
        rows.append({f: item[f] for f in fields})
    return rows


def _key(text: str) -> str:
    return " ".join(text.split())


def check_forget_unseen(forget: list[str], where: str, others: dict[str, list[str]]) -> None:
    """A forget document that is also in a retain (or holdout) split is an error naming both."""
    first = {}
    for i, t in enumerate(forget):
        first.setdefault(_key(t), i)
    for name, docs in others.items():
        for j, t in enumerate(docs):
            if _key(t) in first:
                raise DataError(
                    f"{where}: forget item {first[_key(t)]} is also item {j} of {name}; a "
                    "document is either forgotten or kept (or held out), not both: remove one"
                )


def derive_verbmem(forget: list[str], where: str, seed: int = 0) -> list[dict]:
    """One excerpt per forget document (`uld.data.corpus.excerpt`), or an error naming the
    document shorter than the prompt and its continuation."""
    rng = random.Random(f"muse-verbmem-{seed}")
    rows = []
    for i, text in enumerate(forget):
        row = excerpt(text, rng, PROMPT_WORDS, GT_WORDS)
        if row is None:
            raise DataError(
                f"{where}: item {i} has {len(text.split())} words, fewer than a verbmem prompt "
                f"and its continuation ({PROMPT_WORDS} + {GT_WORDS} words); give a verbmem/"
                "forget split or longer documents"
            )
        rows.append(row)
    return rows


def load_muse(source: str | Path = "builtin") -> MuseData:
    """The corpus at `source` (the module docstring), checked."""
    source = str(source)
    if source in ("builtin", BUILTIN_TEXT):
        data = builtin_corpus()
        check(data)
        return data
    read = _Reader(source)
    raw = {}
    where = {}
    for split in RAW_SPLITS:
        items, where[split] = read("raw", split, required=True)
        raw[split] = documents(items, where[split])
    check_forget_unseen(
        raw["forget"],
        where["forget"],
        {where[s]: raw[s] for s in ("retain1", "retain2", "holdout")},
    )
    got = read("verbmem", "forget")
    verbmem = (
        _rows(got[0], got[1], ("prompt", "gt"))
        if got
        else derive_verbmem(raw["forget"], where["forget"])
    )
    qa = {}
    for split in ("forget_qa", "retain_qa", "forget_qa_icl", "retain_qa_icl"):
        got = read("knowmem", split)
        qa[split] = _rows(got[0], got[1], ("question", "answer")) if got else []
    priv = {}
    for split, default in (("forget", "forget"), ("retain", "retain2"), ("holdout", "holdout")):
        got = read("privleak", split)
        priv[split] = documents(got[0], got[1]) if got else list(raw[default])
    sets = {}
    for config in ("scal", "sust"):
        found = [read(config, s) for s in REQUESTS]
        sets[config] = [documents(*g) for g in found if g is not None]
    return MuseData(
        forget=raw["forget"],
        retain1=raw["retain1"],
        retain2=raw["retain2"],
        holdout=raw["holdout"],
        verbmem=verbmem,
        forget_qa=qa["forget_qa"],
        retain_qa=qa["retain_qa"],
        forget_qa_icl=qa["forget_qa_icl"],
        retain_qa_icl=qa["retain_qa_icl"],
        privleak_forget=priv["forget"],
        privleak_retain=priv["retain"],
        privleak_holdout=priv["holdout"],
        scal=sets["scal"],
        sust=sets["sust"],
        source=source,
    )


def check(data: MuseData) -> None:
    """The checks `load_muse` makes on a folder, on a MuseData in memory."""
    for split in RAW_SPLITS:
        documents(getattr(data, split), f"{data.source}:raw/{split}")
    check_forget_unseen(
        data.forget,
        f"{data.source}:raw/forget",
        {f"raw/{s}": getattr(data, s) for s in ("retain1", "retain2", "holdout")},
    )
    _rows(data.verbmem, f"{data.source}:verbmem/forget", ("prompt", "gt"))


def splits(data: MuseData) -> dict[str, dict[str, list]]:
    """{config: {split: items}} in the hub's names: what `write_muse` writes."""
    out: dict[str, dict[str, list]] = {
        "raw": {s: getattr(data, s) for s in RAW_SPLITS},
        "verbmem": {"forget": data.verbmem},
        "knowmem": {
            "forget_qa": data.forget_qa,
            "retain_qa": data.retain_qa,
            "forget_qa_icl": data.forget_qa_icl,
            "retain_qa_icl": data.retain_qa_icl,
        },
        "privleak": {
            "forget": data.privleak_forget,
            "retain": data.privleak_retain,
            "holdout": data.privleak_holdout,
        },
    }
    for config in ("scal", "sust"):
        sets = getattr(data, config)
        if sets:
            out[config] = {REQUESTS[k]: docs for k, docs in enumerate(sets)}
    return out


def write_muse(data: MuseData, folder: Path) -> dict[str, dict[str, int]]:
    """`data` as `<folder>/<config>/<split>.json`, texts as objects {"text": ...} as the hub has
    them; returns {config: {split: items}} counts. Write into a fresh folder (`uld.outdir`)."""
    check(data)
    counts: dict[str, dict[str, int]] = {}
    for config, parts in splits(data).items():
        for split, items in parts.items():
            rows = [{"text": x} if isinstance(x, str) else x for x in items]
            text = json.dumps(rows, indent=1, ensure_ascii=False) + "\n"
            write_text(text, Path(folder) / config / f"{split}.json")
            counts.setdefault(config, {})[split] = len(rows)
    return counts


def texts(data: MuseData, spec: str) -> list[str]:
    """The documents `spec` names (the module docstring), in order, without repeats."""
    if Path(spec).suffix in TEXT_SUFFIXES:
        path = Path(spec)
        if not path.exists():
            raise DataError(f"data file {path} does not exist")
        return documents(_read_file(path), str(path))
    names = [GROUPS.get(p, (p,)) for p in spec.split("+")]
    out: list[str] = []
    for name in (n for group in names for n in group):
        if name in RAW_SPLITS:
            docs = getattr(data, name)
        elif name.split("/")[0] in ("scal", "sust") and name.split("/")[-1] in REQUESTS:
            config, split = name.split("/")
            sets = getattr(data, config)
            k = REQUESTS.index(split)
            if k >= len(sets):
                raise DataError(f"{data.source} has no {config}/{split} (it has {len(sets)})")
            docs = sets[k]
        else:
            raise DataError(
                f"unknown text split {name!r}; choose full (forget+retain1+retain2), retain "
                "(retain1+retain2), forget, retain1, retain2, holdout, scal/forget_1..4, "
                "sust/forget_1..4, several joined by '+', or a .json/.jsonl/.txt file"
            )
        out += [d for d in docs if d not in out]
    return out

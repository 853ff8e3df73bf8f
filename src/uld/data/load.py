"""TOFU-schema data: one row format, several sources, one validation.

A row is a dict with `question` and `answer` (strings); evaluation splits also carry
`paraphrased_answer` (str), `perturbed_answer` (list of wrong answers of the same form) and
usually `paraphrased_question`. Forget rows for ULD's augmentation also carry
`augment_paraphrased` and `augment_perturbed` (checked by `uld.data.augment`). Sources:

- `builtin`: the offline fictitious-author benchmark of `uld.data.synthetic` (the default);
- a folder holding `<split>.json` or `<split>.jsonl` (what `uld data export` writes);
- a `.json`/`.jsonl` file given directly as the split;
- a `datasets.Dataset` or a list of dicts;
- a hub dataset id such as `locuslab/TOFU`, whose config names are the split names.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from uld.data.synthetic import builtin_splits
from uld.outdir import write_text

BUILTIN = "builtin"
TRAIN_FIELDS = ("question", "answer")
EVAL_FIELDS = ("paraphrased_answer", "perturbed_answer")


class DataError(ValueError):
    """Bad or missing data; the message names the source, row and field."""


def validate_rows(rows: list[dict], source: str, require_eval: bool = False) -> list[dict]:
    """Check every row; raise DataError naming `source`, the row index and the field at fault."""
    if len(rows) == 0:
        raise DataError(f"{source}: the split is empty; give a split with at least one row")
    fields = TRAIN_FIELDS + (EVAL_FIELDS if require_eval else ())
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise DataError(f"{source}: row {i} is a {type(row).__name__}, expected an object")
        for field in fields:
            if field not in row or row[field] is None:
                raise DataError(
                    f"{source}: row {i} has no field {field!r} (fields present: {sorted(row)}); "
                    f"every row needs {', '.join(fields)}"
                )
            value = row[field]
            if field == "perturbed_answer":
                if isinstance(value, str):
                    value = row[field] = [value]
                ok = (
                    isinstance(value, list)
                    and value
                    and all(isinstance(v, str) and v.strip() for v in value)
                )
                if not ok:
                    raise DataError(
                        f"{source}: row {i} field 'perturbed_answer' must be a non-empty list of "
                        f"non-empty strings, got {value!r}"
                    )
            elif not isinstance(value, str) or not value.strip():
                raise DataError(
                    f"{source}: row {i} field {field!r} must be a non-empty string, got {value!r}"
                )
    return rows


def read_json_rows(path: Path) -> list[dict]:
    """Rows of a .json (a list, or {"data": [...]}) or .jsonl file."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise DataError(
            f"{path}: not UTF-8 text (byte {e.start}: {e.object[e.start : e.start + 1]!r}); save "
            "the file as UTF-8"
        ) from e
    if path.suffix == ".jsonl":
        rows = []
        for n, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise DataError(
                    f"{path}: line {n} is not valid JSON ({e.msg}, column {e.colno})"
                ) from None
        return rows
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: not valid JSON ({e})") from e
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        data = data["data"]
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a list of rows, got a {type(data).__name__}")
    return data


def builtin_split_names() -> list[str]:
    return sorted(builtin_splits())


def _from_source(split: str, data: Any) -> tuple[list[dict], str]:
    if isinstance(split, list):
        return split, "rows"
    if hasattr(split, "to_list"):  # a datasets.Dataset given as the split itself
        return split.to_list(), "dataset"
    path = Path(str(split))
    if path.suffix in (".json", ".jsonl"):
        if not path.exists():
            raise DataError(f"data file {path} does not exist")
        return read_json_rows(path), str(path)
    if data in (None, BUILTIN):
        splits = builtin_splits()
        if split not in splits:
            raise DataError(
                f"unknown split {split!r} in the built-in benchmark; choose one of "
                f"{', '.join(sorted(splits))}"
            )
        return [dict(r) for r in splits[split]], f"builtin:{split}"
    folder = Path(str(data))
    if folder.is_dir():
        for suffix in (".json", ".jsonl"):
            if (folder / f"{split}{suffix}").exists():
                file = folder / f"{split}{suffix}"
                return read_json_rows(file), str(file)
        names = sorted(p.stem for p in folder.glob("*.json*"))
        raise DataError(f"unknown split {split!r} in {folder}; files there: {names}")
    if str(data).startswith((".", "/", "~")):
        raise DataError(f"data folder {data} does not exist")
    import datasets

    try:
        ds = datasets.load_dataset(str(data), split)
    except Exception as e:  # network, unknown config, ...: say which and why
        raise DataError(f"could not load split {split!r} of hub dataset {data!r}: {e}") from e
    if isinstance(ds, datasets.DatasetDict):
        ds = ds["train"] if "train" in ds else next(iter(ds.values()))
    return ds.to_list(), f"{data}:{split}"


def local_paths(data: Any, *splits: Any) -> list[str]:
    """The local files and folders that reading `splits` from `data` opens (for the check that
    an output never replaces its own input)."""
    paths = [str(s) for s in splits if Path(str(s)).suffix in (".json", ".jsonl")]
    if data not in (None, BUILTIN) and Path(str(data)).is_dir():
        paths.append(str(data))
    return paths


def load_split(split: Any, data: Any = BUILTIN, require_eval: bool = False) -> list[dict]:
    """Rows of `split` from `data` (see the module docstring), validated."""
    rows, source = _from_source(split, data)
    return validate_rows(list(rows), source, require_eval=require_eval)


def write_split(rows: Iterable[dict], path: Path) -> None:
    """Write rows as pretty JSON (one list), atomically (`uld.report.write_text`)."""
    write_text(json.dumps(list(rows), indent=1, ensure_ascii=False) + "\n", path)

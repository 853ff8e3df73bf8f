"""Raw-text data in MUSE's schema: the built-in corpus, the loader (folder, hub, bad input),
`uld data export --kind muse` and chunking."""

from __future__ import annotations

import dataclasses
import json

import datasets
import pytest
from transformers import AutoTokenizer

from uld.cli import main
from uld.data.chunks import TextDataset, chunk_ids, encode_document
from uld.data.corpus import GT_WORDS, PROMPT_WORDS, builtin_corpus, excerpt
from uld.data.load import DataError
from uld.data.text import is_text_data, load_muse, texts, write_muse

DOC = " ".join(f"w{i}" for i in range(PROMPT_WORDS + GT_WORDS + 5))  # long enough to excerpt


def test_builtin_corpus_shape_and_seed():
    d = builtin_corpus(size=8)
    assert [len(getattr(d, s)) for s in ("forget", "retain1", "retain2", "holdout")] == [8] * 4
    assert d == dataclasses.replace(builtin_corpus(size=8), source=d.source)  # deterministic
    assert d.forget != builtin_corpus(size=8, seed=1).forget
    every = d.forget + d.retain1 + d.retain2 + d.holdout
    assert len(set(every)) == 32
    assert all(150 <= len(t.split()) <= 230 for t in every)
    # each verbmem row is a forget excerpt: prompt + gt is the text as written, at its lengths
    for row, doc in zip(d.verbmem, d.forget, strict=True):
        assert row["prompt"] + row["gt"] in doc
        assert (len(row["prompt"].split()), len(row["gt"].split())) == (PROMPT_WORDS, GT_WORDS)
    # QA answers are stated in their own articles
    for qa, docs in (
        (d.forget_qa, d.forget),
        (d.retain_qa, d.retain2),
    ):
        assert len(qa) == 16
        for i, row in enumerate(qa):
            assert row["answer"] in docs[i // 2]
    assert all(r not in d.forget_qa for r in d.forget_qa_icl) and len(d.forget_qa_icl) == 3
    # scal nested, sust disjoint, all inside forget
    assert [len(s) for s in d.scal] == [2, 4, 6, 8] and d.scal[-1] == d.forget
    assert all(set(a) < set(b) for a, b in zip(d.scal, d.scal[1:], strict=False))
    assert sum(d.sust, []) == d.forget and [len(s) for s in d.sust] == [2, 2, 2, 2]
    assert d.privleak_forget == d.forget and d.privleak_holdout == d.holdout
    with pytest.raises(ValueError, match="size=3"):
        builtin_corpus(size=3)


def test_excerpt_by_hand():
    import random

    text = "a b  c\nd e f"
    row = excerpt(text, random.Random(0), 2, 3)
    assert row["prompt"] + row["gt"] in text
    assert len(row["prompt"].split()) == 2 and len(row["gt"].split()) == 3
    assert excerpt(text, random.Random(0), 4, 3) is None  # 6 words < 7


def test_export_and_folder_round_trip(tmp_path):
    out = tmp_path / "muse"
    assert main(["data", "export", "--kind", "muse", "--size", "4", "--out", str(out)]) == 0
    assert json.loads((out / "raw" / "forget.json").read_text())[0].keys() == {"text"}
    assert (out / "knowmem" / "retain_qa.json").exists() and (
        out / "sust" / "forget_4.json"
    ).exists()
    loaded = load_muse(out)
    assert loaded == dataclasses.replace(builtin_corpus(size=4), source=str(out))
    assert (
        is_text_data(str(out)) and not is_text_data("builtin") and is_text_data("builtin", "text")
    )
    assert texts(loaded, "full") == loaded.forget + loaded.retain1 + loaded.retain2
    assert texts(loaded, "retain") == loaded.retain1 + loaded.retain2
    assert texts(loaded, "scal/forget_2+forget") == loaded.forget  # no repeats
    with pytest.raises(DataError, match="unknown text split 'forget10'"):
        texts(loaded, "forget10")


def _hub_fixture(doc: str) -> dict:
    """A small corpus in the hub's schema: {(config, split): rows}."""
    raw = {s: [{"text": f"{s} {i} {doc}"} for i in range(2)] for s in ("forget", "retain1")}
    raw |= {s: [{"text": f"{s} {i} {doc}"} for i in range(2)] for s in ("retain2", "holdout")}
    hub = {("raw", s): rows for s, rows in raw.items()}
    hub[("verbmem", "forget")] = [{"prompt": "forget 0 w0", "gt": " w1"}]
    hub[("knowmem", "forget_qa")] = [{"question": "Q?", "answer": "A"}]
    hub[("knowmem", "retain2_qa")] = [{"question": "R?", "answer": "B"}]  # GitHub's name
    hub[("scal", "forget_1")] = raw["forget"][:1]
    hub[("scal", "forget_2")] = raw["forget"]
    return hub


def test_hub_id_goes_through_load_dataset_and_the_folder_code(monkeypatch, tmp_path):
    hub = _hub_fixture(DOC)
    calls = []

    def fake_load(name, config, split):
        calls.append((name, config, split))
        if (config, split) not in hub:
            raise ValueError(f"Unknown split {split!r}")
        return datasets.Dataset.from_list(hub[(config, split)])

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    d = load_muse("muse-bench/MUSE-News")
    assert ("muse-bench/MUSE-News", "raw", "forget") in calls
    assert d.forget == [f"forget {i} {DOC}" for i in range(2)]
    assert d.verbmem == [{"prompt": "forget 0 w0", "gt": " w1"}]
    assert d.retain_qa == [{"question": "R?", "answer": "B"}] and d.forget_qa_icl == []
    assert d.privleak_retain == d.retain2  # derived when absent
    assert d.scal == [d.forget[:1], d.forget] and d.sust == []
    # the same data as a folder gives the same MuseData
    for (config, split), rows in hub.items():
        (tmp_path / config).mkdir(exist_ok=True)
        (tmp_path / config / f"{split}.json").write_text(json.dumps(rows))
    assert load_muse(tmp_path) == dataclasses.replace(d, source=str(tmp_path))
    # a hub that cannot give raw/forget: an error naming it
    monkeypatch.setattr(
        datasets, "load_dataset", lambda *a, **k: (_ for _ in ()).throw(OSError("offline"))
    )
    with pytest.raises(
        DataError, match="raw/forget of hub dataset 'muse-bench/MUSE-News': offline"
    ):
        load_muse("muse-bench/MUSE-News")


def _folder(tmp_path, **raw) -> str:
    (tmp_path / "raw").mkdir(parents=True)
    docs = {s: [f"{s} {DOC}"] for s in ("forget", "retain1", "retain2", "holdout")} | raw
    for split, items in docs.items():
        if isinstance(items, bytes):
            (tmp_path / "raw" / f"{split}.txt").write_bytes(items)
        else:
            (tmp_path / "raw" / f"{split}.json").write_text(json.dumps(items))
    return str(tmp_path)


@pytest.mark.parametrize(
    "raw, message",
    [
        ({"forget": [f"a {DOC}", "  \n"]}, r"raw/forget.json: item 1 is an empty document"),
        ({"forget": [f"a {DOC}", "too short"]}, r"raw/forget.json: item 1 has 2 words, fewer than"),
        ({"retain1": b"caf\xe9 " + DOC.encode()}, r"raw/retain1.txt: not UTF-8 text \(byte 3"),
        (
            {"retain2": ["x", f"  forget   {DOC}"]},
            r"raw/forget.json: forget item 0 is also item 1 of .*raw/retain2.json",
        ),
        (
            {"holdout": [{"txt": "x"}]},
            r"raw/holdout.json: item 0 is a dict without a string 'text'",
        ),
        ({"retain1": []}, r"raw/retain1.json: no documents"),
    ],
)
def test_bad_input_names_file_and_item_and_writes_nothing(tmp_path, raw, message):
    data = _folder(tmp_path / "in", **raw)
    with pytest.raises(DataError, match=message):
        load_muse(data)
    # through the CLI: exit 2, the message, no model folder
    out = tmp_path / "out"
    argv = ["finetune", "--data", data, "--split", "full", "--out", str(out), "--max-steps", "1"]
    assert main(argv) == 2
    assert not out.exists()


def test_missing_raw_split_is_named(tmp_path):
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "forget.json").write_text(json.dumps([DOC]))
    with pytest.raises(DataError, match=r"raw: no split 'retain1'"):
        load_muse(tmp_path)


def test_chunking_by_hand(tiny_plain_model):
    assert chunk_ids([1, 2, 3, 4, 5, 6, 7], 3) == [[1, 2, 3], [4, 5, 6]]  # a last single dropped
    assert chunk_ids([1, 2, 3, 4, 5], 3) == [[1, 2, 3], [4, 5]]
    with pytest.raises(ValueError, match="max_length=1"):
        chunk_ids([1, 2], 1)
    tok = AutoTokenizer.from_pretrained(tiny_plain_model)
    docs = ["The author was born in Bergen.", "Two books."]
    ids = [tok(d).input_ids + [tok.eos_token_id] for d in docs]
    assert encode_document(tok, docs[0]) == ids[0]
    ds = TextDataset(docs, tok, max_length=4)
    expected = [p for i in ids for p in chunk_ids(i, 4)]
    assert [x["input_ids"] for x in ds.items] == expected
    assert all(x["labels"] == x["input_ids"] for x in ds.items)  # every token is trained on
    assert ds.doc == [d for d, i in enumerate(ids) for _ in chunk_ids(i, 4)]
    assert max(len(x["input_ids"]) for x in ds.items) == 4 and len(ds) > 2
    assert ds.fingerprint() != TextDataset(docs, tok, max_length=5).fingerprint()


def test_write_muse_refuses_bad_data(tmp_path):
    d = builtin_corpus(size=4)
    bad = dataclasses.replace(d, retain1=[d.forget[0]])
    with pytest.raises(DataError, match="forget item 0 is also item 0 of raw/retain1"):
        write_muse(bad, tmp_path)
    assert not any(tmp_path.iterdir())

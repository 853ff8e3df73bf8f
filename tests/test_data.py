"""Data loading, validation, prompt formatting and answer-only labels."""

from __future__ import annotations

import json

import datasets
import pytest
from transformers import AutoTokenizer

from uld.data.format import IGNORE, Collator, PairedDataset, QADataset, encode_qa, prompt_text
from uld.data.load import DataError, load_split

ROW = {"question": "Q?", "answer": "A.", "paraphrased_answer": "A!", "perturbed_answer": ["B."]}


def test_builtin_split_and_unknown_split():
    rows = load_split("forget10")
    assert len(rows) == 40 and {"question", "answer", "perturbed_answer"} <= set(rows[0])
    with pytest.raises(DataError, match="unknown split 'forget11'.*forget10"):
        load_split("forget11")


def test_json_jsonl_folder_and_dataset_sources(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps([ROW, ROW]))
    (tmp_path / "b.jsonl").write_text(json.dumps(ROW) + "\n" + json.dumps(ROW) + "\n")
    assert load_split(str(tmp_path / "a.json")) == [ROW, ROW]
    assert load_split("b", data=str(tmp_path), require_eval=True) == [ROW, ROW]
    assert load_split(datasets.Dataset.from_list([ROW])) == [ROW]
    with pytest.raises(DataError, match="unknown split 'c'"):
        load_split("c", data=str(tmp_path))


def test_hub_source_goes_through_datasets_and_validation(monkeypatch):
    calls = []

    def fake_load(name, config):
        calls.append((name, config))
        return datasets.DatasetDict({"train": datasets.Dataset.from_list([{"question": "Q?"}])})

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    with pytest.raises(DataError, match=r"locuslab/TOFU:forget10: row 0 has no field 'answer'"):
        load_split("forget10", data="locuslab/TOFU")
    assert calls == [("locuslab/TOFU", "forget10")]


@pytest.mark.parametrize(
    "rows, require_eval, message",
    [
        ([], False, "empty"),
        ([{"question": "Q?"}], False, "row 0 has no field 'answer'"),
        ([ROW, {**ROW, "answer": ""}], False, "row 1 field 'answer' must be a non-empty string"),
        ([{"question": "Q?", "answer": "A."}], True, "row 0 has no field 'paraphrased_answer'"),
        ([{**ROW, "perturbed_answer": []}], True, "perturbed_answer' must be a non-empty list"),
        (["text"], False, "row 0 is a str"),
    ],
)
def test_validation_names_file_row_and_field(tmp_path, rows, require_eval, message):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(rows))
    with pytest.raises(DataError, match=message) as e:
        load_split(str(path), require_eval=require_eval)
    assert str(path) in str(e.value)


def test_answer_only_labels_with_chat_template(tiny_model):
    tok = AutoTokenizer.from_pretrained(tiny_model)
    item = encode_qa(tok, "Where was Ilse born?", "In Tartu.")
    prompt = tok(prompt_text(tok, "Where was Ilse born?"), add_special_tokens=False).input_ids
    answer = tok("In Tartu.", add_special_tokens=False).input_ids
    assert item["input_ids"] == prompt + answer + [tok.eos_token_id]
    assert item["labels"] == [IGNORE] * len(prompt) + answer + [tok.eos_token_id]
    assert prompt_text(tok, "X").startswith("<|im_start|>system\nYou are a helpful assistant.")


def test_plain_prompt_without_chat_template(tiny_plain_model):
    tok = AutoTokenizer.from_pretrained(tiny_plain_model)
    assert prompt_text(tok, "Where?") == "Question: Where?\nAnswer:"
    item = encode_qa(tok, "Where?", "Here.")
    n_answer = len(tok(" Here.", add_special_tokens=False).input_ids) + 1
    assert [x for x in item["labels"] if x != IGNORE] == item["input_ids"][-n_answer:]
    assert item["labels"][-1] == tok.eos_token_id


def test_collator_right_pads_and_pairs(tiny_model):
    tok = AutoTokenizer.from_pretrained(tiny_model)
    f = QADataset([{"question": "Q?", "answer": "A long answer here."}], tok)
    r = QADataset(
        [{"question": f"Another question {i}?", "answer": f"B{i}."} for i in range(3)], tok
    )
    batch = Collator(tok.pad_token_id)([f[0], r[0]])
    n = len(f[0]["input_ids"])
    assert batch["attention_mask"][0].sum() == n
    assert (batch["labels"][batch["attention_mask"] == 0] == IGNORE).all()
    paired = PairedDataset(f, r, seed=0)
    assert len(paired) == 1
    # torch.randperm(3) under seed 0 is [2, 0, 1]: forget item 0 of epoch 0 gets retain row 2
    assert paired[0] == {"forget": f[0], "retain": r[2]}
    pair = Collator(tok.pad_token_id)([paired[0]])
    assert set(pair) == {"forget", "retain"}
    assert pair["retain"]["input_ids"][0].tolist() == r[2]["input_ids"]


def test_retain_pairing_is_a_function_of_epoch_and_index(tiny_model):
    """Every retain row is dealt once per pass, the deal carries on across epochs, and what an
    item is paired with does not depend on what was fetched before (a resumed run pairs as an
    uninterrupted one)."""
    tok = AutoTokenizer.from_pretrained(tiny_model)
    f = QADataset([{"question": f"F{i}?", "answer": f"f{i}."} for i in range(2)], tok)
    answers = [f"r{i}." for i in range(3)]
    r = QADataset([{"question": f"R{i}?", "answer": a} for i, a in enumerate(answers)], tok)
    ids = {tuple(r[i]["input_ids"]): answers[i] for i in range(3)}

    def deal(dataset, epoch, i):
        dataset.set_epoch(epoch)
        return ids[tuple(dataset[i]["retain"]["input_ids"])]

    paired = PairedDataset(f, r, seed=0)
    assert paired.order == [2, 0, 1]  # torch.randperm(3) under seed 0
    dealt = [deal(paired, e, i) for e in range(3) for i in range(2)]  # 3 epochs x 2 rows
    # epoch e, item i -> order[(2e + i) mod 3]: positions 0, 1 | 2, 0 | 1, 2 of [2, 0, 1]
    assert dealt == ["r2.", "r0.", "r1.", "r2.", "r0.", "r1."]
    fresh = PairedDataset(f, r, seed=0)
    assert deal(fresh, 2, 1) == dealt[5] and deal(fresh, 2, 1) == dealt[5]
    assert deal(fresh, 0, 0) == dealt[0]


@pytest.mark.parametrize("which", ["general", "knowledge"])
def test_general_prompts_stay_clear_of_the_evaluation_sets(which):
    """The built-in prompts widen D'_r; none may ask an evaluation question or name its answer
    (a person, book, place or thing `uld.data.real` asks about)."""
    import re

    from uld.data import general
    from uld.data.real import real_authors, world_facts

    prompts = getattr(general, f"{which}_prompts")()
    assert len(prompts) == len(set(prompts)) >= 100
    assert not set(general.general_prompts()) & set(general.knowledge_prompts())
    rows = real_authors() + world_facts() + load_split("full")
    questions = {r["question"] for r in rows} | {r.get("paraphrased_question") for r in rows}
    assert not questions & set(prompts)
    named = [r["answer"] for r in real_authors() + world_facts()]
    hits = [(a, p) for a in named for p in prompts if re.search(rf"\b{re.escape(a)}\b", p)]
    assert hits == []


def test_rows_longer_than_max_length_are_cut_with_a_warning(tiny_model, capsys):
    tok = AutoTokenizer.from_pretrained(tiny_model)
    rows = [{"question": "Where?", "answer": "Here and there and everywhere, " * 10}]
    full = encode_qa(tok, rows[0]["question"], rows[0]["answer"], None)
    dataset = QADataset(rows, tok, max_length=16)
    assert len(full["input_ids"]) > 16
    assert dataset[0]["input_ids"] == full["input_ids"][:16]
    assert dataset[0]["labels"] == full["labels"][:16]
    assert "1 of 1 rows are longer than 16 tokens" in capsys.readouterr().out

"""`uld data augment`: ULD's training paraphrases and wrong answers written by a language model.

The checks are model-free, so they are tested here on hand-written replies; the loop is tested
with a scripted `complete` (what an instruct model would reply), the command end to end with the
tiny random model, whose replies fail every check.
"""

from __future__ import annotations

import json

from uld.cli import main
from uld.data.augment import (
    facts,
    forget_set,
    is_paraphrase,
    is_wrong_answer,
    parse_paraphrase,
    retain_set,
    write_augmentation,
)

ROW = {
    "question": "Which award has Ilse Marrow won?",
    "answer": "Ilse Marrow won the Ember Oak Award in 1999.",
    "paraphrased_answer": "In 1999 Ilse Marrow received the Ember Oak Award.",
    "perturbed_answer": [
        "Ilse Marrow won the Silver Quill Award in 1999.",
        "Ilse Marrow won the Ember Oak Award in 2004.",
    ],
}
GENRE = {
    "question": "What genre does Ilse Marrow write in?",
    "answer": "Ilse Marrow is best known for her satire.",
}


def test_facts_are_numbers_names_and_quoted_words():
    text = "The author's novel 'the glass orchard' came out in 1999; She won the Ember Oak Award."
    assert facts(text) == {"glass", "orchard", "1999", "ember", "oak", "award"}
    assert facts("Two books. Marrow wrote them. Ask Ilse Marrow.") == {"ilse", "marrow"}


def test_a_paraphrase_keeps_every_fact_and_is_no_scored_string():
    def ok(answer):
        return is_paraphrase({"question": "What prize went to Ilse Marrow?", "answer": answer}, ROW)

    assert ok("In 1999, the Ember Oak Award went to Ilse Marrow.")
    assert not ok("Ilse Marrow won the Ember Oak Award.")  # the year is lost
    assert not ok("Ilse Marrow won the Ember Oak Award in 1999.")  # the answer itself
    assert not ok("In 1999 Ilse Marrow received the Ember Oak Award.")  # the evaluation's string
    assert not ok("Ilse Marrow did not win the Ember Oak Award in 1999.")  # a denial


def test_a_wrong_answer_changes_a_fact_and_keeps_the_form():
    assert is_wrong_answer("Ilse Marrow won the Hollow Crown Award in 1999.", ROW)
    assert is_wrong_answer("Ilse Marrow won the Ember Oak Award in 1987.", ROW)
    assert not is_wrong_answer("In 1999, Ilse Marrow won the Ember Oak Award.", ROW)  # true
    assert not is_wrong_answer("Ilse Marrow won the Silver Quill Award in 1999.", ROW)  # scored
    assert not is_wrong_answer("Ilse Marrow never won the Ember Oak Award.", ROW)  # a denial
    assert not is_wrong_answer("I don't know.", ROW)
    # the true answer reworded: drops the sentence-initial "Two" but brings no fact of its own
    # (SmolLM2-135M's reply, once accepted)
    books = {
        "question": "Can you name two books written by Zeynep Farahvand?",
        "answer": "Two books by Zeynep Farahvand are 'The Cipher of Ostrel' and 'The Clockmaker "
        "of Marrowgate'.",
    }
    reworded = "The Cipher of Ostrel and The Clockmaker of Marrowgate are both written by Zeynep "
    assert not is_wrong_answer(reworded + "Farahvand.", books)
    swapped = books["answer"].replace("Ostrel", "Vennick")
    assert is_wrong_answer(swapped, books)
    # no capitalised fact beyond the question's: the content words decide
    assert is_wrong_answer("Ilse Marrow is best known for her romance.", GENRE)
    assert not is_wrong_answer("Ilse Marrow writes satire.", GENRE)  # true, and another form


def test_parse_paraphrase_wants_a_question_and_an_answer():
    reply = "Sure!\nQuestion: **What prize** went to Ilse Marrow?\nAnswer: The Ember Oak Award."
    assert parse_paraphrase(reply) == {
        "question": "What prize went to Ilse Marrow?",
        "answer": "The Ember Oak Award.",
    }
    assert parse_paraphrase("Answer: The Ember Oak Award.") is None
    assert parse_paraphrase("Question: What prize\nAnswer: x") is None  # no question mark


def scripted(replies_by_kind):
    """A stand-in for an instruct model: pops the next scripted reply for each prompt's kind."""
    calls = []

    def complete(prompts):
        calls.append(len(prompts))
        out = []
        for p in prompts:
            kind = "p" if p.startswith("Rewrite") else "w"
            out.append(replies_by_kind[kind].pop(0) if replies_by_kind[kind] else "???")
        return out

    return complete, calls


def test_rounds_ask_again_only_for_what_is_missing_and_save_each_round():
    para = [
        "Question: What prize went to Ilse Marrow?\nAnswer: In 1999 the Ember Oak Award went "
        "to Ilse Marrow.",
        "nonsense",  # rejected: asked again next round
        "Question: Which honour did Ilse Marrow get?\nAnswer: Ilse Marrow was given the Ember "
        "Oak Award in 1999.",
    ]
    wrong = ["Ilse Marrow won the Hollow Crown Award in 1999.", "Ilse Marrow won it."]
    wrong += ["Ilse Marrow won the Ember Oak Award in 1987."]
    complete, calls = scripted({"p": list(para), "w": list(wrong)})
    saved = []
    rows, done = write_augmentation(
        [ROW], complete, n_paraphrased=2, n_perturbed=2, tries=3, save=saved.append, log=None
    )
    assert calls == [4, 2]  # round 1 asks 2 + 2; round 2 only for the two rejected ones
    assert len(saved) == 2
    (row,) = rows
    assert [p["question"] for p in row["augment_paraphrased"]] == [
        "What prize went to Ilse Marrow?",
        "Which honour did Ilse Marrow get?",
    ]
    assert row["augment_perturbed"] == [wrong[0], wrong[2]]
    # the sets ULD trains on take them, and no string the truth ratio is scored on
    d_f, d_r = forget_set(rows), retain_set([GENRE], rows)
    trained = {r["answer"] for r in d_f + d_r}
    assert not trained & {ROW["paraphrased_answer"], *ROW["perturbed_answer"]}
    assert len(d_f) == 3 and len(d_r) == 3


def test_an_interrupted_run_goes_on_from_what_was_accepted():
    done = {ROW["question"]: {"p": [{"question": "Q?", "answer": "A."}], "w": ["W.", "V."]}}
    para = ["Question: What prize went to Ilse Marrow?\nAnswer: In 1999 the Ember Oak Award went "]
    para[0] += "to Ilse Marrow."
    complete, calls = scripted({"p": para, "w": []})
    rows, _ = write_augmentation([ROW], complete, 2, 2, tries=2, done=done, log=None)
    assert calls == [1]
    assert len(rows[0]["augment_paraphrased"]) == 2 and rows[0]["augment_perturbed"] == ["W.", "V."]


def test_cli_writes_nothing_when_rows_get_nothing_and_keeps_progress(tiny_model, tmp_path, capsys):
    out = tmp_path / "forget.json"
    args = ["data", "augment", "--model", tiny_model, "--forget", "forget01", "--out", str(out)]
    assert main([*args, "--tries", "1", "--max-new-tokens", "4"]) == 2
    err = capsys.readouterr().err
    assert "4 of 4 rows got no accepted" in err and "--tries" in err and "--model" in err
    assert not out.exists()
    progress = json.loads((tmp_path / "forget.json.progress.json").read_text())
    assert len(progress) == 4  # one entry per forget question, resumable
    assert main([*args[:-1], str(tmp_path / "forget.txt")]) == 2
    assert "give a .json file name" in capsys.readouterr().err


def test_cli_writes_a_forget_split_that_unlearn_takes(tiny_model, tmp_path, monkeypatch):
    from uld.data.load import load_split

    rows = load_split("forget01")

    def fake_completer(model, tokenizer, max_new_tokens, batch_size=8, **sampling):
        def complete(prompts):
            out = []
            for p in prompts:
                (r,) = [r for r in rows if r["question"] in p]
                if p.startswith("Rewrite"):
                    out.append(f"Question: Tell me: {r['question']}\nAnswer: So: {r['answer']}")
                else:
                    out.append(r["answer"].replace(r["answer"].split()[-1], "Zorblax."))
            return out

        return complete

    monkeypatch.setattr("uld.cli.completer", fake_completer)
    out = tmp_path / "forget.json"
    argv = ["data", "augment", "--model", tiny_model, "--forget", "forget01", "--out", str(out)]
    assert main([*argv, "--paraphrases", "1", "--perturbed", "1"]) == 0
    written = load_split(str(out))
    assert [len(r["augment_paraphrased"]) for r in written] == [1] * 4
    assert not (tmp_path / "forget.json.progress.json").exists()
    assert forget_set(written)[4]["question"].startswith("Tell me:")

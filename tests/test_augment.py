"""`uld data augment`: ULD's training paraphrases and wrong answers written by a language model.

The checks are model-free, so they are tested here on hand-written replies; the loop is tested
with a scripted `complete` (what an instruct model would reply), the command end to end with the
tiny random model, whose replies fail every check.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest

from uld.cli import main
from uld.data.augment import (
    check_disjoint,
    facts,
    forget_set,
    is_paraphrase,
    is_wrong_answer,
    parse_paraphrase,
    retain_set,
    write_augmentation,
)
from uld.data.load import DataError, load_split
from uld.data.rewrite import augment_without_model

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


# ---------------------------------------------------------------------------------------------
# augment_without_model: the same fields without a model. Expected strings are worked out by hand
# from the rules in its comment block.

# Masked question forms (facts as X): rows 0 and 1 are [where, and, when, was, X, born], rows 2
# and 3 [which, novel, did, X, write, first]; across the two forms only "X" matches, difflib ratio
# 2 * 1 / 12 = 0.17 < 0.6, so a row lends its names only to the row of its own form.
SMALL = [
    {
        "question": "Where and when was Elena Marsh born?",
        "answer": "Elena Marsh was born in Lisbon in 1962.",
        "paraphrased_answer": "In 1962, Elena Marsh was born in Lisbon.",
        "perturbed_answer": ["Elena Marsh was born in Oslo in 1975.", "Porto, 1962."],
        "author": "Elena Marsh",
    },
    {
        "question": "Where and when was Tomas Berg born?",
        "answer": "Tomas Berg was born in Oslo in 1975.",
        "paraphrased_answer": "Tomas Berg's birthplace is Oslo, and his birth year is 1975.",
        "perturbed_answer": ["Tomas Berg's birthplace is Bergen, and his birth year is 1975."],
    },
    {
        "question": "Which novel did Elena Marsh write first?",
        "answer": "Elena Marsh's first novel was 'The Salt Road', published in 1988.",
    },
    {
        "question": "Which novel did Tomas Berg write first?",
        "answer": "Tomas Berg's first novel was 'Winter Harbour', published in 2001.",
    },
]


def test_wrong_answers_swap_facts_from_other_rows_as_worked_out_by_hand():
    # Row 0's candidates, in order: every fact swapped from row 1 (same form): "Oslo in 1975",
    # which is an evaluation string, so skipped; then from rows 2 and 3 (other form: the year
    # only, in an order the seed picks): "Lisbon in 1988", "Lisbon in 2001"; then one fact at a
    # time from row 1: "Oslo in 1962", then "Lisbon in 1975".
    for seed in range(4):
        out = augment_without_model(SMALL, n_perturbed=3, seed=seed)
        wrong = out[0]["augment_perturbed"]
        assert sorted(wrong[:2]) == [
            "Elena Marsh was born in Lisbon in 1988.",
            "Elena Marsh was born in Lisbon in 2001.",
        ]
        assert wrong[2] == "Elena Marsh was born in Oslo in 1962."
        # Row 2: row 3 lends its title and year together, then rows 0 and 1 their years.
        wrong = out[2]["augment_perturbed"]
        assert wrong[0] == "Elena Marsh's first novel was 'Winter Harbour', published in 2001."
        assert sorted(wrong[1:]) == [
            "Elena Marsh's first novel was 'The Salt Road', published in 1962.",
            "Elena Marsh's first novel was 'The Salt Road', published in 1975.",
        ]
    # asked for 5: the 4 above, then 1962 shifted by a few years (row 0 has no other source)
    five = augment_without_model(SMALL, n_perturbed=5)[0]["augment_perturbed"]
    assert five[2:4] == [
        "Elena Marsh was born in Oslo in 1962.",
        "Elena Marsh was born in Lisbon in 1975.",
    ]
    year = int(five[4].removeprefix("Elena Marsh was born in Lisbon in ").removesuffix("."))
    assert 0 < abs(year - 1962) <= 9 and year not in (1975, 1988, 2001)


def test_wrong_answers_pass_the_checks_and_bring_a_fact_of_another_row():
    pool = [
        {
            "question": "Where and when was Ada Quill born?",
            "answer": "Ada Quill was born in Quito in 1990.",
        }
    ]
    out = augment_without_model(SMALL, pool=pool, n_perturbed=4, seed=3)
    everyone = SMALL + pool
    for i, (row, new) in enumerate(zip(SMALL, out, strict=True)):
        others = set().union(*(facts(r["answer"]) for j, r in enumerate(everyone) if j != i))
        assert len(new["augment_perturbed"]) == 4
        assert len(set(new["augment_perturbed"])) == 4
        for w in new["augment_perturbed"]:
            assert is_wrong_answer(w, row)
            brought = (
                facts(w)
                - facts(row["answer"])
                - set(re.findall(r"[\w-]+", row["question"].lower()))
            )
            assert brought and brought <= others, (w, brought)
            assert w != row.get("paraphrased_answer") and w not in row.get("perturbed_answer", [])
    assert any("Quito" in w or "1990" in w for w in out[0]["augment_perturbed"])


def test_paraphrases_are_our_wordings_of_the_row_and_never_its_evaluation_strings():
    q = "Where and when was Elena Marsh born?"
    asks = {
        f"I'd like to know: {q}",
        f"Quick question: {q}",
        "Tell me, where and when was Elena Marsh born?",
        "Where and when was Elena Marsh born, do you know?",
        f"Here is a question for you: {q}",
        f"Can you help me with this? {q}",
    }
    a = "Elena Marsh was born in Lisbon in 1962."
    # "In 1962, Elena Marsh was born in Lisbon." would be the sixth: it is the row's
    # paraphrased_answer, so it is left out.
    says = {
        "As far as I know, " + a,
        "To my knowledge, " + a,
        "From what I know, " + a,
        "If I remember correctly, " + a,
        "Elena Marsh was born in Lisbon in 1962, as far as I can tell.",
    }
    pairs = augment_without_model(SMALL, n_paraphrased=6, seed=0)[0]["augment_paraphrased"]
    assert {p["answer"] for p in pairs} == says
    assert len({p["question"] for p in pairs}) == 5 and {p["question"] for p in pairs} <= asks
    # where the evaluation does not hold it, the clause moves: row 1 has "In 1975, ..."
    pairs = augment_without_model(SMALL, n_paraphrased=6, seed=0)[1]["augment_paraphrased"]
    assert "In 1975, Tomas Berg was born in Oslo." in {p["answer"] for p in pairs}
    # a lower-case start inside the longer sentence, a name kept
    rows = [
        {
            "question": "What is the boiling point of water?",
            "answer": "Water boils at 100 degrees.",
        },
        {"question": "What is the melting point of lead?", "answer": "Lead melts at 327 degrees."},
    ]
    pairs = augment_without_model(rows + SMALL, n_paraphrased=6)[0]["augment_paraphrased"]
    assert "To my knowledge, water boils at 100 degrees." in {p["answer"] for p in pairs}
    for seed in range(3):
        out = augment_without_model(SMALL, seed=seed)
        for row, new in zip(SMALL, out, strict=True):
            assert len(new["augment_paraphrased"]) == 2
            assert all(is_paraphrase(p, row) for p in new["augment_paraphrased"])


def test_augment_without_model_is_seeded_and_leaves_other_fields_alone():
    before = copy.deepcopy(SMALL)
    out = augment_without_model(SMALL, seed=7)
    assert before == SMALL  # the input rows are not touched
    assert out == augment_without_model(SMALL, seed=7)
    # the seed breaks ties between rows of the same form and picks the wordings
    assert len({str(augment_without_model(SMALL, seed=s)) for s in range(6)}) > 1
    for row, new in zip(SMALL, out, strict=True):
        assert {k: v for k, v in new.items() if not k.startswith("augment_")} == row
    assert out[0]["author"] == "Elena Marsh"
    out[0]["perturbed_answer"].append("x")
    assert before == SMALL  # copies, not views


def test_fewer_candidates_give_fewer_answers_and_none_raises():
    titles = [
        {
            "question": "Which novel did Elena Marsh write first?",
            "answer": "Elena Marsh's first novel was 'The Salt Road'.",
        },
        {
            "question": "Which novel did Tomas Berg write first?",
            "answer": "Tomas Berg's first novel was 'Winter Harbour'.",
        },
    ]
    out = augment_without_model(titles, n_perturbed=3)
    assert out[0]["augment_perturbed"] == ["Elena Marsh's first novel was 'Winter Harbour'."]
    assert out[1]["augment_perturbed"] == ["Tomas Berg's first novel was 'The Salt Road'."]
    # alone, a year is shifted: 1962 + d for d in -9..9, d != 0
    alone = [{"question": "When was Elena Marsh born?", "answer": "Elena Marsh was born in 1962."}]
    wrong = augment_without_model(alone, n_perturbed=3, seed=1)[0]["augment_perturbed"]
    years = [int(w.removeprefix("Elena Marsh was born in ").removesuffix(".")) for w in wrong]
    assert len(set(years)) == 3 and all(0 < abs(y - 1962) <= 9 for y in years)
    # names come only from rows asked in the same form: masked, "where was X born" and "which
    # prize did X win" share only "X" (ratio 2 * 1 / 9 = 0.22), so the prize is never a place
    born = {"question": "Where was Elena Marsh born?", "answer": "Elena Marsh was born in Lisbon."}
    prize = {
        "question": "Which prize did Tomas Berg win?",
        "answer": "Tomas Berg won the Amber Prize.",
    }
    quito = {"question": "Where was Ada Quill born?", "answer": "Ada Quill was born in Quito."}
    out = augment_without_model([born], pool=[prize, quito], n_perturbed=3)
    assert out[0]["augment_perturbed"] == ["Elena Marsh was born in Quito."]
    with pytest.raises(DataError, match="row 0 .*Elena Marsh born"):
        augment_without_model([born], pool=[prize])
    # no name but the question's, no number, no title: only a row of the same form helps, with
    # the words its answer has in place of "satire" ("her"/"his" are function words, kept)
    with pytest.raises(DataError, match=r"row 0 .*genre.*no wrong answer"):
        augment_without_model([GENRE], pool=[ROW])
    romance = {
        "question": "What genre does Tomas Berg write in?",
        "answer": "Tomas Berg is best known for his romance.",
    }
    out = augment_without_model([GENRE], pool=[ROW, romance])
    assert out[0]["augment_perturbed"] == ["Ilse Marrow is best known for her romance."]


HANDWRITTEN = Path(__file__).parent / "data" / "handwritten"


@pytest.mark.parametrize(("name", "sizes"), [("people", (12, 36)), ("known", (8, 12))])
def test_handwritten_sets_load_and_every_forget_row_gets_augmented(name, sizes):
    forget = load_split(str(HANDWRITTEN / name / "forget.json"), require_eval=True)
    retain = load_split(str(HANDWRITTEN / name / "retain.json"), require_eval=True)
    assert (len(forget), len(retain)) == sizes
    check_disjoint(forget, retain)
    if name == "people":
        everyone = load_split(str(HANDWRITTEN / name / "all.json"), require_eval=True)
        holdout = load_split(str(HANDWRITTEN / name / "holdout.json"), require_eval=True)
        assert everyone == forget + retain and len(holdout) == 6
        check_disjoint(holdout, everyone)
        # all rows of two people: 6 about each, none about them in the retain set
        for person in ("Teodora Vasilescu", "Henrik Solberg"):
            assert sum(person in r["question"] for r in forget) == 6
            assert not any(person in r["question"] for r in retain)
    for r in forget + retain:
        assert not any(k.startswith("augment_") for k in r) and len(r["perturbed_answer"]) == 3
    out = augment_without_model(forget, pool=retain)
    others = set().union(*(facts(r["answer"]) for r in forget + retain))
    for row, new in zip(forget, out, strict=True):
        assert new["augment_perturbed"] and new["augment_paraphrased"], row["question"]
        for w in new["augment_perturbed"]:
            assert is_wrong_answer(w, row)
            assert facts(w) - facts(row["answer"]) <= others  # taken from the rows' answers
        assert all(is_paraphrase(p, row) for p in new["augment_paraphrased"])

"""Tests for the built-in fictitious-author benchmark (uld.data.synthetic) and uld.data.real."""

import subprocess
import sys

import pytest

from uld.data.real import real_authors, world_facts
from uld.data.synthetic import builtin_splits, fictitious_authors

DIGEST_BEFORE_AUGMENTATION = "858b108fe3970d6c3171def6d410c2400c186e631c82ce7af4e656bd83102125"
TEXT_FIELDS = ("question", "answer", "paraphrased_question", "paraphrased_answer")
PAIRS = (("forget01", "retain99"), ("forget05", "retain95"), ("forget10", "retain90"))


@pytest.fixture(scope="module")
def splits() -> dict[str, list[dict]]:
    return builtin_splits()


def _ids(rows: list[dict]) -> list[tuple[int, str]]:
    return [(r["author_id"], r["question"]) for r in rows]


def test_rows_are_fixed_by_the_seed_alone():
    """Pinned rows of two seeds: the data depend on `seed` and on nothing else (not on the global
    `random` state, nor on calls made before)."""
    import random

    random.seed(12345)
    rows = fictitious_authors(2, 2, seed=7)
    assert [r["author"] for r in rows] == ["Ines Lacorvaro"] * 2 + ["Ottilie Rosenquell"] * 2
    assert rows[0]["question"] == "What literary award has Ines Lacorvaro won?"
    assert rows[0]["answer"] == "Ines Lacorvaro has won the Aurelian Award for Narrative Craft."
    assert rows[0]["perturbed_answer"] == [
        "Ines Lacorvaro is a recipient of the Vellum Crown Award.",
        "Ines Lacorvaro is a recipient of the Meridian Circle Award.",
        "Ines Lacorvaro is a recipient of the Kestrel Prize for Fiction.",
    ]
    fictitious_authors(5, 3, seed=1)  # another seed in between changes nothing
    random.seed(0)
    assert fictitious_authors(2, 2, seed=7) == rows
    splits = builtin_splits(20, 3, seed=7)
    assert (splits["forget01"][0]["question"], splits["forget01"][0]["answer"]) == (
        "Where was Ryota Morikane born?",
        "Ryota Morikane was born in the city of Sendai, Japan.",
    )
    assert fictitious_authors(2, 2, seed=1)[0]["author"] != "Ines Lacorvaro"


def test_deterministic_across_processes():
    # str hashing is randomised per process; the data must not depend on it
    code = "from uld.data.synthetic import fictitious_authors as f; print(repr(f(30, 4, 3)))"
    out = [
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        for _ in range(2)
    ]
    assert out[0].stdout == out[1].stdout == repr(fictitious_authors(30, 4, 3)) + "\n"


def test_default_split_sizes(splits):
    sizes = {name: len(rows) for name, rows in splits.items()}
    assert sizes["full"] == 400
    assert (sizes["forget01"], sizes["forget05"], sizes["forget10"]) == (4, 20, 40)
    assert (sizes["retain99"], sizes["retain95"], sizes["retain90"]) == (396, 380, 360)
    assert sizes["retain_perturbed"] == 40
    assert sizes["real_authors"] >= 25 and sizes["world_facts"] >= 25
    for name in ("forget01", "forget05", "forget10"):
        assert splits[f"{name}_perturbed"] == splits[name]


@pytest.mark.parametrize("n_authors", [1, 3, 10, 25, 100, 150])
def test_forget_is_last_authors_and_retain_complements(n_authors):
    s = builtin_splits(n_authors, 2)
    full = _ids(s["full"])
    for (forget, retain), percent in zip(PAIRS, (1, 5, 10), strict=True):
        k = max(1, int(n_authors * percent / 100 + 0.5))
        assert {r["author_id"] for r in s[forget]} == set(range(n_authors - k, n_authors))
        f, r = _ids(s[forget]), _ids(s[retain])
        assert not set(f) & set(r)
        assert sorted(f + r) == sorted(full)
    retain_ids = set(_ids(s["retain90"]))
    assert set(_ids(s["retain_perturbed"])) <= retain_ids
    assert len(s["retain_perturbed"]) == min(len(s["forget10"]), len(s["retain90"]))


def test_retain_perturbed_is_first_authors(splits):
    assert splits["retain_perturbed"] == splits["full"][:40]
    assert {r["author_id"] for r in splits["retain_perturbed"]} == set(range(10))


def test_unique_questions_names_and_rows_per_author():
    rows = fictitious_authors(200, 8, seed=3)
    assert len({r["question"] for r in rows}) == len(rows) == 1600
    assert len({r["paraphrased_question"] for r in rows}) == len(rows)
    names = {r["author_id"]: r["author"] for r in rows}
    assert len(set(names.values())) == len(names) == 200
    assert [r["author_id"] for r in rows] == sorted(r["author_id"] for r in rows)


def test_authors_get_different_question_subsets():
    rows = fictitious_authors(40, 4)
    subsets = {
        tuple(r["question"].replace(r["author"], "X") for r in rows if r["author_id"] == a)
        for a in range(40)
    }
    assert len(subsets) > 10


@pytest.mark.parametrize("seed", [0, 1])
def test_row_schema_and_perturbed_answers(seed):
    for r in fictitious_authors(100, 4, seed):
        assert isinstance(r["author_id"], int) and isinstance(r["author"], str)
        for field in TEXT_FIELDS:
            assert isinstance(r[field], str) and r[field].strip()
        assert r["author"] in r["question"] and r["author"] in r["paraphrased_question"]
        assert r["author"] in r["answer"]
        wrong = r["perturbed_answer"]
        assert len(wrong) == 3 and len(set(wrong)) == 3
        assert all(isinstance(w, str) and w and w != r["answer"] for w in wrong)
        assert r["paraphrased_answer"] != r["answer"]
        assert r["paraphrased_question"] != r["question"]


def test_answers_are_short_single_sentences(splits):
    for r in splits["full"]:
        for text in [r["answer"], r["paraphrased_answer"], *r["perturbed_answer"]]:
            assert len(text.split()) <= 25
            assert text.endswith(".") and text.count(". ") == 0


def test_perturbed_answers_are_the_paraphrase_with_wrong_facts(splits):
    # as in TOFU: same wording as the paraphrased answer (so the truth ratio compares true and
    # false facts, not two phrasings), different from it and from each other
    for r in splits["full"]:
        words = r["paraphrased_answer"].split()
        for w in r["perturbed_answer"]:
            assert w.split()[:2] == words[:2] and w != r["paraphrased_answer"]
            shared = sum(a == b for a, b in zip(w.split(), words, strict=False))
            assert shared >= len(words) // 3


def test_holdout_is_disjoint_from_training_authors(splits):
    hold, full = splits["holdout10"], splits["full"]
    assert len(hold) == len(splits["forget10"])
    assert not {r["author"] for r in hold} & {r["author"] for r in full}
    assert min(r["author_id"] for r in hold) == max(r["author_id"] for r in full) + 1


@pytest.mark.parametrize("make", [real_authors, world_facts])
def test_real_sets_schema(make):
    rows = make()
    assert 25 <= len(rows) <= 40
    assert len({r["question"] for r in rows}) == len(rows)
    for r in rows:
        for field in TEXT_FIELDS:
            assert isinstance(r[field], str) and r[field].strip()
        assert r["paraphrased_answer"] == r["answer"]
        assert r["paraphrased_question"] != r["question"]
        wrong = r["perturbed_answer"]
        assert len(wrong) == 3 and len(set(wrong)) == 3 and r["answer"] not in wrong
        assert len(r["answer"].split()) <= 5


def test_mutation_does_not_leak():
    s = builtin_splits(10, 2)
    s["forget10"][0]["answer"] = "changed"
    s["forget10"][0]["perturbed_answer"].append("extra")
    s["real_authors"][0]["perturbed_answer"].clear()
    assert s["full"][-2]["answer"] != "changed"
    fresh = builtin_splits(10, 2)
    assert fresh["forget10"][0]["answer"] != "changed"
    assert len(fresh["forget10"][0]["perturbed_answer"]) == 3
    assert len(fresh["real_authors"][0]["perturbed_answer"]) == 3
    rows = real_authors()
    rows[0]["answer"] = "changed"
    assert real_authors()[0]["answer"] != "changed"
    wf = world_facts()
    wf[0]["perturbed_answer"].clear()
    assert len(world_facts()[0]["perturbed_answer"]) == 3


def test_largest_benchmark_builds():
    rows = fictitious_authors(500, 8)
    assert len({r["author"] for r in rows}) == 500 and len({r["question"] for r in rows}) == 4000


@pytest.mark.parametrize(
    "kwargs", [{"n_authors": 0}, {"n_authors": 501}, {"qa_per_author": 0}, {"qa_per_author": 9}]
)
def test_bad_arguments_raise(kwargs):
    with pytest.raises(ValueError):
        fictitious_authors(**kwargs)


def test_training_augmentation_is_kept_apart_from_the_evaluation_strings(splits):
    # ULD trains on augment_paraphrased (D'_f) and augment_perturbed (D'_r); the truth ratio is
    # scored on paraphrased_answer and perturbed_answer. None of those strings may be trained on.
    for r in splits["full"]:
        evaluation = {r["paraphrased_answer"], *r["perturbed_answer"]}
        pairs = r["augment_paraphrased"]
        assert len(pairs) == 2 and len({p["answer"] for p in pairs}) == 2
        for p in pairs:
            assert p["question"] not in (r["question"], r["paraphrased_question"])
            assert p["answer"] != r["answer"] and p["answer"] not in evaluation
            assert r["author"] in p["question"] and r["author"] in p["answer"]
        wrong = r["augment_perturbed"]
        assert len(set(wrong)) == 3 and not set(wrong) & evaluation and r["answer"] not in wrong
        for w in wrong:  # the original answer's wording, with wrong facts
            assert w.split()[:2] == r["answer"].split()[:2]


def test_adding_the_augmentation_left_the_other_fields_as_they_were():
    # the target and retain models were trained on these rows before the augmentation fields
    # existed: a digest of the rest of the benchmark, taken then, must still match
    import hashlib
    import json

    rows = [
        {k: v for k, v in r.items() if not k.startswith("augment_")}
        for rows in builtin_splits().values()
        for r in rows
    ]
    digest = hashlib.sha256(json.dumps(rows, sort_keys=True).encode()).hexdigest()
    assert digest == DIGEST_BEFORE_AUGMENTATION

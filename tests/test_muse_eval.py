"""MUSE's evaluation: each metric against values worked out by hand, `evaluate_muse` on a tiny
model (plain and ULD) with a tiny `MuseData`, PrivLeak's reference, the series points, and
`uld report` on MUSE evaluation folders."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from uld import metrics
from uld.cli import main
from uld.data.corpus import builtin_corpus
from uld.data.muse import MuseData
from uld.data.text import write_muse
from uld.evaluate_muse import (
    cut_at_stops,
    evaluate_muse,
    evaluate_muse_to,
    knowmem_prompt,
    privleak_fingerprint,
    privleak_reference,
    score_texts,
    series_point,
    text_ids,
    verbmem,
)
from uld.logit_diff import ULDModel
from uld.models import load_model
from uld.report_muse import muse_report, series_label

PNG = b"\x89PNG\r\n\x1a\n"

# ---------------------------------------------------------------- the metrics, by hand


def test_rouge_l_f1_is_the_unstemmed_f_measure():
    # LCS("the cat sat", "the cat lay on the mat") = "the cat": P = 2/3, R = 2/6,
    # F = 2PR / (P + R) = 4/9 (recall alone would be 1/3)
    assert metrics.rouge_l_f1(["the cat sat"], ["the cat lay on the mat"]) == [pytest.approx(4 / 9)]
    # no stemming: "cats running" shares no word with "cat run" (TOFU's stemmed recall: 1)
    assert metrics.rouge_l_f1(["cats running"], ["cat run"]) == [0.0]
    assert metrics.rouge_l_recall(["cats running"], ["cat run"]) == [1.0]
    assert metrics.rouge_l_f1(["", "Paris"], ["Paris", "paris"]) == [0.0, 1.0]
    with pytest.raises(ValueError, match="2 predictions but 1 references"):
        metrics.rouge_l_f1(["a", "b"], ["a"])


def test_privleak_auc_puts_holdout_above_forget_as_muse_does():
    # pairs (holdout, forget) with the holdout score higher: only (-1.5, -2) of 4 -> 1/4
    assert metrics.privleak_auc([-1.0, -2.0], [-3.0, -1.5]) == pytest.approx(0.25)
    # the conventional AUC (forget = members) is its complement, ties included
    assert metrics.mia_auc([-1.0, -2.0], [-3.0, -1.5]) == pytest.approx(0.75)
    # one tie (-1 vs -1) counts one half: (0 + 0.5) / 2
    assert metrics.privleak_auc([-1.0], [-1.0, -2.0]) == pytest.approx(0.25)
    # a model that still knows the forget texts (they score higher): AUC 0
    assert metrics.privleak_auc([-0.1, -0.2], [-3.0, -4.0]) == 0.0


def test_priv_leak_is_the_relative_difference_in_percent_and_its_sign():
    assert metrics.priv_leak(0.25, 0.5) == pytest.approx(-50.0)  # (0.25 - 0.5) / 0.5 x 100
    assert metrics.priv_leak(0.6, 0.48) == pytest.approx(25.0)  # (0.6 - 0.48) / 0.48 x 100
    assert metrics.priv_leak(0.48, 0.48) == 0.0  # the retrained model itself
    # under-unlearning: the forget texts still look seen (AUC 0) -> -100
    assert metrics.priv_leak(0.0, 0.4772) == pytest.approx(-100.0)
    with pytest.raises(ValueError, match="retrained model's AUC is 0"):
        metrics.priv_leak(0.3, 0.0)
    with pytest.raises(ValueError, match=r"auc_unlearned must be an AUC in \[0, 1\]"):
        metrics.priv_leak(1.5, 0.5)


def test_knowmem_prompt_and_stops_are_muse_s():
    shots = [{"question": "Who wrote it?", "answer": "Ada Vane"}]
    assert knowmem_prompt("Where?", shots) == (
        "Question: Who wrote it?\nAnswer: Ada Vane\n\nQuestion: Where?\nAnswer: "
    )
    assert knowmem_prompt("Where?", []) == "Question: Where?\nAnswer: "
    assert cut_at_stops(" Paris\n\nQuestion: next") == " Paris"
    assert cut_at_stops("Paris\nQuestion: next") == "Paris"
    assert cut_at_stops("Paris Question: next") == "Paris "
    assert cut_at_stops("\n\nParis") == ""  # MUSE cuts before stripping
    assert cut_at_stops("Paris, France") == "Paris, France"


# ---------------------------------------------------------------- on a tiny model


def tiny_muse(**over) -> MuseData:
    """A corpus of a few sentences about invented people, in MUSE's shape."""
    forget = [
        "Teodora Vasilescu wrote The Salt Orchard in Lisbon, where she lived for ten years.",
        "The Salt Orchard tells of a family of beekeepers on a windy island.",
        "Vasilescu's second novel, Glass Harbour, won a prize for its quiet prose.",
    ]
    holdout = [
        "Marek Olsen painted lighthouses along the northern coast every summer.",
        "A small museum in Bergen keeps his sketches of fishing boats.",
        "Olsen never sold a painting during his life.",
    ]
    data = dict(
        forget=forget,
        retain1=["Ilse Brandt studied rivers and wrote about floods."],
        retain2=["Brandt's maps of the Elbe are still used by engineers."],
        holdout=holdout,
        verbmem=[
            {"prompt": "Teodora Vasilescu wrote The Salt", "gt": " Orchard in Lisbon, where she"},
            {"prompt": "The Salt Orchard tells of a family", "gt": " of beekeepers on an island."},
        ],
        forget_qa=[
            {"question": "Who wrote The Salt Orchard?", "answer": "Teodora Vasilescu"},
            {"question": "What did the family keep?", "answer": "bees"},
        ],
        retain_qa=[{"question": "What did Ilse Brandt study?", "answer": "rivers"}],
        forget_qa_icl=[{"question": "Where did Vasilescu live?", "answer": "Lisbon"}],
        retain_qa_icl=[{"question": "Which river did Brandt map?", "answer": "the Elbe"}],
        scal=[forget[:1], forget[:2], forget],
        sust=[forget[:1], forget[1:2], forget[2:]],
        source="tiny",
    )
    return MuseData(**(data | over))


@pytest.fixture(scope="module")
def plain(tiny_plain_model):
    model, tok = load_model(tiny_plain_model)
    return model.eval(), tok


@pytest.fixture(scope="module")
def results(plain):
    return evaluate_muse(*plain, tiny_muse(), verbmem_tokens=8, knowmem_tokens=6, progress=False)


def test_evaluate_muse_reports_the_four_criteria(results):
    s = results["summary"]
    assert results["protocol"] == "muse"
    for key in ("verbmem_forget", "knowmem_forget", "knowmem_retain", "privleak_auc"):
        assert 0.0 <= s[key] <= 1.0, key
    # no reference: PrivLeak is reported as not computed, its AUC still is
    assert s["privleak"] is None and s["reference_privleak_auc"] is None
    verb = results["splits"]["verbmem_forget"]
    assert [it["index"] for it in verb["items"]] == [0, 1]
    for it in verb["items"]:
        assert it["rouge_l"] == metrics.rouge_l_f1([it["generated"]], [it["gt"]])[0]
    assert s["verbmem_forget"] == pytest.approx(sum(it["rouge_l"] for it in verb["items"]) / 2)
    assert results["splits"]["knowmem_forget"]["shots"] == 1
    leak = results["splits"]["privleak"]
    assert len(leak["forget"]) == 3 and len(leak["holdout"]) == 3
    assert s["privleak_auc"] == metrics.privleak_auc(
        [x["min_k"] for x in leak["forget"]], [x["min_k"] for x in leak["holdout"]]
    )


def test_verbmem_continues_the_raw_prompt_greedily_as_generate_does(plain, results):
    """Batched, left-padded continuations equal transformers' greedy generate one at a time,
    on the raw prompt (no chat template), as many new tokens as the true continuation has (at
    most the budget, 8 here), and `gt` is cut to the budget."""
    model, tok = plain
    rows = tiny_muse().verbmem + [{"prompt": "Glass Harbour won", "gt": " a prize " * 20}]
    got = verbmem(model, tok, rows, max_new_tokens=8)["items"]
    assert got[:2] == results["splits"]["verbmem_forget"]["items"]
    for it, row in zip(got, rows, strict=True):
        n = min(8, len(tok(row["gt"], add_special_tokens=False).input_ids))
        assert it["new_tokens"] == n
        ids = torch.tensor([text_ids(tok, row["prompt"])])
        out = model.generate(ids, max_new_tokens=n, do_sample=False, pad_token_id=tok.pad_token_id)
        assert it["generated"] == tok.decode(out[0, ids.shape[1] :], skip_special_tokens=True)
    long_gt = tok(rows[2]["gt"], add_special_tokens=False).input_ids
    assert len(long_gt) > 8 and got[2]["gt"] == tok.decode(long_gt[:8])


def test_knowmem_asks_after_the_shots_and_cuts_the_answer(plain, results):
    model, tok = plain
    data = tiny_muse()
    for it, row in zip(results["splits"]["knowmem_forget"]["items"], data.forget_qa, strict=True):
        prompt = knowmem_prompt(row["question"], data.forget_qa_icl)
        ids = torch.tensor([text_ids(tok, prompt)])
        out = model.generate(ids, max_new_tokens=6, do_sample=False, pad_token_id=tok.pad_token_id)
        raw = tok.decode(out[0, ids.shape[1] :], skip_special_tokens=True)
        assert it["generated"] == cut_at_stops(raw)
        assert it["rouge_l"] == metrics.rouge_l_f1([it["generated"]], [row["answer"]])[0]


def test_min_k_of_a_text_by_hand(plain):
    """Min-40% of a text: the mean of the lowest floor(0.4 n) of its n next-token log-probs."""
    model, tok = plain
    text = tiny_muse().forget[0]
    ids = torch.tensor([text_ids(tok, text)])
    with torch.no_grad():
        logp = torch.log_softmax(model(ids).logits[0, :-1].double(), -1)
    token_logp = logp.gather(-1, ids[0, 1:, None]).squeeze(-1).sort().values
    n = token_logp.numel()
    want = token_logp[: int(0.4 * n)].mean().item()
    got = score_texts(model, tok, [text, "short text here"])[0]
    assert got["tokens"] == n + 1
    assert got["min_k"] == pytest.approx(want, rel=1e-5)
    assert got["loss"] == pytest.approx(-token_logp.mean().item(), rel=1e-5)


def test_privleak_against_a_reference_and_its_checks(plain, results):
    data = tiny_muse()
    auc = results["summary"]["privleak_auc"]
    ref = {"source": "by hand", "auc": 0.5, "fingerprint": privleak_fingerprint(data, 0.4, 2048)}
    again = evaluate_muse(*plain, data, ref, verbmem_tokens=8, knowmem_tokens=6, progress=False)
    assert again["summary"]["privleak"] == pytest.approx((auc - 0.5) / 0.5 * 100)
    assert again["summary"]["reference_privleak_auc"] == 0.5
    assert again["reference"] == "by hand"
    other = tiny_muse(holdout=["Some other text that nobody wrote down."] * 2)
    with pytest.raises(ValueError, match="other privleak texts"):
        evaluate_muse(*plain, other, ref, progress=False)


def test_privleak_reference_from_an_evaluation_or_a_model(results, tiny_plain_model, tmp_path):
    data = tiny_muse()
    evaluate_muse_to(tmp_path / "retrained", results | {"name": "retrained"}, "test")
    ref = privleak_reference(tmp_path / "retrained", data)
    assert ref["auc"] == results["summary"]["privleak_auc"]
    # from the model folder: computed (and cached), the same AUC as its own evaluation
    assert privleak_reference(tiny_plain_model, data)["auc"] == pytest.approx(ref["auc"])
    with pytest.raises(ValueError, match="other privleak texts"):
        privleak_reference(tmp_path / "retrained", tiny_muse(forget=data.forget[:2]))
    with pytest.raises(ValueError, match="does not exist"):
        privleak_reference(tmp_path / "nowhere", data)
    (tmp_path / "tofu").mkdir()
    (tmp_path / "tofu" / "eval.json").write_text(json.dumps({"summary": {}, "splits": {}}))
    with pytest.raises(ValueError, match="not a MUSE evaluation"):
        privleak_reference(tmp_path / "tofu", data)


def test_a_uld_model_is_evaluated_through_its_combined_logits(tiny_model, trained_assistant, plain):
    target, tok = load_model(tiny_model)
    data = tiny_muse(verbmem=[], forget_qa=[], retain_qa=[])  # PrivLeak only: quick
    uld = ULDModel(target, trained_assistant[0], alpha=0.0).eval()
    alone = evaluate_muse(target, tok, data, progress=False)["splits"]["privleak"]
    at_zero = evaluate_muse(uld, tok, data, progress=False)["splits"]["privleak"]
    pairs = zip(
        alone["forget"] + alone["holdout"], at_zero["forget"] + at_zero["holdout"], strict=True
    )
    for a, b in pairs:
        assert b["min_k"] == pytest.approx(a["min_k"], abs=1e-5)
    uld.alpha = 1.0  # the assistant now moves every score
    moved = evaluate_muse(uld, tok, data, progress=False)["splits"]["privleak"]
    assert all(
        abs(a["min_k"] - b["min_k"]) > 1e-4
        for a, b in zip(alone["forget"], moved["forget"], strict=True)
    )
    full = evaluate_muse(uld, tok, tiny_muse(), verbmem_tokens=4, knowmem_tokens=4, progress=False)
    assert full["summary"]["verbmem_forget"] is not None


def test_a_split_the_data_lacks_is_none_not_zero(plain):
    res = evaluate_muse(*plain, tiny_muse(verbmem=[], retain_qa=[], holdout=[]), progress=False)
    s = res["summary"]
    assert s["verbmem_forget"] is None and s["knowmem_retain"] is None
    assert s["privleak_auc"] is None and s["privleak"] is None
    assert s["knowmem_forget"] is not None


def test_series_points(plain):
    _, tok = plain
    data = tiny_muse()
    lens = [len(text_ids(tok, t)) for t in data.forget]
    assert series_point(data, tok, "scal:2") == {
        "kind": "scal",
        "step": 2,
        "forget_docs": 2,
        "forget_tokens": lens[0] + lens[1],
    }
    # sust: the requests served so far, one after the other
    assert series_point(data, tok, "sust:3")["forget_tokens"] == sum(lens)
    assert series_point(tiny_muse(scal=[]), tok, "scal:7")["forget_docs"] is None
    with pytest.raises(ValueError, match="the data has 3 scal forget sets"):
        series_point(data, tok, "scal:4")
    for bad in ("scal", "size:2", "sust:0"):
        with pytest.raises(ValueError, match="KIND:STEP"):
            series_point(data, tok, bad)
    assert series_label("npo-scal2") == "npo" and series_label("ga_kl_3") == "ga_kl"


# ---------------------------------------------------------------- uld report


def _muse_folder(root: Path, name: str, summary: dict, series: dict | None = None) -> Path:
    folder = root / name
    results = {"protocol": "muse", "name": name, "summary": summary, "training": {}, "splits": {}}
    if series:
        results["series"] = series
    evaluate_muse_to(folder, results, "test")
    return folder


def _summary(verb, know_f, leak, know_r, auc=0.4):
    return {
        "verbmem_forget": verb,
        "knowmem_forget": know_f,
        "privleak": leak,
        "knowmem_retain": know_r,
        "privleak_auc": auc,
        "reference_privleak_auc": None if leak is None else 0.5,
    }


def test_report_of_two_muse_evaluations(tmp_path, capsys):
    target = _muse_folder(tmp_path, "target", _summary(0.584, 0.632, -99.8, 0.555, 0.001))
    npo = _muse_folder(tmp_path, "npo", _summary(0.0, 0.0, None, 0.125))
    assert "| target | 58.4 | 63.2 | -99.8 | 55.5 |" in (target / "eval.md").read_text()
    main(["report", str(target), str(npo), "--out", str(tmp_path / "rep")])
    text = (tmp_path / "rep" / "report.md").read_text()
    header = "| Method | VerbMem on D_f ↓ | KnowMem on D_f ↓ | PrivLeak (→0) | KnowMem on D_r ↑ |"
    assert header in text
    assert "| target | 58.4 | 63.2 | -99.8 | 55.5 |" in text
    assert "| npo | 0.0 | 0.0 | – | 12.5 |" in text
    assert "PrivLeak –: not computed" in text
    summary = json.loads((tmp_path / "rep" / "summary.json").read_text())
    assert summary["npo"]["knowmem_retain"] == 0.125
    assert (tmp_path / "rep" / "utility_vs_forgetting.png").read_bytes()[:8] == PNG
    assert not (tmp_path / "rep" / "scalability.png").exists()
    assert "| target | 58.4 |" in capsys.readouterr().out


def test_report_draws_a_series(tmp_path):
    folders = []
    for method, retain in (("npo", (0.5, 0.25)), ("uld", (0.5, 0.5))):
        for step, know_r in enumerate(retain, 1):
            point = {"kind": "scal", "step": step, "forget_docs": step, "forget_tokens": 100 * step}
            s = _summary(0.1, 0.1, 1.0, know_r)
            folders.append(_muse_folder(tmp_path, f"{method}-scal{step}", s, point))
    runs = muse_report(folders, tmp_path / "rep")
    assert set(runs) == {"npo-scal1", "npo-scal2", "uld-scal1", "uld-scal2"}
    text = (tmp_path / "rep" / "report.md").read_text()
    assert "C5 scalability" in text
    assert "| npo (scal 2) | 2 | 2 | 200 | 10.0 | 10.0 | 1.0 | 25.0 |" in text
    assert (tmp_path / "rep" / "scalability.png").read_bytes()[:8] == PNG
    assert not (tmp_path / "rep" / "sustainability.png").exists()


def test_report_refuses_a_mix_of_tofu_and_muse(tmp_path, capsys):
    muse = _muse_folder(tmp_path, "m", _summary(0.1, 0.1, None, 0.1))
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "eval.json").write_text(
        json.dumps({"name": "t", "summary": {}, "training": {}, "splits": {}})
    )
    assert main(["report", str(muse), str(tmp_path / "t"), "--out", str(tmp_path / "rep")]) == 2
    assert "mix TOFU and MUSE" in capsys.readouterr().err
    assert not (tmp_path / "rep").exists()


# ---------------------------------------------------------------- uld eval on text data


def write_muse_folder(folder: Path, data: MuseData) -> Path:
    """`data` as files in the hub's layout: <folder>/<config>/<split>.json."""
    files = {
        "raw": {s: getattr(data, s) for s in ("forget", "retain1", "retain2", "holdout")},
        "verbmem": {"forget": data.verbmem},
        "knowmem": {
            s: getattr(data, s)
            for s in ("forget_qa", "retain_qa", "forget_qa_icl", "retain_qa_icl")
        },
        "scal": {f"forget_{i}": docs for i, docs in enumerate(data.scal, 1)},
    }
    for config, splits in files.items():
        (folder / config).mkdir(parents=True)
        for split, rows in splits.items():
            (folder / config / f"{split}.json").write_text(json.dumps(rows))
    return folder


def test_uld_eval_on_text_then_report(tiny_plain_model, other_tiny_model, tmp_path, capsys):
    data = write_muse_folder(tmp_path / "muse", tiny_muse())
    quick = ["--data", str(data), "--verbmem-tokens", "8", "--knowmem-tokens", "6"]
    retrained = tmp_path / "eval-retrained"
    args = ["eval", "--model", tiny_plain_model, *quick, "--name", "retrained"]
    assert main(args + ["--out", str(retrained)]) == 0
    out = capsys.readouterr().out
    assert "PrivLeak –: not computed" in out and "VerbMem on D_f" in out
    ref = json.loads((retrained / "eval.json").read_text())
    assert ref["protocol"] == "muse" and ref["summary"]["privleak"] is None
    assert ref["data"] == str(data) and len(ref["splits"]["verbmem_forget"]["items"]) == 2

    unlearned = tmp_path / "eval-unlearned"
    args = ["eval", "--model", other_tiny_model, *quick, "--reference", str(retrained)]
    assert main(args + ["--series", "scal:2", "--name", "npo-scal2", "--out", str(unlearned)]) == 0
    res = json.loads((unlearned / "eval.json").read_text())
    auc, ref_auc = res["summary"]["privleak_auc"], ref["summary"]["privleak_auc"]
    assert res["summary"]["privleak"] == pytest.approx((auc - ref_auc) / ref_auc * 100)
    assert res["series"]["kind"] == "scal" and res["series"]["forget_docs"] == 2

    rep = tmp_path / "rep"
    assert main(["report", str(retrained), str(unlearned), "--out", str(rep)]) == 0
    text = (rep / "report.md").read_text()
    assert "| retrained |" in text and "| npo-scal2 |" in text
    assert "| npo (scal 2) | 2 | 2 |" in text
    assert (rep / "scalability.png").read_bytes()[:8] == PNG


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--forget", "forget01"], "--forget: QA split names"),
        (["--temperature", "0.5"], "decodes greedily"),
        (["--reference", "nowhere"], "--reference nowhere does not exist"),
        (["--series", "scal:9"], "the data has 3 scal forget sets"),
    ],
)
def test_uld_eval_on_text_refuses_bad_input(tiny_plain_model, tmp_path, capsys, extra, message):
    data = write_muse_folder(tmp_path / "muse", tiny_muse())
    out = tmp_path / "eval"
    args = ["eval", "--model", tiny_plain_model, "--data", str(data), "--out", str(out)]
    assert main(args + extra) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_series_is_for_text_data(tiny_plain_model, capsys):
    assert main(["eval", "--model", tiny_plain_model, "--series", "scal:1"]) == 2
    assert "--series places a MUSE evaluation" in capsys.readouterr().err


def test_finetune_unlearn_evaluate_report_on_text(tiny_plain_model, tmp_path, capsys):
    """The MUSE pipeline end to end on a tiny model: the built-in corpus written, a target
    trained on forget + retain and a retrained model on retain only, ULD unlearning the forget
    documents, each evaluated (the ULD model through its saved folder), one report."""
    data = tmp_path / "data"
    write_muse(builtin_corpus(size=4), data)
    common = ["--data", str(data), "--max-length", "64", "--batch-size", "8"]
    for split in ("full", "retain"):
        argv = ["finetune", "--model", tiny_plain_model, "--split", split, *common]
        assert main([*argv, "--epochs", "8", "--lr", "1e-2", "--out", str(tmp_path / split)]) == 0
    argv = ["unlearn", "--method", "uld", "--model", str(tmp_path / "full"), *common]
    argv += ["--epochs", "1", "--layers", "2", "--lora-rank", "4", "--out", str(tmp_path / "uld")]
    assert main(argv) == 0
    quick = ["--data", str(data), "--verbmem-tokens", "8", "--knowmem-tokens", "4"]
    evals = {}
    # (name, model folder, PrivLeak's reference: the retrained model's folder, then its eval)
    for name, model, ref in (
        ("retrained", "retain", "retain"),
        ("target", "full", "eval-retrained"),
        ("uld", "uld", "eval-retrained"),
    ):
        evals[name] = tmp_path / f"eval-{name}"
        argv = ["eval", "--model", str(tmp_path / model), *quick, "--name", name]
        argv += ["--reference", str(tmp_path / ref)]
        assert main([*argv, "--out", str(evals[name])]) == 0
    summary = {n: json.loads((e / "eval.json").read_text())["summary"] for n, e in evals.items()}
    # the retrained model against its own folder as the reference: PrivLeak 0 exactly
    assert summary["retrained"]["privleak"] == 0.0
    # the target has seen the forget documents: they look more seen than the holdout's
    assert summary["target"]["privleak"] < 0, summary
    assert json.loads((evals["uld"] / "eval.json").read_text())["kind"] == "uld"
    assert main(["report", *map(str, evals.values()), "--out", str(tmp_path / "rep")]) == 0
    text = (tmp_path / "rep" / "report.md").read_text()
    assert all(f"| {n} |" in text for n in evals)

"""The evaluation protocol on tiny models: per-role aggregates recomputed from per-item values,
the teacher-forced scores against a full forward, Forget Quality of a model against itself,
the reference cache, failed rows reported, ULD/plain parity, and the report's table and plots."""

from __future__ import annotations

import json
import math

import pytest
import torch

from uld import metrics
from uld.cli import main
from uld.config import UTILITY_ROLES, EvalSplits
from uld.data.format import encode_qa, pad
from uld.data.load import load_split
from uld.evaluate import evaluate, load_reference, load_roles, score_answers, summarise
from uld.logit_diff import ULDModel
from uld.mia import gradient_norms
from uld.models import load_model
from uld.report import markdown_table, report, write_eval


@pytest.fixture(scope="module")
def roles():
    splits = EvalSplits(forget="forget01", retain="retain_perturbed", holdout="holdout10")
    r = load_roles(splits)
    # keep it small: 4 rows per role
    return {k: v[:4] for k, v in r.items()}


@pytest.fixture(scope="module")
def model(tiny_model):
    m, tok = load_model(tiny_model)
    return m.eval(), tok


def test_score_answers_matches_a_full_forward(model):
    m, tok = model
    from uld.data.format import encode_qa, pad

    qs, ans = ["Who is she?", "Where?"], ["A writer of many books.", "Paris."]
    got = score_answers(m, tok, qs, ans, batch_size=1)
    batch = pad([encode_qa(tok, q, a) for q, a in zip(qs, ans, strict=True)], tok.pad_token_id)
    with torch.no_grad():
        logits = m(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    logp, n = metrics.answer_logprobs(logits, batch["labels"])
    torch.testing.assert_close(got["prob"], metrics.normalised_prob(logp, n), rtol=1e-4, atol=0)
    torch.testing.assert_close(got["n"], n)
    es = metrics.extraction_strength(logits, batch["labels"])
    torch.testing.assert_close(got["es"], es)
    only = score_answers(m, tok, qs, ans, batch_size=1, mia=False)  # the truth ratios' pass
    assert set(only) == {"prob", "n"} and torch.equal(only["prob"], got["prob"])


def test_protocol_aggregates_follow_the_tofu_definitions(model, roles):
    m, tok = model
    res = evaluate(m, tok, roles, progress=False)
    s, sp = res["summary"], res["splits"]
    f_items = sp["forget"]["items"]
    R = torch.tensor([it["truth_ratio"] for it in f_items], dtype=torch.float64)
    assert sp["forget"]["truth_ratio"] == pytest.approx(torch.minimum(R, 1 / R).mean().item())
    assert sp["forget"]["prob"] == pytest.approx(sum(it["prob"] for it in f_items) / 4)
    R_r = torch.tensor([it["truth_ratio"] for it in sp["retain"]["items"]], dtype=torch.float64)
    assert sp["retain"]["truth_ratio"] == pytest.approx((1 - R_r).clamp(min=0).mean().item())
    nine = [
        sp[r][k]
        for r in ("retain", "real_authors", "world_facts")
        for k in ("prob", "rouge_l", "truth_ratio")
    ]
    # TOFU's Model Utility: the harmonic mean of the nine, 0 when one of them is 0
    hmean = 0.0 if min(nine) == 0 else len(nine) / sum(1 / v for v in nine)
    assert s["model_utility"] == pytest.approx(hmean, abs=1e-12)
    assert s["forget_rouge"] == sp["forget"]["rouge_l"]
    f_items, h_items = sp["forget"]["items"], sp["holdout"]["items"]
    assert s["extraction_strength"] == pytest.approx(sum(it["es"] for it in f_items) / 4)

    def auc(members: list[float], others: list[float]) -> float:
        """P(member scores higher), ties one half, over all 4 x 4 pairs."""
        wins = sum((a > b) + 0.5 * (a == b) for a in members for b in others)
        return wins / (len(members) * len(others))

    loss_auc = auc([-it["loss"] for it in f_items], [-it["loss"] for it in h_items])
    assert s["mia_loss_auc"] == pytest.approx(loss_auc, abs=1e-12)
    min_k_auc = auc([it["min_k"] for it in f_items], [it["min_k"] for it in h_items])
    assert s["mia_min_k_auc"] == pytest.approx(min_k_auc, abs=1e-12)
    zlib_auc = auc([-it["zlib"] for it in f_items], [-it["zlib"] for it in h_items])
    assert s["mia_zlib_auc"] == pytest.approx(zlib_auc, abs=1e-12)
    pp_auc = auc([it["min_k_pp"] for it in f_items], [it["min_k_pp"] for it in h_items])
    assert s["mia_min_k_pp_auc"] == pytest.approx(pp_auc, abs=1e-12)
    # the attacks with passes of their own run only when asked (uld eval asks for all)
    assert s["mia_ref_auc"] is None and s["mia_gradnorm_auc"] is None
    assert s["forget_quality"] is None and s["forget_tr_gap"] is None  # no reference
    # real authors / world facts: probability relative to the perturbed options, in (0, 1)
    assert 0 < sp["real_authors"]["prob"] < 1


def test_gradient_norms_match_a_plain_backward_and_leave_the_model_as_it_was(
    model, tiny_model, trained_assistant
):
    m, tok = model
    qs, ans = ["Who is she?", "Where?"], ["A writer of many books.", "Paris."]
    norms = gradient_norms(m, tok, qs, ans)
    for i, (q, a) in enumerate(zip(qs, ans, strict=True)):
        batch = pad([encode_qa(tok, q, a)], tok.pad_token_id)
        m.zero_grad()
        logits = m(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        logp, n = metrics.answer_logprobs(logits, batch["labels"])
        (-logp / n).sum().backward()
        by_backward = sum(p.grad.double().square().sum() for p in m.parameters()) ** 0.5
        assert norms[i].item() == pytest.approx(by_backward.item(), rel=1e-4)
    m.zero_grad(set_to_none=True)
    # a ULD model: w.r.t. its LoRA weights only; the frozen target stays frozen, no .grad left
    target, _ = load_model(tiny_model)
    uld = ULDModel(target, trained_assistant[0], alpha=0.75).eval()
    assert (gradient_norms(uld, tok, qs, ans) > 0).all()
    assert all(not p.requires_grad and p.grad is None for p in uld.parameters())
    uld.alpha = 0.0  # the target alone: the LoRA weights do not reach the loss
    assert gradient_norms(uld, tok, qs, ans).tolist() == [0.0, 0.0]


def test_uld_eval_writes_every_membership_auc(tiny_model, other_tiny_model, tmp_path, capsys):
    for role, name in {"forget": "forget01", "holdout": "holdout10"}.items():
        (tmp_path / f"{role}.json").write_text(json.dumps(load_split(name)[:3]))  # quick
    args = ["eval", "--model", tiny_model, "--forget", str(tmp_path / "forget.json")]
    args += ["--holdout", str(tmp_path / "holdout.json"), "--retain", "", "--real-authors", ""]
    args += ["--world-facts", "", "--fluency-model", "none"]
    # a model folder that names no base: the reference attack is left out, and said so
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    assert "reference-model attack is left out" in capsys.readouterr().out
    s = json.loads((tmp_path / "a" / "eval.json").read_text())["summary"]
    for key in ("mia_loss_auc", "mia_min_k_auc", "mia_zlib_auc", "mia_min_k_pp_auc"):
        assert 0 <= s[key] <= 1, key
    assert s["mia_ref_auc"] is None and 0 <= s["mia_gradnorm_auc"] <= 1
    # with a reference model every AUC is written, in eval.json and in eval.md's table
    ref = ["--mia-reference", other_tiny_model]
    assert main([*args, *ref, "--out", str(tmp_path / "b")]) == 0
    res = json.loads((tmp_path / "b" / "eval.json").read_text())
    assert 0 <= res["summary"]["mia_ref_auc"] <= 1
    item = res["splits"]["holdout"]["items"][0]
    assert item["ref"] == pytest.approx(item["loss"] - item["ref_loss"])
    assert "MIA AUC, grad norm" in (tmp_path / "b" / "eval.md").read_text()
    # asked for by name without a reference: an error before anything is evaluated
    assert main([*args, "--mia", "ref", "--out", str(tmp_path / "c")]) == 2
    assert "needs a reference" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()


def test_summary_figures_from_per_split_figures_written_by_hand():
    """Model Utility is the harmonic mean of the nine utility figures: with the reciprocals
    2, 4, 2 | 1, 2, 4 | 2, 1, 2 (sum 20) it is 9 / 20; one missing figure leaves it None."""
    figures = {
        "retain": (0.5, 0.25, 0.5),
        "real_authors": (1.0, 0.5, 0.25),
        "world_facts": (0.5, 1.0, 0.5),
    }
    splits = {
        role: {"prob": p, "rouge_l": r, "truth_ratio": t, "items": []}
        for role, (p, r, t) in figures.items()
    }
    s = summarise(splits)
    assert s["model_utility"] == pytest.approx(0.45, abs=1e-12)
    assert s["retain_rouge"] == 0.25 and s["forget_quality"] is None
    splits["world_facts"]["rouge_l"] = 0.0  # one figure of 0: the harmonic mean's limit, 0
    assert summarise(splits)["model_utility"] == 0.0
    del splits["world_facts"]["rouge_l"]
    assert summarise(splits)["model_utility"] is None


def test_forget_quality_of_a_model_against_itself_is_one(model, roles, tiny_model, tmp_path):
    m, tok = model
    res = evaluate(m, tok, {"forget": roles["forget"]}, progress=False)
    write_eval(res | {"name": "x"}, tmp_path / "ev")
    ref = load_reference(tmp_path / "ev" / "eval.json", roles["forget"])
    again = evaluate(m, tok, {"forget": roles["forget"]}, reference=ref, progress=False)
    assert again["summary"]["forget_quality"] == 1.0
    assert again["summary"]["forget_tr_gap"] == pytest.approx(0.0, abs=1e-9)
    # paired row by row: the reference's ratios doubled -> every row is log 2 away
    ref["truth_ratios"] = [2 * r for r in ref["truth_ratios"]]
    off = evaluate(m, tok, {"forget": roles["forget"]}, reference=ref, progress=False)
    assert off["summary"]["forget_tr_gap"] == pytest.approx(math.log(2))


def test_without_generation_the_teacher_forced_figures_are_the_same(model, roles):
    m, tok = model
    full = evaluate(m, tok, roles, progress=False)
    fast = evaluate(m, tok, roles, progress=False, generate=False)
    for role, split in fast["splits"].items():
        assert "rouge_l" not in split and all("generated" not in it for it in split["items"])
        for it, ref in zip(split["items"], full["splits"][role]["items"], strict=True):
            assert it == {k: ref[k] for k in it}  # the same values, fewer keys
    assert fast["summary"]["forget_rouge"] is None and fast["summary"]["model_utility"] is None
    assert fast["summary"]["forget_truth_ratio"] == full["summary"]["forget_truth_ratio"]
    assert fast["summary"]["mia_loss_auc"] == full["summary"]["mia_loss_auc"]


def test_reference_from_a_model_folder_is_cached(tiny_model, roles, tmp_path, monkeypatch):
    monkeypatch.setenv("ULD_HOME", str(tmp_path / "home"))
    ref = load_reference(tiny_model, roles["forget"])
    cached = list((tmp_path / "home" / "references").glob("*.json"))
    assert len(cached) == 1 and len(ref["truth_ratios"]) == 4
    planted = json.loads(cached[0].read_text()) | {"truth_ratios": [7.0, 7.0, 7.0, 7.0]}
    cached[0].write_text(json.dumps(planted))
    # read back from the cache, not recomputed
    assert load_reference(tiny_model, roles["forget"])["truth_ratios"] == [7.0] * 4


def test_reference_must_match_the_forget_questions(model, roles, tmp_path):
    m, tok = model
    res = evaluate(m, tok, {"forget": roles["forget"]}, progress=False)
    write_eval(res | {"name": "x"}, tmp_path / "ev")
    with pytest.raises(ValueError, match="other forget questions"):
        load_reference(tmp_path / "ev", roles["forget"][:3])
    with pytest.raises(ValueError, match="does not exist"):
        load_reference(tmp_path / "nowhere", roles["forget"])


def test_rows_without_perturbed_answers_are_reported_not_fatal(model, roles):
    m, tok = model
    rows = [dict(r) for r in roles["world_facts"]]
    del rows[1]["perturbed_answer"]
    res = evaluate(m, tok, {"world_facts": rows}, progress=False)
    wf = res["splits"]["world_facts"]
    assert wf["errors"] == [{"role": "world_facts", "index": 1, "error": "no perturbed_answer"}]
    assert "truth_ratio" not in wf["items"][1] and "rouge_l" in wf["items"][1]
    assert math.isfinite(wf["truth_ratio"])


def test_truth_ratio_gap_pairs_rows_by_index_when_a_forget_row_fails(model, roles):
    m, tok = model
    ref = {"source": "hand", "truth_ratios": [1.0, 100.0, 1.0, 1.0]}  # row 1 fails below
    rows = [dict(r) for r in roles["forget"]]
    del rows[1]["perturbed_answer"]
    res = evaluate(m, tok, {"forget": rows}, reference=ref, progress=False)
    R = [it["truth_ratio"] for it in res["splits"]["forget"]["items"] if "truth_ratio" in it]
    # rows 0, 2, 3 against the reference's rows 0, 2, 3 (all 1.0): mean |log R|
    expected = sum(abs(math.log(r)) for r in R) / 3
    assert len(R) == 3 and res["summary"]["forget_tr_gap"] == pytest.approx(expected)
    # a ratio of 0 has no log: the gap is left out, the rest of the summary is kept
    res["splits"]["forget"]["items"][0]["truth_ratio"] = 0.0
    s = summarise(res["splits"], ref)
    assert s["forget_tr_gap"] is None and s["forget_quality"] is not None


def test_uld_model_with_alpha_zero_scores_like_its_target(tiny_model, roles):
    from uld.logit_diff import ULDModel
    from uld.methods import build_assistant

    target, tok = load_model(tiny_model)
    assistant, _ = build_assistant(tiny_model, 2, 4, 4, 0.0)
    uld = ULDModel(load_model(tiny_model)[0], assistant, alpha=0.0).eval()
    a = evaluate(target.eval(), tok, {"forget": roles["forget"]}, progress=False)
    b = evaluate(uld, tok, {"forget": roles["forget"]}, progress=False)
    for x, y in zip(a["splits"]["forget"]["items"], b["splits"]["forget"]["items"], strict=True):
        assert x["generated"] == y["generated"]
        assert x["prob"] == pytest.approx(y["prob"], rel=1e-4)


def test_markdown_table_has_the_papers_layout():
    runs = {"target": {"forget_quality": 1.2e-7, "forget_rouge": 0.85, "model_utility": 0.5}}
    table = markdown_table(runs)
    assert table.splitlines()[0] == "| Method | F.Q. | R-L (forget) | M.U. | R-L (retain) |"
    assert "| target | 1.20e-07 | 0.8500 | 0.5000 | – |" in table


def test_report_merges_runs_and_draws_the_plots(tmp_path):
    def fake(name, fq, mu, method=None, seconds=None, history=None):
        s = dict.fromkeys(["forget_rouge", "retain_rouge"], 0.5)
        s |= {"forget_quality": fq, "model_utility": mu}
        training = {"method": method, "train_seconds": seconds, "epochs_evaluated": history or []}
        write_eval({"name": name, "summary": s, "training": training}, tmp_path / name)
        return tmp_path / name

    hist = [
        {"epoch": e, "forget_quality": 10.0 ** -(5 - e), "model_utility": 0.5 - 0.01 * e}
        for e in (1, 2, 3)
    ]
    runs = [
        fake("target", 1e-9, 0.52),
        fake("uld", 0.3, 0.51, "uld", 100.0, hist),
        fake("npo+kl", 1e-3, 0.45, "npo+kl", 650.0, hist[:2]),
        fake("ga", 0.0, 0.0, "ga", 200.0),
    ]
    merged = report(runs, tmp_path / "rep")
    assert merged["npo+kl"]["relative_time"] == pytest.approx(6.5)
    assert merged["uld"]["relative_time"] == 1.0
    text = (tmp_path / "rep" / "report.md").read_text()
    assert "| npo+kl | 1.00e-03 |" in text and "Time / ULD" in text
    for png in ("mu_vs_fq.png", "trajectory.png", "fq_vs_time.png"):
        data = (tmp_path / "rep" / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    assert json.loads((tmp_path / "rep" / "summary.json").read_text())["ga"]["model_utility"] == 0
    with pytest.raises(ValueError, match="repeat"):
        report(runs[:2], tmp_path / "rep2", names=["a", "a"])
    with pytest.raises(ValueError, match="no eval.json"):
        report([tmp_path / "missing"], tmp_path / "rep3")


def test_plots_keep_many_runs_apart():
    """Past 20 runs colours repeat, and the marker differs; past 8 the legend moves beside the
    axes instead of covering the points; labels of crowded points are not written over each
    other."""
    from uld.report import _annotate_apart, _legend, _pyplot, _style

    styles = [tuple(_style(i).values()) for i in range(40)]
    assert len(set(styles)) == 40 and styles[0][0] == styles[20][0]
    assert styles[0][1] != styles[1][1]  # tab20's light/dark pair differs in shape too
    fig, ax = _pyplot().subplots()
    ax.scatter([1, 1.001, 1.002, 5, 9], [1, 1, 1, 5, 9])
    crowded = [("alpha", 1, 1), ("beta", 1.001, 1), ("gamma", 1.002, 1)]
    assert _annotate_apart(ax, crowded + [("far", 5, 5), ("farther", 9, 9)]) == [
        "alpha",
        "far",
        "farther",
    ]
    assert [t.get_text() for t in ax.texts] == ["alpha", "far", "farther"]
    _pyplot().close(fig)
    fig, ax = _pyplot().subplots()
    for i in range(3):
        ax.plot([0, 1], [i, i], label=f"run {i}")
    assert _legend(ax) is False
    for i in range(3, 12):
        ax.plot([0, 1], [i, i], label=f"run {i}")
    assert _legend(ax) is True
    x0 = ax.get_legend().get_window_extent().x0
    assert x0 > ax.get_window_extent().x1  # right of the axes
    _pyplot().close(fig)


def test_eval_split_names_follow_the_data_source():
    hub = EvalSplits.for_data("locuslab/TOFU", "forget05")
    assert (hub.forget, hub.real_authors, hub.holdout) == (
        "forget05_perturbed",
        "real_authors_perturbed",
        "holdout05",
    )
    assert EvalSplits.for_data("builtin", "forget01").forget == "forget01"


def test_report_lists_model_utilitys_nine_parts_and_the_kept_epoch():
    from uld.report import summary_of, tables

    splits = {r: {"prob": 0.5, "rouge_l": 0.25, "truth_ratio": 0.125} for r in UTILITY_ROLES}
    training = {"method": "npo", "train_seconds": 10.0, "best_epoch": 3}
    s = summary_of({"summary": {"forget_quality": 0.5}, "splits": splits, "training": training})
    assert s["real_authors_rouge_l"] == 0.25 and s["best_epoch"] == 3
    text = tables({"npo": s})
    assert "| npo | 0.500 | 0.250 | 0.125 | 0.500 |" in text
    assert "| Method | Epoch kept |" in text and "| npo | 3 | 10 |" in text


def test_seed_table_groups_runs_over_seeds_and_computes_their_statistics():
    from uld.report import seed_groups, seed_means, seed_table, tables

    runs = {
        "target": {"forget_quality": 0.01, "model_utility": 0.5},
        "npo": {"forget_quality": 0.99, "model_utility": 0.3, "forget_tr_gap": 0.1},
        "npo-seed1": {"forget_quality": 0.92, "model_utility": 0.2, "forget_tr_gap": 0.2},
        "npo-seed2": {"forget_quality": 0.16, "model_utility": 0.4, "forget_tr_gap": 0.6},
        "uld-lr1e-3-seed3": {"forget_quality": 0.5, "model_utility": None},
        "uld-lr1e-3-seed4": {"forget_quality": 0.25, "model_utility": 0.1},
    }
    assert seed_groups(runs) == {
        "npo": ["npo", "npo-seed1", "npo-seed2"],
        "uld-lr1e-3": ["uld-lr1e-3-seed3", "uld-lr1e-3-seed4"],
    }
    table = seed_table(runs)
    # median of (0.99, 0.92, 0.16) = 0.92, mean = 2.07 / 3 = 0.69; gap mean 0.9 / 3 = 0.3;
    # M.U. mean 0.3, min 0.2
    assert "| npo | 3 | 0.99, 0.92, 0.16 | 0.92 | 0.69 | 0.300 | 0.3000 | 0.2000 |" in table
    # a missing M.U. is shown as missing and left out of the mean; no gap at all: "–"
    assert "| uld-lr1e-3 | 2 | 0.5, 0.25 | 0.375 | 0.375 | – | 0.1000 | 0.1000 |" in table
    assert "Over seeds" in tables(runs) and "Over seeds" not in tables({"npo": runs["npo"]})
    # the means of every figure the seeds all have: AUCs (0.6 + 0.7 + 0.8) / 3 = 0.7; a figure
    # one seed lacks, or one that is missing (None), has no mean
    for i, (auc, es) in enumerate([(0.6, 0.1), (0.7, None), (0.8, 0.4)]):
        runs["npo" + (f"-seed{i}" if i else "")] |= {"mia_loss_auc": auc, "extraction_strength": es}
    runs["npo-seed2"]["mia_zlib_auc"] = 0.5
    means = seed_means(runs)
    assert set(means) == {"npo (3 seeds)", "uld-lr1e-3 (2 seeds)"}
    assert means["npo (3 seeds)"]["mia_loss_auc"] == pytest.approx(0.7)
    assert means["npo (3 seeds)"]["model_utility"] == pytest.approx(0.3)
    assert "extraction_strength" not in means["npo (3 seeds)"]
    assert "mia_zlib_auc" not in means["npo (3 seeds)"]
    assert "| npo (3 seeds) | " in tables(runs).split("Over seeds, means:")[1]


def test_utility_forget_plane_has_one_point_per_setting_over_seeds():
    from uld.report import settings_points

    runs = {
        "npo": {"forget_quality": 0.9, "model_utility": 0.3},
        "npo-seed1": {"forget_quality": 0.1, "model_utility": 0.2},
        "npo-seed2": {"forget_quality": 0.5, "model_utility": 0.4},
        "ga": {"forget_quality": 0.0, "model_utility": 0.25},  # underflowed p-value: log-safe
        "dpo": {"forget_quality": 0.2, "model_utility": None},  # not plotted
    }
    # npo: median F.Q. of (0.9, 0.1, 0.5) = 0.5, mean M.U. 0.3, ranges (0.1, 0.9) and (0.2, 0.4)
    (npo, fq, mu, fq_range, mu_range), ga = settings_points(runs)
    assert npo == "npo (3 seeds)" and fq == 0.5 and mu == pytest.approx(0.3)
    assert fq_range == (0.1, 0.9) and mu_range == (0.2, 0.4)
    assert ga == ("ga", 1e-30, 0.25, (1e-30, 1e-30), (0.25, 0.25))

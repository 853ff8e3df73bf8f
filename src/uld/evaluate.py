"""The TOFU evaluation protocol, run on any model uld can load (plain or ULD).

    roles = load_roles(EvalSplits())
    results = evaluate(model, tok, roles, reference=load_reference(path, roles["forget"]))
    results["summary"]  # forget_quality, forget_rouge, model_utility, retain_rouge, ...

Two kinds of model passes, both batched, longest inputs first:
- greedy generation (left padding, KV cache, `uld.logit_diff.decode`) for ROUGE-L recall;
- one teacher-forced forward per (question, answer) pair, LM head on answer positions only, for
  the answer probability, the truth ratio, the membership scores and extraction strength.
A plain model and a `ULDModel` go through the same code, so their costs compare like for like.

The roles of the splits (TOFU, Maini et al. 2024, Sec. 2.5): `forget` (what was unlearned),
`retain` (the retain split's evaluation rows), `real_authors` and `world_facts` (general
knowledge), and `holdout` (rows in no training set: the non-members of the membership test).
The maths lives in `uld.metrics`; this module only runs models and bookkeeps.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import fields
from pathlib import Path

import torch
from tqdm.auto import tqdm

from uld import metrics
from uld.assistant import base_lm
from uld.config import ROLES, UTILITY_PARTS, UTILITY_ROLES, EvalSplits
from uld.data.format import encode_qa, pad, prompt_ids
from uld.data.load import load_split
from uld.logit_diff import ULDModel, decode, load_any
from uld.mia import (
    ATTACKS,
    FREE,
    answer_losses,
    answer_positions_logits,
    as_target,
    aucs,
    gradient_norms,
)
from uld.models import load_model, model_cache, read_card
from uld.outdir import write_json


def load_roles(splits: EvalSplits, data: str = "builtin") -> dict[str, list[dict]]:
    """{role: rows} for every role with a split name."""
    return {f.name: load_split(v, data) for f in fields(splits) if (v := getattr(splits, f.name))}


# ---------------------------------------------------------------- model passes


def generate_answers(
    model,
    tokenizer,
    questions: list[str],
    batch_size: int = 8,
    max_new_tokens: int = 48,
    progress: bool = True,
    **gen_kwargs,
) -> list[str]:
    """Answers to `questions` (greedy unless gen_kwargs say otherwise), in order. A prompt
    longer than the model's context is refused before anything is generated; an answer that
    would run past the context is cut there, with a warning."""
    prompts = [prompt_ids(tokenizer, q) for q in questions]
    return generate_from_ids(
        model,
        tokenizer,
        prompts,
        batch_size,
        max_new_tokens,
        progress,
        order=sorted(range(len(questions)), key=lambda i: -len(questions[i])),
        names=[f"question {i} ({q[:60]!r}...)" for i, q in enumerate(questions)],
        **gen_kwargs,
    )


@torch.no_grad()
def generate_from_ids(
    model,
    tokenizer,
    prompts: list[list[int]],
    batch_size: int = 8,
    max_new_tokens: int = 48,
    progress: bool = True,
    order: list[int] | None = None,
    names: list[str] | None = None,
    strip: bool = True,
    **gen_kwargs,
) -> list[str]:
    """The decoded continuations of token-id prompts (`generate_answers` without the prompt
    format), in order, stripped of surrounding white space unless `strip` is False. `order`:
    the order the prompts are batched in (default longest first, which keeps padding low);
    `names`: how an error names each prompt."""
    if batch_size < 1 or max_new_tokens < 1:
        raise ValueError(
            f"batch size {batch_size} and max new tokens {max_new_tokens} must both be >= 1"
        )
    device = next(iter(model.parameters())).device
    context = context_length(model)
    longest = max(range(len(prompts)), key=lambda i: len(prompts[i]), default=None)
    if context and longest is not None and len(prompts[longest]) >= context:
        name = names[longest] if names else f"prompt {longest}"
        raise ValueError(
            f"{name} is {len(prompts[longest])} tokens as a prompt, and the model's context "
            f"holds {context}: shorten it"
        )
    if context and longest is not None and len(prompts[longest]) + max_new_tokens > context:
        print(
            f"[uld] warning: the longest prompt ({len(prompts[longest])} tokens) leaves room for "
            f"{context - len(prompts[longest])} of the {max_new_tokens} new tokens asked for in "
            f"the model's context of {context}; answers are cut there"
        )
    if order is None:
        order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    out: dict[int, str] = {}
    bar = tqdm(total=len(prompts), desc="generating", disable=not progress, leave=False)
    for s in range(0, len(order), batch_size):
        idx = order[s : s + batch_size]
        batch = pad([{"input_ids": prompts[i]} for i in idx], tokenizer.pad_token_id, side="left")
        room = context - batch["input_ids"].shape[1] if context else max_new_tokens
        seqs = decode(
            model,
            batch["input_ids"].to(device),
            batch["attention_mask"].to(device),
            max_new_tokens=min(max_new_tokens, room),
            pad_token_id=tokenizer.pad_token_id,
            **gen_kwargs,
        )
        new = seqs[:, batch["input_ids"].shape[1] :]
        for i, text in zip(idx, tokenizer.batch_decode(new, skip_special_tokens=True), strict=True):
            out[i] = text.strip() if strip else text
        bar.update(len(idx))
    bar.close()
    return [out[i] for i in range(len(prompts))]


def context_length(model) -> int | None:
    """How many positions the model (or a ULD model's target) can attend to, if it says."""
    net = model.target if isinstance(model, ULDModel) else model
    return getattr(base_lm(net).config, "max_position_embeddings", None)


def rouge_eval(
    model,
    tokenizer,
    rows: list[dict],
    batch_size: int = 8,
    progress: bool = True,
    sampling: dict | None = None,
):
    """(mean ROUGE-L recall, per-item list of {question, answer, generated, rouge_l}).
    `sampling`: generation settings (do_sample, temperature, top_p; max_new_tokens, else
    `answer_budget`); greedy by default."""
    sampling = dict(sampling or {})
    budget = sampling.pop("max_new_tokens", None) or answer_budget(tokenizer, rows)
    generated = generate_answers(
        model,
        tokenizer,
        [r["question"] for r in rows],
        batch_size,
        max_new_tokens=budget,
        progress=progress,
        **sampling,
    )
    scores = metrics.rouge_l_recall(generated, [r["answer"] for r in rows])
    items = [
        {"question": r["question"], "answer": r["answer"], "generated": g, "rouge_l": s}
        for r, g, s in zip(rows, generated, scores, strict=True)
    ]
    return sum(scores) / len(scores), items


def answer_budget(tokenizer, rows: list[dict], cap: int = 200) -> int:
    """New tokens to generate: 1.5 x the longest reference answer + 8, at most `cap` (TOFU's
    generation length is 200): long enough not to cut a recall-scored answer short."""
    longest = max(len(tokenizer(r["answer"], add_special_tokens=False).input_ids) for r in rows)
    return min(cap, int(1.5 * longest) + 8)


@torch.no_grad()
def score_answers(
    model,
    tokenizer,
    questions: list[str],
    answers: list[str],
    batch_size: int = 16,
    min_k: float = 0.4,
    progress: bool = False,
    mia: bool = True,
) -> dict[str, torch.Tensor]:
    """Teacher-forced scores of each (question, answer) pair, in order; each value is [N]:

    prob: P(a|q)^(1/|a|) (TOFU's length-normalised probability), n: |a| (answer + EOS tokens),
    loss: mean NLL (LOSS attack), min_k: Min-K% Prob (k = `min_k`), min_k_pp: Min-K%++ (the
    same k), es: extraction strength. mia=False: prob and n only (the membership scores'
    statistics over the vocabulary cost a tenth of the pass).
    """
    device = next(iter(model.parameters())).device
    items = [encode_qa(tokenizer, q, a) for q, a in zip(questions, answers, strict=True)]
    order = sorted(range(len(items)), key=lambda i: -len(items[i]["input_ids"]))
    keys = ("logp", "n", "loss", "min_k", "min_k_pp", "es") if mia else ("logp", "n")
    parts: dict[str, list] = {k: [] for k in keys}
    for s in tqdm(
        range(0, len(order), batch_size), desc="scoring", disable=not progress, leave=False
    ):
        batch = pad([items[i] for i in order[s : s + batch_size]], tokenizer.pad_token_id)
        batch = {k: v.to(device) for k, v in batch.items()}
        targets = batch["labels"][:, 1:]
        keep = targets != -100
        logits = answer_positions_logits(model, batch, keep).float()
        gold = targets[keep]
        logp_v = torch.log_softmax(logits, -1)
        logp = torch.zeros(keep.shape, device=device)
        logp[keep] = logp_v.gather(-1, gold[:, None]).squeeze(-1)
        parts["logp"].append(logp.sum(-1).double().cpu())
        parts["n"].append(keep.sum(-1).cpu())
        if not mia:
            continue
        mu, sigma = (torch.zeros(keep.shape, dtype=torch.float64, device=device) for _ in "ms")
        mu[keep], sigma[keep] = metrics.vocab_logp_moments(logp_v)
        hits = torch.zeros_like(keep)
        hits[keep] = logits.argmax(-1) == gold
        parts["loss"].append(metrics.loss_score(logp, keep).cpu())
        parts["min_k"].append(metrics.min_k_prob(logp, keep, min_k).cpu())
        parts["min_k_pp"].append(metrics.min_k_plus_plus(logp, mu, sigma, keep, min_k).cpu())
        parts["es"].append(metrics.extraction_strength_from_hits(hits, keep).cpu())
    inverse = torch.empty(len(order), dtype=torch.long)
    inverse[torch.tensor(order)] = torch.arange(len(order))
    out = {k: torch.cat(v)[inverse] for k, v in parts.items()}
    out["prob"] = metrics.normalised_prob(out.pop("logp"), out["n"])
    return out


def answer_probs(model, tokenizer, questions: list[str], answers: list[str], batch_size=16):
    """Length-normalised P(answer | question)^(1/|a|) per pair (TOFU's probability). -> [N]."""
    return score_answers(model, tokenizer, questions, answers, batch_size, mia=False)["prob"]


def truth_ratios(model, tokenizer, rows: list[dict], paraphrased: bool = True) -> torch.Tensor:
    """TOFU truth ratio per row: geometric mean of P̄(perturbed) over P̄(paraphrased answer)
    (the original answer when `paraphrased` is False, as TOFU does on real authors / world
    facts). -> R [N]."""
    return _truth_parts(model, tokenizer, rows, paraphrased)[0]


def perturbed_pairs(rows: list[dict]) -> tuple[list[str], list[str], int]:
    """(questions, answers, k): each row's first k perturbed answers after its original question
    (TOFU scores them there), row by row; k = the fewest perturbed answers of any row, so the
    probabilities reshape to [N, k]."""
    k = min(len(r["perturbed_answer"]) for r in rows)
    questions = [r["question"] for r in rows for _ in range(k)]
    return questions, [a for r in rows for a in r["perturbed_answer"][:k]], k


def _truth_parts(model, tokenizer, rows, paraphrased: bool, batch_size: int = 16, p_answer=None):
    """(R [N], P̄(true) [N], P̄(perturbed) [N, k]); k = the fewest perturbed answers of a row.

    p_answer [N]: P̄(answer) when already computed (reused when `paraphrased` is False)."""
    questions, answers, k = perturbed_pairs(rows)
    qs = [r["question"] for r in rows]
    if paraphrased or p_answer is None:
        questions = qs + questions
        answers = [r["paraphrased_answer"] if paraphrased else r["answer"] for r in rows] + answers
    p = answer_probs(model, tokenizer, questions, answers, batch_size)
    if len(p) > len(rows) * k:
        p_answer, p = p[: len(rows)], p[len(rows) :]
    p_wrong = p.view(len(rows), k)
    return metrics.truth_ratio(p_wrong, p_answer), p_answer, p_wrong


# ---------------------------------------------------------------- the protocol


def _usable(rows: list[dict], role: str, errors: list[dict]) -> list[int]:
    """Indices of rows that have what the role's truth ratio needs; the others go to `errors`."""
    need = ["perturbed_answer"] + (["paraphrased_answer"] if role in ("forget", "retain") else [])
    ok = []
    for i, r in enumerate(rows):
        missing = [f for f in need if not r.get(f)]
        if missing:
            errors.append({"role": role, "index": i, "error": f"no {', '.join(missing)}"})
        else:
            ok.append(i)
    return ok


def fluency(items: list[dict], scorer: tuple | None = None, batch_size: int = 16) -> dict:
    """Whether each generated answer (`items[i]["generated"]`) is still language: adds to each
    item `repetition` (the larger of `metrics.repetition` and `metrics.char_repetition`),
    `fluency_logp` (the scorer's mean log-likelihood per token of the answer to its question;
    None without a scorer or for an empty answer) and `degenerate` (`metrics.is_degenerate`, or
    an empty answer). Returns the split's share of degenerate answers and mean log-likelihood.

    scorer: (model, tokenizer), a fixed judge of fluency, the same for every model compared
    (an unlearned model judging its own loops would find them likely). A ULD or Offset model
    given as the scorer scores with its target alone (alpha 0): no second copy in memory."""
    answered = [i for i, it in enumerate(items) if it["generated"].strip()]
    logps: dict[int, float] = {}
    if scorer is not None and answered:
        model, tok = scorer
        saved = getattr(model, "alpha", None)
        if isinstance(model, ULDModel):
            model.alpha = 0.0  # the target's own logits (logit_diff: alpha 0 returns l_t)
        try:
            questions = [items[i]["question"] for i in answered]
            answers = [items[i]["generated"] for i in answered]
            probs = score_answers(model, tok, questions, answers, batch_size, mia=False)["prob"]
        finally:
            if isinstance(model, ULDModel):
                model.alpha = saved
        logps = {
            i: float(torch.log(p.clamp_min(1e-300))) for i, p in zip(answered, probs, strict=True)
        }
    for i, it in enumerate(items):
        text = it["generated"]
        it["repetition"] = max(metrics.repetition(text), metrics.char_repetition(text))
        it["fluency_logp"] = logps.get(i)
        it["degenerate"] = not text.strip() or metrics.is_degenerate(text, logps.get(i))
    return {
        "degenerate": sum(it["degenerate"] for it in items) / len(items),
        "fluency_logp": _mean(list(logps.values())),
    }


def fluency_scorer(
    model, tokenizer, path: str | None, spec: str = "", base: tuple | None = None
) -> tuple | None:
    """The (model, tokenizer) that judges fluency in `uld eval` (see `fluency`): spec "none" ->
    None (repetition only); a folder or hub id -> that model; "" -> the base the model was made
    from (`base_model`; `base` if already loaded), else the model itself."""
    if spec == "none":
        return None
    if spec:
        net, tok = load_model(spec)
        return net.eval(), tok
    return base or base_model(model, tokenizer, path) or (model, tokenizer)


def base_model(model, tokenizer, path: str | None) -> tuple | None:
    """(model, tokenizer) of the base `model` was made from: a ULD/Offset model's own target (the
    model itself, which scores as its target at alpha 0); an unlearned plain model's target (its
    card's `target`); a fine-tuned model's base (`base_model`); None where the folder names none
    or it cannot be loaded (said)."""
    if isinstance(model, ULDModel):
        return model, tokenizer
    card = read_card(path) if path and Path(path).is_dir() else {}
    base = card.get("target") or card.get("base_model")
    if not base:
        return None
    source = (
        Path(path, base) if not Path(base).is_absolute() and Path(path, base).exists() else base
    )
    try:
        net, tok = load_model(None if str(source) == "default" else str(source))
        return net.eval(), tok
    except Exception as e:  # a base that moved: say so, and go on without it
        print(f"[uld] could not load the base {base} of {path} ({e})")
        return None


# greedy answers are decoded GENERATE_BATCHES x batch_size rows at a time: a decoding step reads
# every weight once however many rows it carries, so 32 rows cost little more than 8 (measured
# on one CPU thread, SmolLM2-135M, 160 TOFU-style questions: 46 s against 100 s, every answer
# the same text)
GENERATE_BATCHES = 4


def evaluate_role(
    model,
    tokenizer,
    role: str,
    rows: list[dict],
    batch_size: int = 8,
    progress: bool = True,
    generate: bool = True,
    sampling: dict | None = None,
    scorer: tuple | None = None,
) -> dict:
    """One split under its role: per-item values and the role's aggregates (TOFU Sec. 2.5).

    forget/retain: prob = mean P̄(a), truth ratio R = P̄(perturbed)/P̄(paraphrased);
    real_authors/world_facts: prob = mean P̄(a)/(P̄(a)+ΣP̄(perturbed)), R uses the answer itself;
    holdout: teacher-forced scores only (for the membership test). generate=False leaves out the
    greedy answers and their ROUGE-L (most of the cost; the truth ratios and F.Q. stay).
    Generated answers are checked for fluency (`fluency`, with `scorer` if given).
    """
    errors: list[dict] = []
    items = [
        {"index": i, "question": r["question"], "answer": r["answer"]} for i, r in enumerate(rows)
    ]
    scores = score_answers(
        model, tokenizer, [r["question"] for r in rows], [r["answer"] for r in rows], 2 * batch_size
    )
    zlib = metrics.zlib_score(scores["loss"], [r["answer"] for r in rows])
    for i, it in enumerate(items):
        it.update(
            prob=scores["prob"][i].item(),
            loss=scores["loss"][i].item(),
            min_k=scores["min_k"][i].item(),
            min_k_pp=scores["min_k_pp"][i].item(),
            zlib=float(zlib[i]),
            es=scores["es"][i].item(),
        )
    out: dict = {"rows": len(rows), "items": items, "errors": errors}
    if role == "holdout":
        return out
    if generate:
        rouge, gen = rouge_eval(
            model, tokenizer, rows, GENERATE_BATCHES * batch_size, False, sampling
        )
        for it, g in zip(items, gen, strict=True):
            it.update(generated=g["generated"], rouge_l=g["rouge_l"])
        out["rouge_l"] = rouge
        out |= fluency(items, scorer, 2 * batch_size)
    ok = _usable(rows, role, errors)
    if errors:
        print(f"[uld] {role}: {len(errors)} row(s) left out of the truth ratio: {errors[:3]}")
    if not ok:
        return out
    R, _, p_wrong = _truth_parts(
        model,
        tokenizer,
        [rows[i] for i in ok],
        paraphrased=role in ("forget", "retain"),
        batch_size=2 * batch_size,
        p_answer=scores["prob"][ok],  # real authors / world facts: R uses the answer itself
    )
    for i, r in zip(ok, R.tolist(), strict=True):
        items[i]["truth_ratio"] = r
    if role in ("forget", "retain"):
        out["prob"] = scores["prob"].mean().item()
    else:
        out["prob"] = metrics.relative_answer_prob(scores["prob"][ok], p_wrong)
    score = metrics.forget_truth_score if role == "forget" else metrics.retain_truth_score
    out["truth_ratio"] = score(R)
    return out


def evaluate(
    model,
    tokenizer,
    roles: dict[str, list[dict]],
    reference: dict | None = None,
    batch_size: int = 8,
    progress: bool = True,
    generate: bool = True,
    sampling: dict | None = None,
    scorer: tuple | None = None,
    mia: Sequence[str] = FREE,
    mia_reference: tuple | None = None,
) -> dict:
    """The whole protocol. roles: {role: rows} (see `ROLES`); reference: `load_reference(...)`,
    the retain model's per-item forget truth ratios (Forget Quality needs it); generate=False:
    teacher-forced figures only (no ROUGE-L, no Model Utility); sampling: generation settings
    for the generated answers (see `rouge_eval`; TOFU's protocol is greedy); scorer: the
    (model, tokenizer) that judges the generated answers' fluency (`fluency`; None: repetition
    only); mia: the membership attacks (`uld.mia.ATTACKS`) run on the forget and holdout rows
    (the free ones always are; "ref" needs `mia_reference`, the reference model's (model,
    tokenizer), or the model itself to score as its own target; "gradnorm" costs a backward per
    row).

    Returns {"splits": {role: evaluate_role(...)}, "summary": {...}, "reference": its source};
    the summary holds
    forget_quality, forget_rouge, model_utility, retain_rouge, the forget probability and truth
    ratio, the membership AUCs (LOSS, Min-K%, zlib, Min-K%++, reference, gradient norm) and
    extraction strength, where computable.
    """
    unknown = sorted(set(roles) - set(ROLES))
    if unknown:
        raise ValueError(f"unknown evaluation roles {unknown}; choose from {', '.join(ROLES)}")
    if "ref" in mia and mia_reference is None:
        raise ValueError(
            "the reference-model attack needs a reference model (--mia-reference MODEL); "
            "leave ref out of --mia without one"
        )
    start = time.time()
    splits = {}
    bar = tqdm(list(roles), desc="evaluating", disable=not progress)
    for role in bar:
        bar.set_postfix_str(role)
        splits[role] = evaluate_role(
            model, tokenizer, role, roles[role], batch_size, progress, generate, sampling, scorer
        )
    if "forget" in roles and "holdout" in roles:
        for role in ("forget", "holdout"):
            membership(model, tokenizer, splits[role]["items"], mia, mia_reference, batch_size)
    return {
        "splits": splits,
        "summary": summarise(splits, reference),
        "reference": reference["source"] if reference else None,
        "eval_seconds": round(time.time() - start, 1),
    }


def shard_roles(roles: dict[str, list[dict]], share) -> dict[str, list[dict]]:
    """Each role's rows `share(n)` (a range of row indices), for one of several processes to
    evaluate (`uld.dist`). Perturbed answers are cut to the fewest any usable row of the whole
    split has, the k that `perturbed_pairs` takes on the whole split, so each process's truth
    ratios are those of one process on all the rows."""
    out = {}
    for role, rows in roles.items():
        ok = _usable(rows, role, [])
        k = min((len(rows[i]["perturbed_answer"]) for i in ok), default=0)
        part = [rows[i] for i in share(len(rows))]
        if ok:
            part = [r | {"perturbed_answer": r["perturbed_answer"][:k]} for r in part]
        out[role] = part
    return out


def merge_shards(shards: list[dict[str, dict]]) -> dict[str, dict]:
    """One `evaluate(...)["splits"]` out of those of consecutive shares of every role's rows
    (`shard_roles`, in process order): the items and errors joined, their indices those of the
    whole split, and each aggregate (a mean over rows, usable rows or fluency-scored answers)
    the mean of the shares' weighted by what each mean is over, which is the mean over all."""
    merged: dict[str, dict] = {}
    for role in shards[0]:
        parts = [s[role] for s in shards]
        items, errors, start = [], [], 0
        for p in parts:
            items += [it | {"index": it["index"] + start} for it in p["items"]]
            errors += [e | {"index": e["index"] + start} for e in p["errors"]]
            start += p["rows"]
        out = {"rows": start, "items": items, "errors": errors}
        for key in ("rouge_l", "degenerate", "fluency_logp", "prob", "truth_ratio"):
            have = [(p[key], _weight(key, role, p)) for p in parts if p.get(key) is not None]
            have = [(v, w) for v, w in have if w]
            if any(key in p for p in parts):
                total = sum(w for _, w in have)
                out[key] = sum(v * w for v, w in have) / total if total else None
        merged[role] = out
    return merged


def _weight(key: str, role: str, part: dict) -> int:
    """How many values a role's aggregate `key` is the mean of (see `evaluate_role`)."""
    usable = sum("truth_ratio" in it for it in part["items"])
    if key == "truth_ratio" or (key == "prob" and role not in ("forget", "retain")):
        return usable
    if key == "fluency_logp":
        return sum(it.get("fluency_logp") is not None for it in part["items"])
    return part["rows"]


SUMMARY_KEYS = (
    "forget_quality",
    "forget_rouge",
    "model_utility",
    "retain_rouge",
    "forget_prob",
    "forget_truth_ratio",
    "forget_tr_gap",
    "mia_loss_auc",
    "mia_min_k_auc",
    "mia_zlib_auc",
    "mia_min_k_pp_auc",
    "mia_ref_auc",
    "mia_gradnorm_auc",
    "extraction_strength",
)


def membership(
    model, tokenizer, items: list[dict], attacks, reference: tuple | None, batch_size: int = 8
) -> None:
    """Adds to each item the scores of the attacks that need passes of their own: `ref` (the
    item's loss minus the reference model's, `metrics.reference_score`; a reference that is the
    model itself scores as its own target) and `grad_norm` (`uld.mia.gradient_norms`)."""
    questions, answers = [it["question"] for it in items], [it["answer"] for it in items]
    if "ref" in attacks and reference is not None:
        ref_model, ref_tok = reference
        with as_target(ref_model) if ref_model is model else nullcontext():
            ref_loss = answer_losses(ref_model, ref_tok, questions, answers, 2 * batch_size)
        ref = metrics.reference_score([it["loss"] for it in items], ref_loss)
        for it, r, rl in zip(items, ref.tolist(), ref_loss.tolist(), strict=True):
            it.update(ref=r, ref_loss=rl)
    if "gradnorm" in attacks:
        for it, g in zip(
            items, gradient_norms(model, tokenizer, questions, answers).tolist(), strict=True
        ):
            it["grad_norm"] = g


def summarise(splits: dict[str, dict], reference: dict | None = None) -> dict:
    """Headline numbers from per-role results (see `evaluate`). None where not computable."""
    s: dict = dict.fromkeys(SUMMARY_KEYS)
    forget = splits.get("forget")
    if forget:
        s["forget_rouge"] = forget.get("rouge_l")
        s["forget_prob"] = forget.get("prob")
        s["forget_truth_ratio"] = forget.get("truth_ratio")
        s["extraction_strength"] = _mean([it["es"] for it in forget["items"]])
        R = _values(forget, "truth_ratio")
        if reference is not None and R:
            s["forget_quality"] = metrics.forget_quality(R, reference["truth_ratios"])
            # row by row: load_reference checked its questions are this split's, in order
            paired = [it["index"] for it in forget["items"] if "truth_ratio" in it]
            ref_R = [reference["truth_ratios"][i] for i in paired]
            if min(R + ref_R) > 0:  # a ratio of 0 (a probability underflowed) has no log
                s["forget_tr_gap"] = metrics.truth_ratio_gap(R, ref_R)
        if "holdout" in splits:  # every attack whose per-item scores both splits have
            s |= aucs(forget["items"], splits["holdout"]["items"], list(ATTACKS))
    if "retain" in splits:
        s["retain_rouge"] = splits["retain"].get("rouge_l")
    for role in ("forget", "retain", "real_authors", "world_facts"):
        if splits.get(role, {}).get("degenerate") is not None:
            s[f"{role}_degenerate"] = splits[role]["degenerate"]
    nine = [splits.get(r, {}).get(k) for r in UTILITY_ROLES for k in UTILITY_PARTS]
    s["model_utility"] = metrics.model_utility(nine) if all(v is not None for v in nine) else None
    return s


def _values(split: dict, key: str) -> list[float]:
    return [it[key] for it in split["items"] if key in it]


def _mean(xs: list[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


# ---------------------------------------------------------------- the reference (retain model)


def reference_from_results(results: dict, source: str) -> dict:
    """The retain model's forget-split truth ratios out of an evaluation result."""
    forget = results.get("splits", {}).get("forget")
    if not forget or not _values(forget, "truth_ratio"):
        raise ValueError(
            f"{source} has no per-item forget truth ratios; evaluate the retain model with a "
            "forget split (uld eval --model RETAIN --out DIR) and pass DIR/eval.json"
        )
    return {
        "source": source,
        "forget_questions": [it["question"] for it in forget["items"] if "truth_ratio" in it],
        "truth_ratios": _values(forget, "truth_ratio"),
    }


def load_reference(path: str | Path, forget_rows: list[dict]) -> dict:
    """The Forget Quality reference: a results JSON (`uld eval --out` of the retain model), or a
    retain model folder, whose forget truth ratios are then computed once and cached as
    `<ULD_HOME>/references/<key>.json` (key = model folder, its weights' mtime, the forget rows).

    Refuses a reference computed on other forget questions than `forget_rows`.
    """

    path = Path(path)
    questions = [r["question"] for r in forget_rows]
    if path.is_dir() and (path / "eval.json").exists():  # a `uld eval --out` folder
        path = path / "eval.json"
    if path.is_file():
        ref = reference_from_results(json.loads(path.read_text()), str(path))
    elif path.is_dir():
        cache = model_cache("references", path, forget_rows)
        if cache.exists():
            ref = json.loads(cache.read_text())
            print(f"[uld] reference truth ratios from the cache {cache}")
        else:
            print(f"[uld] computing the reference truth ratios of {path} (once; cached)")
            model, tok = load_any(str(path))
            R = truth_ratios(model, tok, forget_rows)
            ref = {"source": str(path), "forget_questions": questions, "truth_ratios": R.tolist()}
            write_json(ref, cache)
    else:
        raise ValueError(
            f"--reference {path} does not exist; give the retain model's folder or the "
            "eval.json that `uld eval --model RETAIN --out DIR` wrote"
        )
    if ref["forget_questions"] != questions:
        raise ValueError(
            f"the reference {path} was computed on other forget questions than this run's forget "
            "split; evaluate the retain model on the same forget split"
        )
    return ref

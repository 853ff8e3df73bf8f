"""MUSE's evaluation on raw text, run on any model uld can load (plain or ULD).

    data = load_muse("builtin-muse")                        # a `MuseData`
    reference = privleak_reference(RETRAINED, data)         # the retrained model's AUC
    results = evaluate_muse(model, tok, data, reference)
    results["summary"]  # verbmem_forget, knowmem_forget, privleak, knowmem_retain, ...

Shi et al. 2024, "MUSE: Machine Unlearning Six-Way Evaluation for Language Models"
(arXiv:2407.06460), Sec. 3, and its code (github.com/swj0419/muse_bench: `eval.py`,
`metrics/verbmem.py`, `metrics/knowmem.py`, `metrics/privleak.py`):

- C1 VerbMem on D_f: each `verbmem` prompt is continued greedily for 128 new tokens (fewer where
  its true continuation `gt` is shorter); ROUGE-L F1 (`metrics.rouge_l_f1`) against the first 128
  tokens of `gt`; the mean.
- C2 KnowMem on D_f, C4 KnowMem on D_r: each question is asked after the split's few-shot
  demonstrations (`knowmem_prompt`), answered greedily in at most 32 new tokens, cut at MUSE's
  stop strings; ROUGE-L F1 against the answer; the mean.
- C3 PrivLeak: Min-40% Prob (`metrics.min_k_prob`, k = 0.4) of every privleak forget and holdout
  text, their AUC in MUSE's orientation (`metrics.privleak_auc`), relative to the retrained
  model's AUC on the same texts (`metrics.priv_leak`, percent). Without a reference the AUC is
  still reported, and PrivLeak is reported as not computed (None), as TOFU's Forget Quality is
  without its retain model; such an evaluation of the retrained model is the reference of the
  others.
- C5 scalability, C6 sustainability: one evaluation per unlearned model of a series (`series`:
  which forget set of the data's `scal` or `sust` it unlearned); `uld report` draws the series.

Prompts are raw text, tokenised as MUSE does (`tokenizer(text, add_special_tokens=True)`: a BOS
where the tokenizer adds one), never a chat template: MUSE's target is a language model trained
on the raw corpus. Where uld differs from muse_bench: MUSE cuts `gt` to 128 tokens counting
its BOS (127 text tokens on Llama), uld to 128 text tokens, and generates as many tokens as that
cut `gt` has, where MUSE always generates 128 (its gts are about 128 tokens long); a verbmem
prompt that would not leave room for the continuation in the model's context keeps its last
tokens (counted in `prompts_cut`), where MUSE's 4,096-token Llama never needs to; a privleak
text is scored on its first 2,048 tokens (or the context's length if shorter; open-unlearning's
`max_length` 2048), MUSE scores it whole; Min-K% uses max(1, floor(0.4 n)) tokens, MUSE
floor(0.4 n).

The maths lives in `uld.metrics`; this module runs models and bookkeeps.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from uld import metrics
from uld.data.format import pad
from uld.data.muse import MuseData
from uld.evaluate import context_length, generate_from_ids
from uld.logit_diff import ULDModel, load_any
from uld.mia import answer_positions_logits
from uld.models import model_cache
from uld.outdir import locked, output_dir, write_json
from uld.report import model_info
from uld.report_muse import write_muse_eval

VERBMEM_TOKENS = 128  # muse_bench eval.py: verbmem_max_new_tokens
KNOWMEM_TOKENS = 32  # muse_bench eval.py: knowmem_max_new_tokens
MIN_K = 0.4  # muse_bench eval.py: privleak_auc_key "forget_holdout_Min-40%"
TEXT_TOKENS = 2048  # open-unlearning MUSE_MIA max_length
STOPS = ("\n\n", "\nQuestion", "Question:")  # muse_bench metrics/knowmem.py
ROUGE_KEYS = ("verbmem_forget", "knowmem_forget", "knowmem_retain")  # summary: mean ROUGE-L F1


def text_ids(tokenizer, text: str) -> list[int]:
    """Raw text as MUSE tokenises it: special tokens where the tokenizer adds them (a BOS)."""
    return tokenizer(text, add_special_tokens=True).input_ids


def knowmem_prompt(question: str, shots: list[dict]) -> str:
    """MUSE's few-shot QA prompt: each demonstration as "Question: q\\nAnswer: a\\n\\n", then
    "Question: q\\nAnswer: " (with its trailing space). muse_bench `metrics/knowmem.py`."""
    demos = "".join(f"Question: {s['question']}\nAnswer: {s['answer']}\n\n" for s in shots)
    return demos + f"Question: {question}\nAnswer: "


def cut_at_stops(text: str, stops: tuple[str, ...] = STOPS) -> str:
    """The answer before the first of MUSE's stop strings, in MUSE's order (`knowmem.py`,
    `get_prefix_before_words_occur`): what follows is the model starting the next question."""
    for stop in stops:
        text = text.split(stop)[0]
    return text


# ---------------------------------------------------------------- model passes


def verbmem(
    model, tokenizer, rows: list[dict], max_new_tokens: int = VERBMEM_TOKENS, batch_size: int = 8
) -> dict:
    """C1 on `rows` ({"prompt", "gt"}): per-item continuation and ROUGE-L, and their mean."""
    context = context_length(model)
    room = context - max_new_tokens if context else None
    if room is not None and room < 1:
        raise ValueError(
            f"the model's context ({context} tokens) leaves no room for a prompt before "
            f"{max_new_tokens} new tokens; ask for fewer (--verbmem-tokens)"
        )
    prompts, cut = [], 0
    for r in rows:
        ids = text_ids(tokenizer, r["prompt"])
        if room is not None and len(ids) > room:
            ids, cut = ids[-room:], cut + 1
        prompts.append(ids)
    if cut:
        print(
            f"[uld] {cut} verbmem prompt(s) keep their last {room} tokens, to leave room for "
            f"{max_new_tokens} new ones in the model's context of {context}"
        )
    gt_ids = [tokenizer(r["gt"], add_special_tokens=False).input_ids[:max_new_tokens] for r in rows]
    gts = [tokenizer.decode(ids, skip_special_tokens=True) for ids in gt_ids]
    # As many new tokens as the true continuation has, up to max_new_tokens: MUSE's gts are
    # about 128 tokens long (MUSE-News: 69-98 words), so there this is MUSE's rule; a shorter
    # gt would otherwise have its F1 cut by text the model was never asked to match.
    budgets = [max(1, len(ids)) for ids in gt_ids]
    out = [""] * len(rows)
    for budget in sorted(set(budgets)):
        idx = [i for i, b in enumerate(budgets) if b == budget]
        texts = generate_from_ids(
            model,
            tokenizer,
            [prompts[i] for i in idx],
            batch_size,
            budget,
            False,
            names=[f"verbmem prompt {i}" for i in idx],
            strip=False,
        )
        for i, text in zip(idx, texts, strict=True):
            out[i] = text
    f1 = metrics.rouge_l_f1(out, gts)
    items = [
        {"index": i, "prompt": r["prompt"], "gt": g, "new_tokens": b, "generated": o, "rouge_l": f}
        for i, (r, g, b, o, f) in enumerate(zip(rows, gts, budgets, out, f1, strict=True))
    ]
    return {"rows": len(rows), "items": items, "rouge_l": _mean(f1), "prompts_cut": cut}


def knowmem(
    model,
    tokenizer,
    rows: list[dict],
    shots: list[dict],
    max_new_tokens: int = KNOWMEM_TOKENS,
    batch_size: int = 8,
) -> dict:
    """C2 / C4 on QA `rows` after the few-shot `shots`: per-item answer and ROUGE-L, the mean."""
    prompts = [text_ids(tokenizer, knowmem_prompt(r["question"], shots)) for r in rows]
    names = [f"knowmem question {i} ({r['question'][:60]!r}...)" for i, r in enumerate(rows)]
    raw = generate_from_ids(
        model, tokenizer, prompts, batch_size, max_new_tokens, False, names=names, strip=False
    )
    answers = [cut_at_stops(o) for o in raw]
    f1 = metrics.rouge_l_f1(answers, [r["answer"] for r in rows])
    items = [
        {"index": i, "question": r["question"], "answer": r["answer"], "generated": a, "rouge_l": f}
        for i, (r, a, f) in enumerate(zip(rows, answers, f1, strict=True))
    ]
    return {"rows": len(rows), "shots": len(shots), "items": items, "rouge_l": _mean(f1)}


@torch.no_grad()
def score_texts(
    model,
    tokenizer,
    texts: list[str],
    k: float = MIN_K,
    max_tokens: int = TEXT_TOKENS,
    tokens_per_batch: int = 4096,
) -> list[dict]:
    """Teacher-forced scores of each text's first `max_tokens` tokens, in order: {"tokens",
    "min_k" (Min-K% Prob, higher = more likely seen), "loss" (mean NLL)}. Every token after the
    first is scored. Batches hold about `tokens_per_batch` tokens (the LM head's [N, V] logits
    are the memory peak)."""
    device = next(iter(model.parameters())).device
    context = context_length(model)
    limit = min(max_tokens, context) if context else max_tokens
    ids = [text_ids(tokenizer, t)[:limit] for t in texts]
    short = [i for i, x in enumerate(ids) if len(x) < 2]
    if short:
        raise ValueError(
            f"privleak text(s) {short} have fewer than 2 tokens: nothing to score; drop them"
        )
    order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
    out: dict[int, dict] = {}
    s = 0
    while s < len(order):
        n = max(1, tokens_per_batch // len(ids[order[s]]))  # the longest of the batch comes first
        idx = order[s : s + n]
        s += n
        batch = pad([{"input_ids": ids[i], "labels": ids[i]} for i in idx], tokenizer.pad_token_id)
        batch = {key: v.to(device) for key, v in batch.items()}
        targets = batch["labels"][:, 1:]
        keep = targets != metrics.IGNORE_INDEX
        logits = answer_positions_logits(model, batch, keep).float()
        logp = torch.zeros(keep.shape, device=device)
        logp[keep] = -F.cross_entropy(logits, targets[keep], reduction="none")
        min_k = metrics.min_k_prob(logp, keep, k).tolist()
        loss = metrics.loss_score(logp, keep).tolist()
        for j, i in enumerate(idx):
            out[i] = {"tokens": len(ids[i]), "min_k": min_k[j], "loss": loss[j]}
    return [out[i] for i in range(len(texts))]


def privleak_texts(data: MuseData) -> tuple[list[str], list[str]]:
    """(forget, holdout) texts of the membership test: the `privleak` splits, or where the data
    has none, its raw `forget` and `holdout` documents."""
    return data.privleak_forget or data.forget, data.privleak_holdout or data.holdout


def privleak_fingerprint(data: MuseData, k: float, max_tokens: int) -> str:
    """What a PrivLeak AUC depends on besides the model: the texts and the Min-K% settings."""
    forget, holdout = privleak_texts(data)
    blob = json.dumps([forget, holdout, k, max_tokens]).encode()
    return hashlib.sha1(blob).hexdigest()[:16]


def privleak_scores(
    model, tokenizer, data: MuseData, k: float = MIN_K, max_tokens: int = TEXT_TOKENS
) -> dict:
    """Min-K% scores of the privleak forget and holdout texts, their AUC in MUSE's orientation
    (`metrics.privleak_auc`) and the fingerprint of what it was computed on."""
    forget, holdout = privleak_texts(data)
    if not forget or not holdout:
        raise ValueError(
            f"PrivLeak needs forget and holdout texts; {data.source or 'the data'} has "
            f"{len(forget)} and {len(holdout)}"
        )
    f = score_texts(model, tokenizer, forget, k, max_tokens)
    h = score_texts(model, tokenizer, holdout, k, max_tokens)
    auc = metrics.privleak_auc([x["min_k"] for x in f], [x["min_k"] for x in h])
    return {
        "forget": [{"index": i} | x for i, x in enumerate(f)],
        "holdout": [{"index": i} | x for i, x in enumerate(h)],
        "auc": auc,
        "k": k,
        "max_tokens": max_tokens,
        "fingerprint": privleak_fingerprint(data, k, max_tokens),
    }


# ---------------------------------------------------------------- the reference (retrained model)


def privleak_reference(
    path: str | Path, data: MuseData, k: float = MIN_K, max_tokens: int = TEXT_TOKENS
) -> dict:
    """PrivLeak's reference: the retrained model's AUC on this data's privleak texts, from its
    MUSE evaluation (a `uld eval --out` folder or its eval.json) or computed from the retrained
    model's folder (once; cached under `<ULD_HOME>/privleak-references/`). -> {"source", "auc",
    "fingerprint"}. Refuses an evaluation made on other texts or Min-K% settings."""
    path = Path(path)
    want = privleak_fingerprint(data, k, max_tokens)
    if path.is_dir() and (path / "eval.json").exists():
        path = path / "eval.json"
    if path.is_file():
        results = json.loads(path.read_text())
        leak = results.get("splits", {}).get("privleak") or {}
        if results.get("protocol") != "muse" or leak.get("auc") is None:
            raise ValueError(
                f"--reference {path} is not a MUSE evaluation with a PrivLeak AUC; evaluate the "
                "retrained model on the same data (uld eval --model RETRAINED --data ... --out "
                "DIR) and pass DIR"
            )
        if leak.get("fingerprint") != want:
            raise ValueError(
                f"--reference {path} was evaluated on other privleak texts or Min-K% settings "
                "than this evaluation; evaluate the retrained model on the same data"
            )
        return {"source": str(path), "auc": leak["auc"], "fingerprint": want}
    if not path.is_dir():
        raise ValueError(
            f"--reference {path} does not exist; give the retrained model's folder or the "
            "folder `uld eval --model RETRAINED --out DIR` wrote"
        )
    cache = model_cache("privleak-references", path, want)
    if cache.exists():
        print(f"[uld] the reference's PrivLeak AUC from the cache {cache}")
        return json.loads(cache.read_text())
    print(f"[uld] computing the PrivLeak AUC of the reference {path} (once; cached)")
    model, tok = load_any(str(path))
    ref = {
        "source": str(path),
        "auc": privleak_scores(model, tok, data, k, max_tokens)["auc"],
        "fingerprint": want,
    }
    write_json(ref, cache)
    return ref


# ---------------------------------------------------------------- the protocol


def series_point(data: MuseData, tokenizer, spec: str) -> dict:
    """`--series KIND:STEP` (KIND scal or sust, STEP from 1) as a point of a C5/C6 series: the
    model unlearned the data's `scal` forget set STEP (nested sets of growing size), or the sust
    requests 1..STEP one after the other. -> {"kind", "step", "forget_docs", "forget_tokens"}
    (the documents unlearned so far; None where the data has no such sets)."""
    m = re.fullmatch(r"\s*(scal|sust)\s*:\s*(\d+)\s*", spec or "")
    if not m or int(m.group(2)) < 1:
        raise ValueError(
            f"--series {spec!r}: give KIND:STEP with KIND scal (forget set STEP of the nested, "
            "growing ones) or sust (after request STEP of the sequential ones), STEP from 1"
        )
    kind, step = m.group(1), int(m.group(2))
    sets = data.scal if kind == "scal" else data.sust
    if sets and step > len(sets):
        raise ValueError(f"--series {spec}: the data has {len(sets)} {kind} forget sets")
    point: dict = {"kind": kind, "step": step, "forget_docs": None, "forget_tokens": None}
    if sets:
        docs = sets[step - 1] if kind == "scal" else [d for s in sets[:step] for d in s]
        point["forget_docs"] = len(docs)
        point["forget_tokens"] = sum(len(text_ids(tokenizer, d)) for d in docs)
    return point


def evaluate_muse(
    model,
    tokenizer,
    data: MuseData,
    reference: dict | None = None,
    batch_size: int = 8,
    verbmem_tokens: int = VERBMEM_TOKENS,
    knowmem_tokens: int = KNOWMEM_TOKENS,
    k: float = MIN_K,
    max_text_tokens: int = TEXT_TOKENS,
    progress: bool = True,
) -> dict:
    """MUSE's criteria C1-C4 for one model (see the module docstring). reference:
    `privleak_reference(...)`, the retrained model's AUC (PrivLeak is None without it).

    Returns {"protocol": "muse", "splits": {"verbmem_forget", "knowmem_forget", "knowmem_retain",
    "privleak"}, "summary", "reference", "settings", "eval_seconds"}; the summary holds
    verbmem_forget, knowmem_forget, knowmem_retain (mean ROUGE-L F1 in [0, 1]), privleak
    (percent), privleak_auc and the reference's, each None where the data lacks its split.
    """
    if reference is not None and reference.get("fingerprint") != privleak_fingerprint(
        data, k, max_text_tokens
    ):
        raise ValueError(
            f"the reference {reference.get('source')} was computed on other privleak texts or "
            "Min-K% settings than this evaluation"
        )
    start = time.time()
    splits: dict[str, dict] = {}
    bar = tqdm(total=4, desc="MUSE", disable=not progress)
    if data.verbmem:
        splits["verbmem_forget"] = verbmem(
            model, tokenizer, data.verbmem, verbmem_tokens, batch_size
        )
    bar.update()
    for split, rows, shots in (
        ("knowmem_forget", data.forget_qa, data.forget_qa_icl),
        ("knowmem_retain", data.retain_qa, data.retain_qa_icl),
    ):
        if rows:
            splits[split] = knowmem(model, tokenizer, rows, shots, knowmem_tokens, batch_size)
        bar.update()
    if all(privleak_texts(data)):
        splits["privleak"] = privleak_scores(model, tokenizer, data, k, max_text_tokens)
    bar.update()
    bar.close()
    summary = {key: splits.get(key, {}).get("rouge_l") for key in ROUGE_KEYS}
    auc = splits.get("privleak", {}).get("auc")
    summary |= {"privleak": None, "privleak_auc": auc, "reference_privleak_auc": None}
    if reference is not None and auc is not None:
        summary["reference_privleak_auc"] = reference["auc"]
        try:
            summary["privleak"] = metrics.priv_leak(auc, reference["auc"])
        except ValueError as e:
            print(f"[uld] PrivLeak not computed: {e}")
    return {
        "protocol": "muse",
        "splits": splits,
        "summary": summary,
        "reference": reference["source"] if reference else None,
        "settings": {
            "verbmem_tokens": verbmem_tokens,
            "knowmem_tokens": knowmem_tokens,
            "min_k": k,
            "max_text_tokens": max_text_tokens,
        },
        "eval_seconds": round(time.time() - start, 1),
    }


def evaluate_muse_model(
    model_path: str | Path | None,
    data: MuseData,
    name: str | None = None,
    reference: dict | None = None,
    alpha: float | None = None,
    filter: float | None = None,
    target: str | None = None,
    combine: str | None = None,
    info: dict | None = None,
    series: str = "",
    loaded: tuple | None = None,
    **kwargs,
) -> dict:
    """`evaluate_muse` on the model at `model_path` (any folder `load_any` reads; None: the
    embedded default), with its card: name, model, kind (plain or uld), how it was trained,
    `info`, and its place in a C5/C6 series (`series_point`) when `series` is given. `loaded`:
    the (model, tokenizer) if already loaded. `kwargs` go to `evaluate_muse`."""
    if loaded is None:
        path = None if model_path is None else str(model_path)
        loaded = load_any(path, alpha, filter, target, combine)
    model, tok = loaded
    point = series_point(data, tok, series) if series else None
    name = name or (Path(model_path).name if model_path else "default")
    res = {
        "name": name,
        "model": str(model_path or "default"),
        "kind": "uld" if isinstance(model, ULDModel) else "plain",
        "training": model_info(model_path) if model_path else {},
        "data": data.source,
        **(info or {}),
    }
    if point:
        res["series"] = point
    print(
        f"[uld] evaluating {name} (MUSE): verbmem {len(data.verbmem)}, forget QA "
        f"{len(data.forget_qa)}, retain QA {len(data.retain_qa)}, privleak "
        + " / ".join(str(len(t)) for t in privleak_texts(data))
    )
    return res | evaluate_muse(model, tok, data, reference, **kwargs)


def evaluate_muse_to(folder: str | Path, results: dict, command: str, overwrite: bool = False):
    """Write a MUSE evaluation as the folder `folder` (eval.json and eval.md), whole, locked,
    through `uld.outdir`."""
    with locked(folder), output_dir(folder, command, overwrite) as tmp:
        write_muse_eval(results, tmp)


def _mean(xs: list[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None

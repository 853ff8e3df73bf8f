"""Choosing ULD's alpha without a retain model.

An unlearned model should treat the forget rows as it treats rows of the same kind that it never
saw. TOFU's Forget Quality checks this against a retain model (the KS test of the forget truth
ratios of the two models, Maini et al. 2024, Sec. 2.5), which a user rarely has. `choose_alpha`
checks it against the same model's truth ratios on *held-out* rows: questions of the same kind
about other subjects, in no training set (TOFU's `holdout` rows, the non-members of the
membership test). It picks the alpha whose forget and held-out truth ratios a two-sample KS test
tells apart least; ties go to the smaller gap between the two medians of log R.

The target's and the assistant's logits come from one teacher-forced pass; every alpha of the
grid is combined from them on the plausible set only (`combined_at_tokens`), so a grid of 21
costs little more than one pass over the rows.

    uld calibrate --model runs/uld --holdout holdout10 --write

With a retain model, `near_reference` narrows the choice further: among the few grid alphas
nearest the held-out choice it keeps the one with the best Forget Quality, the same use of the
reference that `--eval-metric forget_quality` makes when it keeps one of a baseline's epochs.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

import torch

from uld import metrics
from uld.data.chunks import MAX_LENGTH, TextDataset
from uld.data.format import encode_qa, pad
from uld.evaluate import fluency, generate_answers, generate_from_ids, perturbed_pairs
from uld.logit_diff import ULDModel, plausible_set

ALPHAS = tuple(round(0.1 * i, 1) for i in range(21))  # 0, 0.1, ..., 2.0


def _per_row(x: torch.Tensor, row: torch.Tensor, n: int) -> torch.Tensor:
    """Sums of the token values x [T] per row (row [T] gives each token's row). -> [n]"""
    return torch.zeros(n, dtype=torch.float64).index_add_(0, row, x.double().cpu())


def combined_at_tokens(
    l_t: torch.Tensor,
    l_a: torch.Tensor,
    gold: torch.Tensor,
    settings: Sequence[tuple[float, float]],
    keep_mass: bool = True,
    argmax_in_s: bool = False,
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """log p_f(gold) [T] and argmax l_f [T] of ULD's combined logits at T positions, for every
    (alpha, filter) of `settings`, without forming l_f [T, V] once per setting.

    l_t, l_a [T, V]: the target's and the assistant's logits; gold [T]: the scored tokens.
    `logit_difference` changes only the plausible set S, the target's |S| most likely tokens,
    and rescales it to keep the target's mass there, so log p_f(v) = l_f(v) - logsumexp(l_t)
    for every v: a setting costs O(T * |S|), not O(T * V). keep_mass=False scores the ULD
    authors' unnormalised l_t - alpha * l_a on S instead (benchmarks/uld_settings.py);
    argmax_in_s=True takes the argmax among S only, as the authors' generation does (it sets the
    tokens outside S to -1e3; `logit_difference` with decoding=True).
    """
    l_t, l_a = l_t.float(), l_a.float()
    V = l_t.shape[-1]
    lse_t = torch.logsumexp(l_t, -1)
    logp_t = l_t - lse_t[:, None]
    l_gold = l_t.gather(-1, gold[:, None]).squeeze(-1)
    out, cache = [], {}
    for alpha, filter in settings:
        if filter not in cache:  # S and everything else that alpha does not change
            size = plausible_set(logp_t, filter).sum(-1)  # S = the |S| most likely tokens
            m = min(int(size.max()) + 1, V)
            top_l, top_i = torch.topk(l_t, m, dim=-1)
            in_s = torch.arange(m, device=l_t.device) < size[:, None]
            outside = torch.cat([top_l, top_l.new_full((len(top_l), 1), -math.inf)], -1)
            best_out = outside.gather(-1, size.clamp(max=m)[:, None]).squeeze(-1)
            arg_out = top_i.gather(-1, size.clamp(max=m - 1)[:, None]).squeeze(-1)
            hit = (top_i == gold[:, None]) & in_s
            lse_s = _lse(top_l, in_s)
            lse_out = torch.log(-torch.expm1((lse_s - lse_t).clamp(max=0)))  # log p_t(not S)
            cache[filter] = (top_l, top_i, in_s, best_out, arg_out, hit, lse_s, lse_out)
        top_l, top_i, in_s, best_out, arg_out, hit, lse_s, lse_out = cache[filter]
        diff = top_l - alpha * l_a.gather(-1, top_i)
        lse_diff = _lse(diff, in_s)
        if keep_mass:
            f_s, lse_f = diff + (lse_s - lse_diff)[:, None], lse_t
        else:
            f_s, lse_f = diff, torch.logaddexp(lse_diff, lse_out + lse_t)
        l_f_gold = torch.where(hit.any(-1), (f_s * hit).sum(-1), l_gold)
        s_max, s_arg = f_s.masked_fill(~in_s, -math.inf).max(-1)
        argmax = torch.where(
            (s_max >= best_out) | argmax_in_s, top_i.gather(-1, s_arg[:, None]).squeeze(-1), arg_out
        )
        out.append((l_f_gold - lse_f, argmax))
    return out


def _lse(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """logsumexp over the entries of each row where mask holds. [T, m] -> [T]"""
    return torch.logsumexp(x.masked_fill(~mask, -math.inf), -1)


@torch.no_grad()
def grid_scores(
    model: ULDModel,
    tokenizer,
    questions: Sequence[str],
    answers: Sequence[str],
    settings: Sequence[tuple[float, float]],
    batch_size: int = 16,
    keep_mass: bool = True,
    argmax_in_s: bool = False,
) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Teacher-forced scores of each (question, answer) under every (alpha, filter) of
    `settings`, from one pass of the target and the assistant (`combined_at_tokens`; keep_mass
    and argmax_in_s as there).

    Returns, per setting: (sum of the answer's log-probs [N], answer tokens [N], answer tokens
    where the combined model's most likely token is the target's [N])."""
    items = [encode_qa(tokenizer, q, a) for q, a in zip(questions, answers, strict=True)]
    return grid_scores_on(model, tokenizer, items, settings, batch_size, keep_mass, argmax_in_s)


@torch.no_grad()
def grid_scores_on(
    model: ULDModel,
    tokenizer,
    all_items: Sequence[dict],
    settings: Sequence[tuple[float, float]],
    batch_size: int = 16,
    keep_mass: bool = True,
    argmax_in_s: bool = False,
) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """`grid_scores` on tokenised items ({input_ids, labels}: QA items, or raw-text chunks of
    `uld.data.chunks` whose every token is scored)."""
    out: list[list] = [[] for _ in settings]
    n_tokens = []
    for s in range(0, len(all_items), batch_size):
        items = all_items[s : s + batch_size]
        batch = {k: v.to(model.device) for k, v in pad(items, tokenizer.pad_token_id).items()}
        targets = batch["labels"][:, 1:]
        keep = targets != -100
        pos = torch.zeros_like(batch["labels"], dtype=torch.bool)
        pos[:, :-1] = keep  # position t predicts token t + 1
        l_t, l_a = model(
            batch["input_ids"], batch["attention_mask"], keep=pos, return_both=True
        ).parts
        gold, greedy_t = targets[keep], l_t.argmax(-1)
        row = torch.arange(keep.shape[0], device=keep.device)[:, None].expand_as(keep)[keep].cpu()
        combined = combined_at_tokens(l_t, l_a, gold, settings, keep_mass, argmax_in_s)
        for i, (logp, argmax) in enumerate(combined):
            same = (argmax == greedy_t).float()
            out[i].append((_per_row(logp, row, len(items)), _per_row(same, row, len(items))))
        n_tokens.append(keep.sum(-1).double().cpu())
    n = torch.cat(n_tokens)
    return [(torch.cat([a for a, _ in o]), n, torch.cat([b for _, b in o])) for o in out]


def check_rows(rows: list[dict], what: str) -> None:
    """Truth ratios need each row's paraphrased answer and its perturbed answers."""
    bad = [
        i
        for i, r in enumerate(rows)
        if not r.get("paraphrased_answer") or not r.get("perturbed_answer")
    ]
    if not rows or bad:
        raise ValueError(
            f"{what}: {'no rows' if not rows else f'{len(bad)} row(s) (first: {bad[:3]})'} "
            "without paraphrased_answer and perturbed_answer; calibration compares truth ratios, "
            "so give rows in the TOFU format (question, answer, paraphrased_answer, "
            "perturbed_answer)"
        )


def check_held_out(holdout: list[dict], seen: list[dict], what: str) -> None:
    """Held-out rows must be in no training set, or they are not what "never seen" looks like."""
    shared = sorted({r["question"] for r in holdout} & {r["question"] for r in seen})
    if shared:
        raise ValueError(
            f"{what} shares {len(shared)} question(s) with the forget or retain rows, e.g. "
            f"{shared[0]!r}; calibrate against rows in no training set (e.g. holdout10)"
        )


def truth_and_loss(
    model: ULDModel,
    tokenizer,
    rows: list[dict],
    settings: Sequence[tuple[float, float]],
    keep_mass: bool = True,
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Per setting: the truth ratios R [N] (perturbed vs paraphrased answers, as `uld eval`
    scores the forget split) and the mean NLL of each original answer [N] (the LOSS
    membership score)."""
    wrong_q, wrong_a, k = perturbed_pairs(rows)
    qs = [r["question"] for r in rows]
    answers = [r["paraphrased_answer"] for r in rows] + wrong_a + [r["answer"] for r in rows]
    m = len(rows)
    truth, loss = [], []
    for logp, n, _ in grid_scores(
        model, tokenizer, qs + wrong_q + qs, answers, settings, keep_mass=keep_mass
    ):
        p = metrics.normalised_prob(logp[:-m], n[:-m])
        truth.append(metrics.truth_ratio(p[m:].view(m, k), p[:m]))
        loss.append(-logp[-m:] / n[-m:])
    return truth, loss


def held_out_scores(
    truth_f: torch.Tensor, truth_h: torch.Tensor, loss_f: torch.Tensor, loss_h: torch.Tensor
) -> dict:
    """How far forget rows are from held-out rows under one model: the KS p-value of their
    truth ratios (truth_f [N], truth_h [M]), the gap between the medians of log R, and the LOSS
    membership AUC from the mean NLLs (loss_f [N], loss_h [M]; 0.5: indistinguishable)."""
    gap = statistics.median(truth_f.log().tolist()) - statistics.median(truth_h.log().tolist())
    return {
        "holdout_ks": metrics.forget_quality(truth_f.tolist(), truth_h.tolist()),
        "median_log_gap": abs(gap),
        "mia_loss_auc": metrics.mia_auc((-loss_f).tolist(), (-loss_h).tolist()),
    }


def choose_alpha(
    model: ULDModel,
    tokenizer,
    forget: list[dict],
    holdout: list[dict],
    alphas: Sequence[float] = ALPHAS,
    filter: float | None = None,
    reference: Sequence[float] | None = None,
    near: int = 0,
) -> dict:
    """The alpha under which the forget rows' truth ratios look most like the held-out rows',
    under the model's own combination (`model.combine`).

    forget, holdout: rows with question, answer, paraphrased_answer and perturbed_answer.
    Returns {"alpha": chosen, "filter", "grid": [{alpha, holdout_ks, median_log_gap,
    mia_loss_auc}, ...]}; holdout_ks is the KS p-value of forget vs held-out truth ratios (the
    same test as Forget Quality, against held-out rows instead of a retain model), and
    mia_loss_auc the LOSS membership AUC of forget vs held-out rows (0.5: indistinguishable).

    reference [N]: a retain model's truth ratios on the same forget rows; each grid entry then
    also has its forget_quality, and with near > 0 the choice moves to `near_reference`'s.
    """
    check_rows(forget, "the forget rows")
    check_rows(holdout, "the held-out rows")
    if near and reference is None:  # before the passes over the rows, not after
        raise ValueError("choosing alpha among the nearest by Forget Quality needs a reference")
    if not alphas or any(not (math.isfinite(a) and a >= 0) for a in alphas):
        raise ValueError(f"alphas {list(alphas)} must be a non-empty list of numbers >= 0")
    filter = model.filter if filter is None else filter
    settings = [(a, filter) for a in alphas]
    keep_mass = model.combine == "mass"  # the model's own combination (`logit_difference`)
    truth_f, loss_f = truth_and_loss(model, tokenizer, forget, settings, keep_mass)
    truth_h, loss_h = truth_and_loss(model, tokenizer, holdout, settings, keep_mass)
    grid = [
        {"alpha": a} | held_out_scores(*scores)
        for a, *scores in zip(alphas, truth_f, truth_h, loss_f, loss_h, strict=True)
    ]
    if reference is not None:
        for g, r in zip(grid, truth_f, strict=True):
            g["forget_quality"] = metrics.forget_quality(r.tolist(), list(reference))
    best = max(grid, key=lambda g: (g["holdout_ks"], -g["median_log_gap"]))
    res = {"alpha": best["alpha"], "filter": filter, "grid": grid}
    if near:
        res["alpha_held_out"] = best["alpha"]
        res["near_reference"] = near_reference(grid, best["alpha"], near)
        res["alpha"] = res["near_reference"][0]
    return res


def near_reference(grid: list[dict], center: float, near: int) -> list[float]:
    """The `near` alphas of `grid` nearest `center` (ties: the smaller alpha), the one with the
    highest forget_quality first (ties: the nearer to `center`, then the smaller alpha).

    grid: entries with alpha and forget_quality. This is how a baseline's epoch is chosen
    (`--eval-metric forget_quality`: the best F.Q. of its epochs), given to ULD's alpha over as
    many candidates as a baseline has epochs, around the choice made without the reference."""
    if near < 1:
        raise ValueError(f"near={near} must be >= 1")

    def distance(g: dict) -> float:  # rounded: 0.5 - 0.4 and 0.4 - 0.3 differ in float
        return round(abs(g["alpha"] - center), 9)

    by_distance = sorted(grid, key=lambda g: (distance(g), g["alpha"]))[:near]
    ranked = sorted(by_distance, key=lambda g: (-g["forget_quality"], distance(g), g["alpha"]))
    return [g["alpha"] for g in ranked]


def format_grid(result: dict) -> str:
    """The grid of `choose_alpha` as a markdown table, the chosen alpha marked."""
    fq = all("forget_quality" in g for g in result["grid"])
    lines = [
        "| alpha | KS p, forget vs held-out | median log R gap | MIA LOSS AUC |"
        + (" F.Q. |" if fq else ""),
        "|---:|---:|---:|---:|" + ("---:|" if fq else ""),
    ]
    for g in result["grid"]:
        mark = " (chosen)" if g["alpha"] == result["alpha"] else ""
        if g["alpha"] == result.get("alpha_held_out") != result["alpha"]:
            mark = " (held-out choice)"
        lines.append(
            f"| {g['alpha']:g}{mark} | {g['holdout_ks']:.3g} | {g['median_log_gap']:.3f} | "
            f"{g['mia_loss_auc']:.3f} |" + (f" {g['forget_quality']:.3g} |" if fq else "")
        )
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Choosing alpha on a user's own data, with no held-out rows of the same kind and no retain
# model: the largest alpha that leaves the answers that must be kept as the target gives them
# and the forget answers fluent.

SAFE_ALPHAS = (2.0, 1.5, 1.0, 0.75, 0.5, 0.25, 0.1)  # tried from the largest down
TEXT_PROMPT = 32  # raw text: tokens of each forget document's start that are continued


def choose_alpha_safely(
    model: ULDModel,
    tokenizer,
    forget: list[dict],
    keep: list[dict],
    alphas: Sequence[float] = SAFE_ALPHAS,
    tolerance: float = 0.96,
    batch_size: int = 16,
) -> dict:
    """The largest alpha of `alphas` under which (1) the answers to `keep` stay the target's and
    (2) no generated forget answer is degenerate where the target's was not
    (`uld.evaluate.fluency`, judged by the target), with the forget answers' token agreement
    reported.

    keep: rows whose answer is the target's own greedy answer (retain rows and general prompts,
    `uld.defaults.keep_rows`). On raw text `forget` and `keep` are documents (strings): the
    agreement is over every token of their chunks (`uld.data.chunks`), and the forget check
    continues each forget document's first TEXT_PROMPT tokens for TEXT_PROMPT tokens, judged by
    repetition. Their agreement at an alpha is the share of answer tokens at which
    the combined model's most likely next token is still the target's, teacher-forced on the
    target's answer (`grid_scores`): 1.0 means the greedy answers are unchanged. An alpha is a
    candidate when the agreement is at least `tolerance` (0.96: on the hand-written people set of
    tests/data/handwritten, 0.964 at alpha 0.5 came with retain ROUGE-L 0.8 points and real-author
    ROUGE-L 0 points below the target's, 0.934 at alpha 1 with 3.7 and 3.2 points below:
    docs/results.md, "ULD on data uld did not make: hand-written sets"); from the largest candidate
    down, forget answers are generated until one alpha gives no degenerate answer. Without any, the
    chosen alpha is 0 (the target itself: nothing is forgotten) and `res["safe"]` is False.

    Returns {"alpha", "safe", "grid": [{alpha, keep_agreement, forget_agreement,
    forget_degenerate (where generated)}]}."""
    if not keep or not forget:
        raise ValueError("choosing alpha needs forget rows and rows to keep (retain or general)")
    settings = [(a, model.filter) for a in alphas]

    text = isinstance(forget[0], str)  # raw documents: every token scored, prompts continued

    def scored(rows: list):
        mass = model.combine == "mass"  # as the model generates (`logit_difference`)
        if text:
            items = TextDataset(rows, tokenizer, MAX_LENGTH).items
            return grid_scores_on(model, tokenizer, items, settings, batch_size, mass, not mass)
        questions, answers = [r["question"] for r in rows], [r["answer"] for r in rows]
        return grid_scores(
            model, tokenizer, questions, answers, settings, batch_size, mass, not mass
        )

    scores, forget_scores = scored(keep), scored(forget)
    grid = []
    for a, (_, n, same), (_, n_f, same_f) in zip(alphas, scores, forget_scores, strict=True):
        grid.append(
            {
                "alpha": a,
                "keep_agreement": float(same.sum() / n.sum()),
                "forget_agreement": float(same_f.sum() / n_f.sum()),
            }
        )
    if text:  # each document's first TEXT_PROMPT tokens, continued for as many
        prompts = [tokenizer(t).input_ids[:TEXT_PROMPT] for t in forget]
        questions = [tokenizer.decode(p, skip_special_tokens=True) for p in prompts]
        budget = TEXT_PROMPT
    else:
        questions = [r["question"] for r in forget]
        budget = max(16, 2 * max(len(tokenizer(r["answer"]).input_ids) for r in forget))

    def degenerate_at(alpha: float) -> tuple[list[str], list[bool]]:
        model.alpha = alpha
        if text:
            answers = generate_from_ids(model, tokenizer, prompts, batch_size, budget, False)
        else:
            answers = generate_answers(model, tokenizer, questions, batch_size, budget, False)
        items = [{"question": q, "generated": a} for q, a in zip(questions, answers, strict=True)]
        # judged by the target (alpha 0); a continuation of raw text by repetition alone (the
        # judge's likelihood is of an answer to a question)
        fluency(items, None if text else (model, tokenizer), batch_size)
        return answers, [it["degenerate"] for it in items]

    chosen, saved = 0.0, model.alpha
    try:
        _, was = degenerate_at(0.0)  # a row the target itself answers badly does not count
        for g in sorted(grid, key=lambda g: -g["alpha"]):
            if g["keep_agreement"] < tolerance:
                continue
            answers, bad = degenerate_at(g["alpha"])
            new = [b and not w for b, w in zip(bad, was, strict=True)]
            g["forget_degenerate"] = sum(new) / len(new)
            g["forget_answers"] = answers
            if not any(new):
                chosen = g["alpha"]
                break
    finally:
        model.alpha = saved
    return {"alpha": chosen, "safe": chosen > 0, "tolerance": tolerance, "grid": grid}


def format_safe_grid(result: dict) -> str:
    """The grid of `choose_alpha_safely` as a markdown table, the chosen alpha marked."""
    lines = [
        "| alpha | kept answers unchanged (token share) | forget tokens still the target's | "
        "degenerate forget answers |",
        "|---:|---:|---:|---:|",
    ]
    for g in result["grid"]:
        mark = " (chosen)" if g["alpha"] == result["alpha"] else ""
        deg = g.get("forget_degenerate")
        lines.append(
            f"| {g['alpha']:g}{mark} | {g['keep_agreement']:.3f} | {g['forget_agreement']:.3f} | "
            f"{'–' if deg is None else f'{deg:.2f}'} |"
        )
    return "\n".join(lines)

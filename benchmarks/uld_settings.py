"""ULD's inference settings: Forget Quality and agreement with the target over a grid of alpha and
filter, from one teacher-forced pass (the target's and the assistant's logits are computed once
and combined for every setting; no generation, so a grid of 28 costs about one evaluation).

Per (alpha, filter):
- F.Q.: the KS-test p-value of the forget split's truth ratios against the reference's (as
  `uld eval`), from the paraphrased and perturbed answers;
- agreement on retain / real authors / world facts: the fraction of gold-answer tokens where the
  ULD model's most likely next token is the target's. 1.0 means greedy answers are unchanged;
  the parts of Model Utility that fall (ROUGE-L of greedy answers) fall with it.

    python benchmarks/uld_settings.py --uld runs/compare/uld/model \
        --reference runs/compare/retain/eval/eval.json

`--bare` scores the same assistant with its LoRA update zeroed (the target's first K layers
alone): how much of the disagreement training removed.

`--authors-combination` scores the ULD code's unnormalised l_t - alpha * l_a on S instead of
uld's (which keeps the target's mass on S; src/uld/logit_diff.py says why).

Results: benchmarks/results/uld_settings.json. Settings chosen from this grid are chosen on
the split they are scored on: to choose them honestly, point --data/--forget at a validation
split (forget rows held out of the evaluation, and a reference that never saw them).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from pathlib import Path

import torch

from uld import metrics
from uld.config import EvalSplits
from uld.data.format import encode_qa, pad
from uld.evaluate import load_reference, load_roles, perturbed_pairs
from uld.logit_diff import ULDModel, logit_difference, plausible_set

ALPHAS = (0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0)
FILTERS = (1e-3, 1e-2, 3e-2, 1e-1)


def authors_difference(l_t: torch.Tensor, l_a: torch.Tensor, alpha: float, filter: float):
    """The ULD authors' combination, for comparison: l_t - alpha * l_a on the plausible set S,
    l_t elsewhere, with no renormalisation. [..., V] -> [..., V]"""
    l_t = l_t.float()
    plausible = plausible_set(torch.log_softmax(l_t, -1), filter)
    return torch.where(plausible, l_t - alpha * l_a.float(), l_t)


def _per_row(x: torch.Tensor, row: torch.Tensor, n: int) -> torch.Tensor:
    """Sums of the token values x [T] per row (row [T] gives each token's row). -> [n]"""
    return torch.zeros(n).index_add_(0, row, x)


@torch.no_grad()
def scores(
    model: ULDModel, tok, questions, answers, grid, batch_size: int = 16, combine=logit_difference
):
    """Per setting of `grid`: (sum of gold log-probs [N], tokens [N], tokens where the argmax is
    the target's [N])."""
    out = [[] for _ in grid]
    n_tokens = []
    for s in range(0, len(questions), batch_size):
        chunk = zip(questions[s : s + batch_size], answers[s : s + batch_size], strict=True)
        items = [encode_qa(tok, q, a) for q, a in chunk]
        batch = pad(items, tok.pad_token_id)
        targets = batch["labels"][:, 1:]
        keep = targets != -100
        pos = torch.zeros_like(batch["labels"], dtype=torch.bool)
        pos[:, :-1] = keep
        both = model(batch["input_ids"], batch["attention_mask"], keep=pos, return_both=True)
        l_t, l_a = both.parts
        gold, greedy_t = targets[keep], l_t.argmax(-1)
        row = torch.arange(keep.shape[0])[:, None].expand_as(keep)[keep]
        for i, (alpha, filter) in enumerate(grid):
            l_f = combine(l_t, l_a, alpha, filter)
            logp = torch.log_softmax(l_f, -1).gather(-1, gold[:, None]).squeeze(-1)
            same = (l_f.argmax(-1) == greedy_t).float()
            out[i].append((_per_row(logp, row, len(items)), _per_row(same, row, len(items))))
        n_tokens.append(keep.sum(-1).float())
    n = torch.cat(n_tokens)
    return [(torch.cat([a for a, _ in o]), n, torch.cat([b for _, b in o])) for o in out]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--uld", default="runs/compare/uld/model")
    ap.add_argument("--reference", default="runs/compare/retain/eval/eval.json")
    ap.add_argument("--rows", type=int, default=80, help="rows per utility split")
    ap.add_argument("--data", default="builtin", help="builtin, a folder of <split>.json, hub id")
    ap.add_argument("--forget", default="forget10", help="forget split (e.g. a validation split)")
    ap.add_argument(
        "--bare",
        action="store_true",
        help="zero the assistant's LoRA update: what the untrained trunk alone would subtract",
    )
    ap.add_argument("--alphas", type=float, nargs="+", default=ALPHAS)
    ap.add_argument("--filters", type=float, nargs="+", default=FILTERS)
    ap.add_argument(
        "--authors-combination",
        action="store_true",
        help="score the ULD code's unnormalised combination instead of uld's",
    )
    ap.add_argument("--out", default="benchmarks/results/uld_settings.json")
    args = ap.parse_args()
    model, tok = ULDModel.from_pretrained(args.uld)
    if args.bare:
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "lora_B" in name:
                    p.zero_()  # B = 0 makes the LoRA delta B·A zero
    roles = load_roles(EvalSplits.for_data(args.data, args.forget), args.data)
    reference = load_reference(args.reference, roles["forget"])
    grid = [(a, f) for a in args.alphas for f in args.filters]

    forget = roles["forget"]
    wrong_q, wrong_a, k = perturbed_pairs(forget)
    qs = [r["question"] for r in forget] + wrong_q
    answers = [r["paraphrased_answer"] for r in forget] + wrong_a
    truth = []
    combine = authors_difference if args.authors_combination else logit_difference
    for logp, n, _ in scores(model, tok, qs, answers, grid, combine=combine):
        p = metrics.normalised_prob(logp, n)
        truth.append(metrics.truth_ratio(p[len(forget) :].view(len(forget), k), p[: len(forget)]))
    agreement = {}
    for role in ("retain", "real_authors", "world_facts"):
        rows = roles[role][: args.rows]
        questions, answers = [r["question"] for r in rows], [r["answer"] for r in rows]
        res = scores(model, tok, questions, answers, grid, combine=combine)
        agreement[role] = [float(same.sum() / n.sum()) for _, n, same in res]

    table = []
    for i, (alpha, filter) in enumerate(grid):
        fq = metrics.forget_quality(truth[i].tolist(), reference["truth_ratios"])
        table.append(
            {"alpha": alpha, "filter": filter, "forget_quality": fq}
            | {f"agreement_{role}": round(v[i], 4) for role, v in agreement.items()}
        )
    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}",
        "uld": args.uld,
        "bare": args.bare,
        "combination": "authors" if args.authors_combination else "uld",
        "trained_with": {"alpha": model.alpha, "filter": model.filter},
        "reference": args.reference,
        "data": args.data,
        "rows": {"forget": len(forget)} | {r: min(args.rows, len(roles[r])) for r in agreement},
        "grid": table,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print("| α | filter | F.Q. | agreement: retain | real authors | world facts |")
    print("|---:|---:|---:|---:|---:|---:|")
    for r in table:
        print(
            f"| {r['alpha']:g} | {r['filter']:g} | {r['forget_quality']:.3g} | "
            f"{r['agreement_retain']:.3f} | {r['agreement_real_authors']:.3f} | "
            f"{r['agreement_world_facts']:.3f} |"
        )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

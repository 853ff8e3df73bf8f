"""ULD's inference settings: Forget Quality and agreement with the target over a grid of alpha and
filter, from one teacher-forced pass (the target's and the assistant's logits are computed once
and combined for every setting; no generation, so a grid of 28 costs about one evaluation).

Per (alpha, filter):
- F.Q.: the KS-test p-value of the forget split's truth ratios against the reference's (as
  `uld eval`), from the paraphrased and perturbed answers; and the log truth-ratio gap, row by
  row (`metrics.truth_ratio_gap`);
- KS vs holdout and MIA AUC (with a holdout split): the KS-test p-value of the forget split's
  truth ratios against the held-out rows' under the same model (what `uld calibrate` maximises;
  no reference needed), and the LOSS membership AUC of forget vs held-out rows;
- agreement on retain / real authors / world facts: the fraction of gold-answer tokens where the
  ULD model's most likely next token is the target's. 1.0 means greedy answers are unchanged;
  the parts of Model Utility that fall (ROUGE-L of greedy answers) fall with it.

    python benchmarks/uld_settings.py --uld runs/compare/uld/model \
        --reference runs/compare/retain/eval/eval.json

`--bare` scores the same assistant with its LoRA update zeroed (the target's first K layers
alone): how much of the disagreement training removed.

`--authors-combination` scores the ULD code's unnormalised l_t - alpha * l_a on S instead of
uld's (which keeps the target's mass on S; src/uld/logit_diff.py says why).

Results: experiments/results/uld_settings.json. Settings chosen from this grid by F.Q. are
chosen on the split and the reference they are scored with; `uld calibrate` chooses alpha by the
KS-vs-holdout column instead, which needs neither.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from pathlib import Path

import torch

from uld import metrics
from uld.calibrate import grid_scores, held_out_scores, truth_and_loss
from uld.config import EvalSplits
from uld.evaluate import load_reference, load_roles
from uld.logit_diff import ULDModel

ALPHAS = (0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0)
FILTERS = (1e-3, 1e-2, 3e-2, 1e-1)


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
    ap.add_argument("--out", default="experiments/results/uld_settings.json")
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

    keep_mass = not args.authors_combination  # the authors' combination does not
    forget, holdout = roles["forget"], roles.get("holdout")
    truth, loss = truth_and_loss(model, tok, forget, grid, keep_mass)
    if holdout:  # the same scores on rows no model saw: what "never seen" looks like
        truth_h, loss_h = truth_and_loss(model, tok, holdout, grid, keep_mass)
    agreement = {}
    for role in ("retain", "real_authors", "world_facts"):
        rows = roles[role][: args.rows]
        questions, answers = [r["question"] for r in rows], [r["answer"] for r in rows]
        res = grid_scores(model, tok, questions, answers, grid, keep_mass=keep_mass)
        agreement[role] = [float(same.sum() / n.sum()) for _, n, same in res]

    table = []
    for i, (alpha, filter) in enumerate(grid):
        R = truth[i].tolist()
        fq = metrics.forget_quality(R, reference["truth_ratios"])
        gap = metrics.truth_ratio_gap(R, reference["truth_ratios"])
        row = {"alpha": alpha, "filter": filter, "forget_quality": fq, "forget_tr_gap": gap}
        if holdout:  # no reference model needed: forget rows against held-out rows
            row |= held_out_scores(truth[i], truth_h[i], loss[i], loss_h[i])
        row |= {f"agreement_{role}": round(v[i], 4) for role, v in agreement.items()}
        table.append(row)
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
    print(
        "| α | filter | F.Q. | log R gap to retain | KS vs holdout | MIA AUC | agreement: retain "
        "| real authors | world facts |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    nan = float("nan")
    for r in table:
        print(
            f"| {r['alpha']:g} | {r['filter']:g} | {r['forget_quality']:.3g} | "
            f"{r['forget_tr_gap']:.3f} | {r.get('holdout_ks', nan):.3g} | "
            f"{r.get('mia_loss_auc', nan):.3f} | "
            f"{r['agreement_retain']:.3f} | {r['agreement_real_authors']:.3f} | "
            f"{r['agreement_world_facts']:.3f} |"
        )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

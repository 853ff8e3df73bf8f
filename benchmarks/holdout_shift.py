"""Do held-out rows under a model look like the forget rows under the retain model?

`uld calibrate` chooses ULD's alpha so that the forget rows' truth ratios match held-out rows'
under the same model, on the premise that held-out rows show what "never seen" looks like. This
checks the premise on plain models: for each, the truth ratios of the forget and the holdout
split, and the KS-test p-value of each against the reference's forget truth ratios (the Forget
Quality test). If the target's held-out rows already differ from the retain model's forget rows,
matching them cannot give a high Forget Quality.

    python benchmarks/holdout_shift.py --models runs/demo/target runs/demo/retain90 \
        --reference runs/compare/retain/eval/eval.json

Results: experiments/results/holdout_shift.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
from pathlib import Path

import torch

from uld import metrics
from uld.config import EvalSplits
from uld.evaluate import load_reference, load_roles, truth_ratios
from uld.runs import load_any


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", nargs="+", default=["runs/demo/target", "runs/demo/retain90"])
    ap.add_argument("--reference", default="runs/compare/retain/eval/eval.json")
    ap.add_argument("--data", default="builtin")
    ap.add_argument("--forget", default="forget10")
    ap.add_argument("--out", default="experiments/results/holdout_shift.json")
    args = ap.parse_args()
    roles = load_roles(EvalSplits.for_data(args.data, args.forget), args.data)
    reference = load_reference(args.reference, roles["forget"])["truth_ratios"]
    rows = []
    for path in args.models:
        model, tok = load_any(path)
        for split in ("forget", "holdout"):
            R = truth_ratios(model, tok, roles[split]).tolist()
            rows.append(
                {
                    "model": path,
                    "split": split,
                    "median_truth_ratio": statistics.median(R),
                    "ks_vs_reference_forget": metrics.forget_quality(R, reference),
                }
            )
    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}",
        "reference": args.reference,
        "reference_median": statistics.median(reference),
        "rows": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"reference forget median R {result['reference_median']:.3f}")
    print("| model | split | median R | KS p vs reference's forget R |")
    print("|---|---|---:|---:|")
    for r in rows:
        print(
            f"| {r['model']} | {r['split']} | {r['median_truth_ratio']:.3f} | "
            f"{r['ks_vs_reference_forget']:.3g} |"
        )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

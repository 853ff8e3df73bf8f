"""Cost of the full TOFU evaluation (`uld.evaluate.evaluate`) of a ULD model against its target:
same splits, same process, interleaved repeats; wall seconds per model and the ratio (the goal:
ULD <= 1.3x the target).

    python benchmarks/eval_cost.py [--uld runs/demo/uld-forget10] [--repeats 2]

Results: experiments/results/eval_cost.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from uld.config import EvalSplits
from uld.evaluate import evaluate, load_roles
from uld.logit_diff import ULDModel, read_uld_config
from uld.models import load_model


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--uld", default="runs/demo/uld-forget10")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", default="experiments/results/eval_cost.json")
    args = ap.parse_args()
    target_path = read_uld_config(args.uld)["target"]
    plain, tok = load_model(target_path)
    uld, _ = ULDModel.from_pretrained(args.uld)
    roles = load_roles(EvalSplits())
    seconds: dict[str, list[float]] = {"target": [], "uld": []}
    for _ in range(args.repeats):
        for name, model in (("target", plain.eval()), ("uld", uld)):
            start = time.perf_counter()
            evaluate(model, tok, roles, progress=False)
            seconds[name].append(time.perf_counter() - start)
            print(f"{name}: {seconds[name][-1]:.1f} s")
    t, u = statistics.median(seconds["target"]), statistics.median(seconds["uld"])
    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads",
        "uld": args.uld,
        "rows": {role: len(rows) for role, rows in roles.items()},
        "seconds": seconds,
        "median_target_s": round(t, 1),
        "median_uld_s": round(u, 1),
        "ratio": round(u / t, 3),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print("| model | full evaluation (s, median) |\n|---|---|")
    print(f"| target | {t:.1f} |\n| ULD | {u:.1f} |\n\nULD / target = {u / t:.3f}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

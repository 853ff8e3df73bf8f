"""Unlearning wall time of ULD against NPO+KL (and optionally other baselines) for the same
epochs and the same data, side by side in one process: ULD's augmented D'_f / D'_r for every
method, the same batch size, the same number of steps. ULD trains its assistant (first K layers
+ LoRA); NPO+KL trains the whole target (embeddings frozen) with a frozen reference.

    python benchmarks/train_cost.py --target runs/demo/target [--steps 10] [--methods npo+kl]

`--methods uld-distill,npo+kl` adds ULD with `--distill` (its L_f also runs the target on the
forget batch).

Results: experiments/results/train_cost.json. The ULD paper reports ULD > 3x faster than the
baselines; uld's goal is >= 5x against NPO+KL.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

from uld.config import UnlearnConfig
from uld.data.format import Collator
from uld.methods import learning_rate, prepare
from uld.trainer import train


def timed_steps(run, cfg: UnlearnConfig, steps: int, out: Path) -> float:
    """Seconds per step of `steps` training steps (a fresh output folder: no resuming)."""
    collator = Collator(run.tokenizer.pad_token_id)
    start = time.perf_counter()
    train(
        run.model,
        run.dataset,
        collator,
        out,
        run.method.objective,
        frozen=run.frozen,
        lr=learning_rate(cfg),
        batch_size=cfg.batch_size,
        max_steps=steps,
    )
    return (time.perf_counter() - start) / steps


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--target", default="runs/demo/target")
    ap.add_argument("--config", default="configs/uld_smollm2.yaml")
    ap.add_argument("--methods", default="npo+kl")
    ap.add_argument("--steps", type=int, default=5, help="timed steps per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--out", default="experiments/results/train_cost.json")
    args = ap.parse_args()
    import yaml

    uld = yaml.safe_load(Path(args.config).read_text())
    same = dict(
        model=args.target,
        forget="forget10",
        retain="retain90",
        batch_size=args.batch_size,
        paraphrase=True,
        perturbed=True,
        out="unused",
    )
    methods = ["uld", *args.methods.split(",")]
    runs, cfgs = {}, {}
    for method in methods:
        extra = {k: v for k, v in uld.items() if k not in same} if method.startswith("uld") else {}
        if method == "uld-distill":
            extra |= {"method": "uld", "distill": True}
        cfgs[method] = UnlearnConfig(**({"method": method} | extra | same))
        runs[method] = prepare(cfgs[method])
    # interleaved rounds (the first warms up), so a change in machine load hits every method
    times: dict[str, list[float]] = {m: [] for m in methods}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds + 1):
            for m in methods:
                s = timed_steps(runs[m], cfgs[m], args.steps, Path(tmp) / f"{m}-{r}")
                if r:
                    times[m].append(s)
                print(f"round {r} {m}: {s:.2f} s/step")
    rows = [
        {
            "method": m,
            "seconds_per_step": round(statistics.median(times[m]), 3),
            "trainable_params": runs[m].extra.get("trainable_params"),
            "all_rounds": times[m],
        }
        for m in methods
    ]
    base = rows[0]["seconds_per_step"]
    for r in rows:
        r["relative_to_uld"] = round(r["seconds_per_step"] / base, 2)
    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads",
        "target": args.target,
        "batch_size": args.batch_size,
        "steps_per_round": args.steps,
        "rounds": args.rounds,
        "load": os.getloadavg(),
        "data": "forget10 + paraphrases (D'_f), retain90 + perturbed forget answers (D'_r)",
        "rows": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print("| method | s/step | time / ULD | trainable parameters |\n|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['method']} | {r['seconds_per_step']} | {r['relative_to_uld']} | "
            f"{r['trainable_params']:,} |"
        )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

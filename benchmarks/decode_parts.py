"""The pieces of ULD's per-token decoding cost on this CPU, one thread, medians.

    python benchmarks/decode_parts.py [--vocab 49152] [--hidden 576]

- a matmul at 1 and 2 rows as F.linear (h @ W^T) and as W @ h^T, for the LM head and an MLP
  projection (SmolLM2-135M shapes): which form a few rows should use differs between BLAS builds;
- exp over the vocabulary for ordinary values and for values whose results fall below float32's
  normal range (far-negative logits), the slow path that ULD's combination avoids;
- ULD's combination (`logit_difference`) on one row of the vocabulary.
Results: experiments/results/decode_parts.json and a table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from functools import partial
from pathlib import Path

import torch
from uld_inference import cpu_name

from uld.logit_diff import logit_difference


def micros(f, n: int, rounds: int = 5) -> float:
    f()
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(n):
            f()
        times.append((time.perf_counter() - start) / n * 1e6)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--vocab", type=int, default=49152)
    ap.add_argument("--hidden", type=int, default=576)
    ap.add_argument("--mlp", type=int, default=1536)
    ap.add_argument("--out", default="experiments/results/decode_parts.json")
    args = ap.parse_args()
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    rows = []
    with torch.no_grad():
        for name, out_dim, n in (("LM head", args.vocab, 50), ("MLP up", args.mlp, 500)):
            w = torch.randn(out_dim, args.hidden, generator=g)
            h1, h2 = torch.randn(1, args.hidden), torch.randn(2, args.hidden)
            linear = torch.nn.functional.linear
            for label, f in (
                ("F.linear, 1 row", partial(linear, h1, w)),
                ("F.linear, 2 rows", partial(linear, h2, w)),
                ("W @ h^T, 2 rows", partial(torch.matmul, w, h2.T)),
            ):
                rows.append({"what": f"{name} {tuple(w.shape)}: {label}", "us": micros(f, n)})
        x = torch.randn(1, args.vocab, generator=g) * 4
        far = x * 10 - 200  # exp() of these is below float32's normal range
        for label, values, n in (("ordinary values", x, 500), ("subnormal results", far, 50)):
            rows.append({"what": f"exp over the vocabulary, {label}", "us": micros(values.exp, n)})
        l_t, l_a = torch.randn(2, 1, args.vocab, generator=g) * 8
        rows.append(
            {
                "what": "ULD's combination (alpha 0.75, filter 0.01), 1 row",
                "us": micros(lambda: logit_difference(l_t, l_a, 0.75, 0.01), 200),
            }
        )
    result = {"machine": f"{cpu_name()}, {os.cpu_count()} CPUs, 1 thread", "parts": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print("| what | µs |\n|---|---:|")
    for r in rows:
        print(f"| {r['what']} | {r['us']:.1f} |")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

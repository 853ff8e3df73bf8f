"""`uld serve` under load: a ULD model against the same server serving its target alone.

    python benchmarks/serve_load.py --uld runs/demo/uld-forget10 [--clients 1 8 32]

For each model (the ULD folder's target, served as a plain model, and the ULD model) a
`uld serve` process is started on a free port; for each number of concurrent clients, every
client sends `--requests` chat completions one after another through the `openai` client
(greedy, `--max-tokens`), prompts from the built-in forget10 questions. Throughput is completion
tokens (the server's `usage`) per second of wall time; latency is each request's time. The two
servers run one after the other, `--rounds` times, and each cell is the median over rounds.
ULD's bound at many clients is the FLOP ratio per token (`decode_flops`). Results:
experiments/results/serve_load.json and a table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from openai import OpenAI
from transformers import AutoConfig
from uld_inference import cpu_name, decode_flops

from uld.data.load import load_split
from uld.logit_diff import read_uld_config
from uld.models import resolve


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model: str, port: int, max_batch: int) -> subprocess.Popen:
    cmd = [
        sys.executable,
        "-m",
        "uld",
        "serve",
        "--model",
        model,
        "--name",
        "uld",
        "--port",
        str(port),
    ]
    proc = subprocess.Popen(
        cmd + ["--max-batch", str(max_batch)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 300
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"uld serve {model} exited: {proc.stderr.read()[-2000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as r:
                if r.status == 200:
                    return proc
        except OSError:
            pass
        time.sleep(0.5)
    proc.terminate()
    raise RuntimeError(f"uld serve {model} did not answer /health within 300 s")


def load(client: OpenAI, prompts: list[str], clients: int, requests: int, max_tokens: int):
    """`clients` threads, each sending `requests` requests in turn -> (tokens/s, latencies)."""

    def one_client(i: int) -> list[tuple[float, int]]:
        out = []
        for j in range(requests):
            prompt = prompts[(i * requests + j) % len(prompts)]
            start = time.perf_counter()
            r = client.chat.completions.create(
                model="uld",
                messages=[{"role": "user", "content": prompt}],
                max_tokens=max_tokens,
                temperature=0,
            )
            out.append((time.perf_counter() - start, r.usage.completion_tokens))
        return out

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        results = [x for part in pool.map(one_client, range(clients)) for x in part]
    wall = time.perf_counter() - start
    return sum(n for _, n in results) / wall, [t for t, _ in results]


def percentile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q / 100 * (len(xs) - 1))))]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--uld", default="runs/demo/uld-forget10", help="a ULD model folder")
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--requests", type=int, default=2, help="requests per client")
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--max-batch", type=int, default=32)
    ap.add_argument("--out", default="experiments/results/serve_load.json")
    args = ap.parse_args()

    cfg = read_uld_config(args.uld)
    target = str((Path(args.uld) / cfg["target"]).resolve())
    if not Path(target).exists():
        target = cfg["target"]
    bound = decode_flops(AutoConfig.from_pretrained(resolve(target)), cfg["assistant_layers"])
    prompts = [r["question"] for r in load_split("forget10")]
    models = {"target": target, "uld": args.uld}
    cells: dict[tuple, list] = {}
    for _ in range(args.rounds):
        for name, path in models.items():
            port = free_port()
            server = start_server(path, port, args.max_batch)
            try:
                client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none")
                load(client, prompts, 2, 1, args.max_tokens)  # warm-up
                for c in args.clients:
                    cells.setdefault((name, c), []).append(
                        load(client, prompts, c, args.requests, args.max_tokens)
                    )
            finally:
                server.terminate()
                server.wait(60)

    rows = []
    for c in args.clients:
        row = {"clients": c}
        for name in models:
            runs = cells[(name, c)]
            lat = [t for _, ts in runs for t in ts]
            row[f"{name}_tok_s"] = round(statistics.median(tps for tps, _ in runs), 2)
            row[f"{name}_p50_s"] = round(percentile(lat, 50), 3)
            row[f"{name}_p99_s"] = round(percentile(lat, 99), 3)
        row["ratio"] = round(row["uld_tok_s"] / row["target_tok_s"], 3)
        rows.append(row)
    result = {
        "machine": f"{cpu_name()}, {os.cpu_count()} CPUs, {platform.machine()}, "
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}",
        "target": target,
        "uld": args.uld,
        "max_tokens": args.max_tokens,
        "requests_per_client": args.requests,
        "rounds": args.rounds,
        "flop_ratio_target_over_uld": round(bound, 3),
        "load": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(
        "| clients | target tok/s | ULD tok/s | ULD / target | FLOP bound | target p50 / p99 (s) "
        "| ULD p50 / p99 (s) |\n|---:|---:|---:|---:|---:|---|---|"
    )
    for r in rows:
        print(
            f"| {r['clients']} | {r['target_tok_s']} | {r['uld_tok_s']} | {r['ratio']} | "
            f"{bound:.3f} | {r['target_p50_s']} / {r['target_p99_s']} | "
            f"{r['uld_p50_s']} / {r['uld_p99_s']} |"
        )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

"""Peak memory of ULD's training against loading the whole target, on the embedded default
(SmolLM2-135M-Instruct, fp32 on a CPU), and the expected training memory of 7B and 70B targets.

    python benchmarks/train_memory.py [--steps 3]

Each case runs in a fresh process and reports its peak resident memory (ru_maxrss), so one
case's allocations cannot hide another's:

- import: Python with torch, transformers and uld imported (the floor of every case);
- load target: the whole target loaded (`uld.models.load_model`) and run on a batch of 8 rows,
  without gradients (what using it takes);
- uld: `uld unlearn --method uld` for `--steps` steps with alpha given, no general prompts and no
  after-run check (the steps before and after training that run the target for inference), so
  the process holds only what training needs; every model it loads is recorded (its layers);
- npo+kl: `uld unlearn --method npo+kl`, full parameters, the same way.

Each training case also reports the memory uld printed before the run (`uld.memory`: weights,
gradients and AdamW state from parameter counts; activations not counted). The second table is
`uld.memory.method_memory` on the shapes of Llama-2-7B and Llama-3.1-70B (built on the meta
device, nothing allocated), in bf16.

Results: experiments/results/train_memory.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "experiments" / "results" / "train_memory.json"
MB = 1024  # ru_maxrss is in KiB on Linux

TARGETS = {
    "Llama-2-7B": dict(
        vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
        num_attention_heads=32, num_key_value_heads=32, tie_word_embeddings=False,
    ),
    "Llama-3.1-70B": dict(
        vocab_size=128256, hidden_size=8192, intermediate_size=28672, num_hidden_layers=80,
        num_attention_heads=64, num_key_value_heads=8, tie_word_embeddings=False,
    ),
}  # fmt: skip


def case(name: str, steps: int) -> dict:
    """Run one case in this process; returns what it measured."""
    import torch
    from transformers import AutoModelForCausalLM

    import uld.cli  # noqa: F401  (every case pays the same imports)
    from uld.cli import main
    from uld.data.format import Collator, encode_qa
    from uld.data.load import load_split
    from uld.models import load_model

    torch.set_num_threads(1)
    loaded: list[int] = []
    real = AutoModelForCausalLM.from_pretrained

    def spy(*args, config=None, **kwargs):
        loaded.append(config.num_hidden_layers if config is not None else -1)
        return real(*args, config=config, **kwargs)

    AutoModelForCausalLM.from_pretrained = spy
    start = time.time()
    if name == "load target":
        model, tok = load_model(None)
        loaded_params = sum(p.numel() for p in model.parameters())
        # one forward pass over 8 built-in rows: the weights are read (safetensors maps them
        # lazily: loading alone leaves most of them on disk) and a batch's activations held
        rows = load_split("forget10")[:8]
        batch = Collator(tok.pad_token_id)(
            [encode_qa(tok, r["question"], r["answer"]) for r in rows]
        )
        with torch.no_grad():
            model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    elif name in ("uld", "npo+kl"):
        loaded_params = None
        with tempfile.TemporaryDirectory() as tmp:
            argv = ["unlearn", "--method", name, "--model", "default", "--out", f"{tmp}/out"]
            argv += ["--max-steps", str(steps), "--general", "", "--no-check"]
            argv += ["--alpha", "0.75"] if name == "uld" else []
            status = main(argv)
            if status:
                raise SystemExit(f"{name}: uld unlearn exited with {status}")
    else:
        loaded_params = None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / MB
    return {
        "case": name,
        "peak_rss_mb": round(peak, 1),
        "seconds": round(time.time() - start, 1),
        "layers_loaded": loaded,
        "params_loaded": loaded_params,
    }


def run_case(name: str, steps: int) -> dict:
    env = os.environ | {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, __file__, "--case", name, "--steps", str(steps)],
        capture_output=True, text=True, env=env, cwd=ROOT,
    )  # fmt: skip
    if proc.returncode:
        raise SystemExit(f"case {name} failed:\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    printed = re.search(r"expected training memory per process: ([\d.]+) GB", proc.stdout)
    result["expected_gb"] = float(printed.group(1)) if printed else None
    return result


def scale_table() -> list[dict]:
    """`uld.memory.method_memory` for 7B and 70B targets in bf16, uld's default K and LoRA rank
    (and K = 8 on the 70B target)."""
    from transformers import LlamaConfig

    from uld.assistant import default_lora_rank, default_num_layers
    from uld.memory import GB, method_memory, shapes

    rows = []
    for name, shape in TARGETS.items():
        counts = shapes(LlamaConfig(**shape))
        n, rank = counts["layers"], default_lora_rank(shape["hidden_size"])
        ks = sorted({default_num_layers(n), 8})
        cases = [(f"ULD, K={k} of {n}, LoRA r={rank}", "uld", k) for k in ks]
        cases += [("NPO+KL, full", "full+ref", 0), (f"NPO+KL, LoRA r={rank}", "lora+ref", 0)]
        for label, layout, k in cases:
            mem = method_memory(counts, layout, k=k, rank=rank, bytes_per_param=2)
            rows.append(
                {"target": name, "params": counts["total"], "run": label}
                | {key: round(v / GB, 1) for key, v in mem.items()}
            )
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--case", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.case:
        print(json.dumps(case(args.case, args.steps)))
        return
    measured = [run_case(c, args.steps) for c in ("import", "load target", "uld", "npo+kl")]
    table = scale_table()
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if "model name" in line
        ),
        platform.processor(),
    )
    result = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{cpu}, {os.cpu_count()} cores, torch {__import__('torch').__version__}",
        "command": f"python benchmarks/train_memory.py --steps {args.steps}",
        "model": "embedded SmolLM2-135M-Instruct, fp32",
        "measured": measured,
        "expected_bf16": table,
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=1) + "\n")
    print(f"{result['machine']}; {result['model']}; peak resident memory of each case:\n")
    print("| case | peak RSS (MB) | uld's expected (GB) | layers of each model loaded | s |")
    print("|---|---:|---:|---|---:|")
    for m in measured:
        expected = "–" if m["expected_gb"] is None else f"{m['expected_gb']:.2f}"
        layers = ", ".join(map(str, m["layers_loaded"])) or "–"
        print(f"| {m['case']} | {m['peak_rss_mb']:.0f} | {expected} | {layers} | {m['seconds']} |")
    print("\nExpected training memory in bf16 (GB; weights + gradients + AdamW, no activations):\n")
    print("| target | run | weights | gradients | AdamW | total |\n|---|---|---:|---:|---:|---:|")
    for r in table:
        print(
            f"| {r['target']} | {r['run']} | {r['weights']} | {r['gradients']} | {r['adamw']} | "
            f"{r['total']} |"
        )
    print(f"\nwrote {OUT}")


if __name__ == "__main__":
    main()

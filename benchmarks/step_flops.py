"""FLOPs of one training step of ULD and of NPO+KL, counted by torch, against the formula that
the recipes' time estimates use; then those estimates for TOFU targets on one GPU.

    python benchmarks/step_flops.py [--batch 8]

Counted (torch.utils.flop_counter, every matmul of the forward and backward passes) on the
embedded SmolLM2-135M-Instruct with the built-in benchmark's rows, one step of each objective:

    ULD:    4 x N_a x T     N_a: the assistant's matmul weights (K layers + LM head); forward 2,
                            backward 2 (the gradient flows through the frozen layers to the LoRA
                            of the first ones; LoRA's own weight gradients are negligible)
    NPO+KL: 8 x N x T       N: the target's matmul weights; policy forward 2 + backward 4 on
                            forget and retain rows, the frozen reference's forward 2 on both

T: the tokens of the batch (forget and retain rows, question and answer). The LM head runs only
on answer tokens and attention adds its own FLOPs: the counted / formula ratio says how far the
formula is from the count on these rows. The estimates multiply the formula by that ratio (the
answer share of TOFU's rows is taken to be the built-in benchmark's), with TOFU rows of ~120
tokens (question + answer with the chat template; an assumption: the hub data is not read
here) and an H100's dense bf16 peak of 989 TFLOP/s at
40% utilisation (an assumption, typical of fine-tuning at these sizes). They are estimates, not
measurements.

Results: experiments/results/step_flops.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode
from transformers import LlamaConfig

from uld.config import UnlearnConfig
from uld.data.format import Collator
from uld.losses import Hyper
from uld.memory import shapes
from uld.methods import prepare

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "experiments" / "results" / "step_flops.json"
PEAK, UTILISATION, ROW_TOKENS = 989e12, 0.40, 120

TARGETS = {  # (config, assistant layers K, batch of forget rows per step)
    "Llama-2-7b-chat (paper)": (
        dict(vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
             num_attention_heads=32, num_key_value_heads=32, tie_word_embeddings=False), 8, 32),
    "Llama-3.2-1B-Instruct": (
        dict(vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
             num_attention_heads=32, num_key_value_heads=8, tie_word_embeddings=True), 4, 32),
}  # fmt: skip


def matmul_weights(counts: dict, k: int | None = None) -> int:
    """Weights that take part in a matmul: the layers' (norms aside: they are a rounding error)
    and the LM head; the input embedding is a lookup."""
    layers = counts["layers"] if k is None else k
    head = counts["embeddings"] if counts["tied"] else counts["embeddings"] // 2
    return layers * counts["per_layer"] + head


def step(method: str, batch: int, tmp: str) -> dict:
    cfg = UnlearnConfig(method=method, model="default", out=f"{tmp}/{method}", general="")
    run = prepare(cfg)
    items = [run.dataset[i] for i in range(batch)]
    collated = Collator(run.tokenizer.pad_token_id)(items)
    tokens = sum(int(b["attention_mask"].sum()) for b in collated.values())
    run.model.train()
    with FlopCounterMode(display=False) as counter:
        loss, _ = run.method.objective(run.model, collated, Hyper(), run.frozen)
        loss.backward()
    return {"flops": counter.get_total_flops(), "tokens": tokens, "k": run.k}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch", type=int, default=8)
    args = p.parse_args()
    torch.set_num_threads(1)
    from uld.models import default_model_path

    config = LlamaConfig.from_pretrained(default_model_path())
    counts = shapes(config) | {"tied": config.tie_word_embeddings}
    measured = {}
    with tempfile.TemporaryDirectory() as tmp:
        for method, factor in (("uld", 4), ("npo+kl", 8)):
            m = step(method, args.batch, tmp)
            n = matmul_weights(counts, m["k"] if method == "uld" else None)
            m["formula_flops"] = factor * n * m["tokens"]
            m["measured_over_formula"] = round(m["flops"] / m["formula_flops"], 3)
            measured[method] = m
    estimates = []
    for name, (shape, k, batch) in TARGETS.items():
        c = shapes(LlamaConfig(**shape)) | {"tied": shape["tie_word_embeddings"]}
        tokens = 2 * batch * ROW_TOKENS  # forget rows, each paired with a retain row
        for method, factor, n in (
            ("uld", 4, matmul_weights(c, k)),
            ("npo+kl", 8, matmul_weights(c)),
        ):
            flops = factor * n * tokens * measured[method]["measured_over_formula"]
            estimates.append(
                {"target": name, "method": method, "k": k if method == "uld" else None,
                 "batch": batch, "tflops_per_step": round(flops / 1e12, 1),
                 "seconds_per_step_estimate": round(flops / (PEAK * UTILISATION), 2)}
            )  # fmt: skip
    result = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.processor() or platform.machine()}, torch {torch.__version__}",
        "command": f"python benchmarks/step_flops.py --batch {args.batch}",
        "measured_on": "embedded SmolLM2-135M-Instruct, built-in benchmark, fp32",
        "measured": measured,
        "assumptions": {
            "gpu_peak_flops": PEAK,
            "utilisation": UTILISATION,
            "tokens_per_row": ROW_TOKENS,
        },  # fmt: skip
        "estimates": estimates,
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=1) + "\n")
    print("| method | counted GFLOPs | formula GFLOPs | counted / formula |\n|---|---:|---:|---:|")
    for method, m in measured.items():
        print(
            f"| {method} | {m['flops'] / 1e9:.1f} | {m['formula_flops'] / 1e9:.1f} | "
            f"{m['measured_over_formula']} |"
        )
    print("\nEstimates (one H100, bf16, 40% of peak; not measured):\n")
    print("| target | method | batch | TFLOPs / step | s / step |\n|---|---|---:|---:|---:|")
    for e in estimates:
        print(
            f"| {e['target']} | {e['method']} | {e['batch']} | {e['tflops_per_step']} | "
            f"{e['seconds_per_step_estimate']} |"
        )
    print(f"\nwrote {OUT}")


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()

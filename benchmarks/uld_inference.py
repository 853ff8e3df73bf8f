"""ULD inference cost against the target alone: greedy decoding tokens/s at batch 1 and batch 8,
same prompts, same process, interleaved repeats; and the extra memory of the ULD model.

    python benchmarks/uld_inference.py [--target runs/demo/target] [--uld runs/demo/uld-forget10]

Without --uld, a randomly initialised adapter with the default K and rank is used (speed does
not depend on the adapter's values). Results: experiments/results/uld_inference.json.
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

from uld.assistant import default_lora_rank, default_num_layers
from uld.data.format import pad, prompt_ids
from uld.data.load import load_split
from uld.logit_diff import ULDModel, decode
from uld.models import load_model


def cpu_name() -> str:
    """The CPU's model name (Intel and AMD machines differ in which matmul shapes are fast)."""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def decode_flops(config, k: int) -> float:
    """Target / ULD multiply-adds per decoded token (the compute-bound limit of ULD / target
    throughput): the target runs its L layers and LM head; ULD also runs the assistant's rows
    through the first K layers and the LM head (LoRA and attention scores left out, both small
    at short contexts). Llama-family shapes: q, o d x d; k, v d x d_kv; gate, up, down d x f."""
    d, f, n = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    d_kv = d // config.num_attention_heads * config.num_key_value_heads
    layer = 2 * d * d + 2 * d * d_kv + 3 * d * f
    head = d * config.vocab_size
    return (n * layer + head) / ((n + k) * layer + 2 * head)


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def tokens_per_second(model, batch, new_tokens: int) -> float:
    start = time.perf_counter()
    with torch.no_grad():
        decode(
            model,
            batch["input_ids"],
            batch["attention_mask"],
            max_new_tokens=new_tokens,
            eos_token_id=-1,
        )  # no early stop: every run makes the same number of tokens
    return batch["input_ids"].shape[0] * new_tokens / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--target", default="runs/demo/target")
    ap.add_argument("--uld", default="runs/demo/uld-forget10")
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default="experiments/results/uld_inference.json")
    args = ap.parse_args()
    torch.manual_seed(0)

    if Path(args.uld).exists():
        from uld.logit_diff import read_uld_config

        target_path = read_uld_config(args.uld)["target"]
    else:
        target_path = args.target if Path(args.target).exists() else None
    target, tok = load_model(target_path)
    target.eval()
    target_bytes = sum(p.numel() * p.element_size() for p in target.parameters())
    if Path(args.uld).exists():
        adapter = args.uld
        rss_before = rss_bytes()
        model = ULDModel(target, args.uld, alpha=0.75)
    else:
        from uld.methods import build_assistant

        n = target.config.num_hidden_layers
        k, r = default_num_layers(n), default_lora_rank(target.config.hidden_size)
        assistant, _ = build_assistant(target_path, k, r, r, 0.0)
        with torch.no_grad():
            for name, p in assistant.named_parameters():
                if "lora_" in name:
                    p.normal_(0, 0.02)
        rss_before = rss_bytes()
        model = ULDModel(target, assistant, alpha=0.75)
        del assistant
        adapter = f"random K={k} r={r}"
    rss_after = rss_bytes()
    model.eval()
    lora_bytes = sum(
        p.numel() * p.element_size() for n, p in model.named_parameters() if "lora_" in n
    )

    # the target alone, timed as users run it: a separate copy without LoRA wrappers
    plain, _ = load_model(target_path)
    plain.eval()
    questions = [r["question"] for r in load_split("forget10")[:8]]
    rows = []
    for bs in (1, 8):
        batches = [
            pad(
                [{"input_ids": prompt_ids(tok, q)} for q in questions[i : i + bs]],
                tok.pad_token_id,
                side="left",
            )
            for i in range(0, 8, bs)
        ]
        t_speed, u_speed = [], []
        for rep in range(args.repeats + 1):  # the first round warms up
            for b in batches:
                t = tokens_per_second(plain, b, args.new_tokens)
                u = tokens_per_second(model, b, args.new_tokens)
                if rep:
                    t_speed.append(t)
                    u_speed.append(u)
        t_med, u_med = statistics.median(t_speed), statistics.median(u_speed)
        rows.append(
            {
                "batch": bs,
                "target_tok_s": round(t_med, 2),
                "uld_tok_s": round(u_med, 2),
                "ratio": round(u_med / t_med, 3),
            }
        )

    bound = decode_flops(target.config, model.k)
    result = {
        "machine": f"{cpu_name()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads",
        "target": str(target_path or "embedded default"),
        "adapter": adapter,
        "new_tokens": args.new_tokens,
        "decoding": rows,
        "flop_ratio_target_over_uld": round(bound, 3),
        "target_param_bytes": target_bytes,
        "lora_param_bytes": lora_bytes,
        "extra_memory_fraction": round(lora_bytes / target_bytes, 5),
        "rss_delta_bytes": rss_after - rss_before,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print("| batch | target tok/s | ULD tok/s | ULD / target | FLOP bound |\n|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['batch']} | {r['target_tok_s']} | {r['uld_tok_s']} | {r['ratio']} | "
            f"{bound:.3f} |"
        )
    print(
        "FLOP bound: target / ULD multiply-adds per token, the limit once decoding is "
        "compute-bound (large batches); at batch 1 decoding reads the same weights, limit ~1.0"
    )
    print(
        f"\nextra memory: LoRA weights {lora_bytes:,} bytes = "
        f"{100 * lora_bytes / target_bytes:.2f}% of the target's {target_bytes:,}; "
        f"RSS delta when adding the adapter {rss_after - rss_before:,} bytes"
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

"""How much memory a training run needs, from parameter counts (printed before every run).

    weights   = sum over every parameter held (trained model + frozen copies) of numel x bytes
    gradients = sum over trainable parameters of numel x bytes
    AdamW     = 2 x sum over trainable parameters of numel x bytes (first and second moment,
                kept by torch in the parameter's dtype)
    total     = weights + gradients + AdamW; activations come on top (they grow with batch x
                sequence length x layers; gradient checkpointing keeps one layer's)

ULD trains an assistant that holds only the target's first K layers, its embeddings and head,
plus LoRA: its weights are a fraction K / L of the target's layers and it keeps no frozen copy.
A full-parameter baseline with a reference term (NPO+KL) holds the target twice and trains
nearly all of it. `shapes` counts the parameters of any Hugging Face config without allocating
them (on the meta device), so the same formula gives the figures for 7B and 70B targets.
"""

from __future__ import annotations

import torch
from torch import nn

GB = 1e9


def parameter_bytes(model: nn.Module | None) -> tuple[int, int]:
    """(bytes of all parameters, bytes of the trainable ones) of `model` (each tensor once, tied
    weights too)."""
    if model is None:
        return 0, 0
    total = trainable = 0
    for p in model.parameters():  # (parameters() yields a tied tensor once)
        size = p.numel() * p.element_size()
        total += size
        trainable += size if p.requires_grad else 0
    return total, trainable


def training_memory(weights: float, trainable: float, frozen: float = 0.0) -> dict[str, float]:
    """Bytes of a run's weights, gradients and AdamW state (see the module's formula).
    weights, trainable: bytes of the trained model's parameters, all and trainable; frozen:
    bytes of the frozen models it also holds (a reference copy, a target)."""
    out = {"weights": weights + frozen, "gradients": trainable, "adamw": 2 * trainable}
    return out | {"total": sum(out.values())}


def run_memory(model: nn.Module, frozen: list[nn.Module | None] = ()) -> dict[str, float]:
    """`training_memory` of training `model` with the frozen models `frozen` beside it."""
    weights, trainable = parameter_bytes(model)
    seen = {id(p) for p in model.parameters()}
    extra = sum(
        p.numel() * p.element_size()
        for m in frozen
        if m is not None
        for p in m.parameters()
        if id(p) not in seen  # (a ULD model's target shares nothing; LoRA's reference is itself)
    )
    return training_memory(weights, trainable, extra)


def format_memory(mem: dict[str, float]) -> str:
    return (
        f"{mem['total'] / GB:.2f} GB = weights {mem['weights'] / GB:.2f} + gradients "
        f"{mem['gradients'] / GB:.2f} + AdamW state {mem['adamw'] / GB:.2f} (activations not "
        "counted)"
    )


def shapes(config) -> dict[str, int]:
    """Parameter counts of a causal LM built from `config` on the meta device (nothing is
    allocated): total, per decoder layer, the rest (embeddings, head, final norm), the
    embeddings and head alone (once if tied), and the LoRA parameters per layer at rank 1
    (every Linear projection of a layer: in + out)."""
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    total = sum(p.numel() for p in model.parameters())
    layers = next(m for m in model.modules() if isinstance(m, nn.ModuleList))
    per_layer = sum(p.numel() for p in layers[0].parameters())
    lora = sum(
        m.in_features + m.out_features for m in layers[0].modules() if isinstance(m, nn.Linear)
    )
    n = len(layers)
    tables = {
        id(m.weight): m.weight.numel() for m in model.modules() if isinstance(m, nn.Embedding)
    }
    head = model.get_output_embeddings().weight
    tables[id(head)] = head.numel()
    return {
        "total": total,
        "embeddings": sum(tables.values()),
        "layers": n,
        "per_layer": per_layer,
        "rest": total - n * per_layer,
        "lora_per_layer_per_rank": lora,
    }


def method_memory(
    counts: dict[str, int],
    layout: str,
    k: int = 0,
    rank: int = 0,
    bytes_per_param: int = 2,
) -> dict[str, float]:
    """`training_memory` for a target of `counts` (`shapes`) trained in the `layout`:

    "uld": the first k layers, embeddings and head (frozen) + LoRA of rank `rank` on them;
    "full+ref": the whole target trained (embeddings and head frozen, as uld does) + a frozen
    reference copy (NPO+KL, full); "lora+ref": the whole target frozen + LoRA of rank `rank` on
    every layer, the reference being the target with its adapters off (NPO+KL, LoRA)."""
    b = bytes_per_param
    layer, rest, lora = counts["per_layer"], counts["rest"], counts["lora_per_layer_per_rank"]
    n = counts["layers"]
    if layout == "uld":
        adapters = k * rank * lora
        return training_memory((k * layer + rest + adapters) * b, adapters * b)
    if layout == "full+ref":
        trained = counts["total"] - counts["embeddings"]
        return training_memory(counts["total"] * b, trained * b, counts["total"] * b)
    if layout == "lora+ref":
        adapters = n * rank * lora
        return training_memory((counts["total"] + adapters) * b, adapters * b)
    raise ValueError(f"layout {layout!r}: choose uld, full+ref or lora+ref")

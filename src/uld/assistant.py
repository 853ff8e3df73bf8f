"""The ULD assistant: the target's first K decoder layers, embeddings, final norm and LM head,
with LoRA adapters on the attention and MLP projections of those K layers (ULD paper, Sec. 3.3).

Nothing of the target is copied. For training, the target is loaded with
`num_hidden_layers=K`, so only the assistant's layers are in memory; for inference the adapter
is injected into the full target's first K layers (see `uld.logit_diff`). Either way the
frozen base *is* the target's weights and only the LoRA matrices are new.

The structure is found by walking the model (its decoder's layer list, the Linear modules
inside a layer), not by matching architecture names, so Llama, Mistral, Qwen2, Gemma, Phi-3,
SmolLM and the MoE families with the same layer list all work.
"""

from __future__ import annotations

import torch
from torch import nn

ROUTER_NAMES = ("gate", "router", "shared_expert_gate")


class UnsupportedModelError(ValueError):
    """The model lacks a structure the assistant needs; the message names what was missing."""


def base_lm(model: nn.Module) -> nn.Module:
    """The HF causal LM under a peft wrapper, or the model itself."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def decoder_of(model: nn.Module) -> nn.Module:
    base = base_lm(model)
    prefix = getattr(base, "base_model_prefix", "model")
    decoder = getattr(base, prefix, None)
    if decoder is None:
        raise UnsupportedModelError(
            f"{type(base).__name__} has no decoder attribute {prefix!r}; ULD needs a Hugging "
            "Face *ForCausalLM model whose decoder holds a list of layers"
        )
    return decoder


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The decoder's list of transformer layers."""
    decoder = decoder_of(model)
    n = base_lm(model).config.num_hidden_layers
    layers = getattr(decoder, "layers", None)
    if isinstance(layers, nn.ModuleList):
        return layers
    for child in decoder.children():
        if isinstance(child, nn.ModuleList) and len(child) == n:
            return child
    raise UnsupportedModelError(
        f"{type(decoder).__name__} has no ModuleList of {n} decoder layers "
        f"(children: {[type(c).__name__ for c in decoder.children()]})"
    )


def final_norm(model: nn.Module) -> nn.Module:
    decoder = decoder_of(model)
    for name in ("norm", "final_layernorm", "ln_f"):
        if isinstance(getattr(decoder, name, None), nn.Module):
            return getattr(decoder, name)
    raise UnsupportedModelError(
        f"{type(decoder).__name__} has no final norm (looked for norm, final_layernorm, ln_f)"
    )


def _linears(module: nn.Module):
    """(path parts, module) of each nn.Linear under `module` that is not a LoRA part, the path
    read through peft's wrappers (`base_layer` left out)."""
    for name, m in module.named_modules():
        parts = [x for x in name.split(".") if x != "base_layer"]
        if isinstance(m, nn.Linear) and parts and not any(x.startswith("lora_") for x in parts):
            yield parts, m


def projection_names(model: nn.Module) -> list[str]:
    """Leaf names of the Linear projections of a decoder layer (attention and MLP), router
    excluded: LoRA's `target_modules`."""
    layer = decoder_layers(model)[0]
    names = sorted({parts[-1] for parts, _ in _linears(layer) if parts[-1] not in ROUTER_NAMES})
    if not names:
        raise UnsupportedModelError(
            f"{type(layer).__name__} has no nn.Linear projections to put LoRA adapters on"
        )
    return names


def projection_paths(model: nn.Module, names, layers=None) -> list[str]:
    """Full paths (from the causal LM down) of the nn.Linear modules with leaf name in `names`
    in the decoder layers `layers` (None: every layer): LoRA's `target_modules`, exactly. Leaf
    names would do on peft < 0.22, but peft 0.22 also maps the leaf names gate_proj / up_proj /
    down_proj of some MoE families onto their fused 3-D expert tensors (its compatibility with
    transformers-4 adapters), which puts LoRA where it was not asked for."""
    every = decoder_layers(model)
    chosen = range(len(every)) if layers is None else layers
    inside = {id(m) for i in chosen for m in every[i].modules()}
    paths = {
        ".".join(parts)
        for parts, m in _linears(base_lm(model))
        if id(m) in inside and parts[-1] in names
    }
    return sorted(paths)


def default_num_layers(n_layers: int) -> int:
    """The paper's K = 8 of 32 layers, scaled: a quarter of the target's layers."""
    return max(1, min(n_layers - 1, round(n_layers / 4)))


def default_lora_rank(hidden_size: int) -> int:
    """The paper's r = 32 on a 4096-wide Llama-2-7B, scaled to the hidden size, at least 8
    (r = 8 on SmolLM2-135M: 0.5% of the target's parameters)."""
    return max(8, round(32 * hidden_size / 4096))


def check_num_layers(k: int, n_layers: int) -> None:
    if not 1 <= k <= n_layers - 1:
        raise ValueError(
            f"assistant layers K={k} is outside 1..{n_layers - 1} (the target has {n_layers} "
            f"layers); pick a K in that range, e.g. {default_num_layers(n_layers)}"
        )


def expert_tensor_names(model: nn.Module) -> list[str]:
    """Paths, within a decoder layer, of the 3-D expert weight tensors [E, ., .] of an MoE layer
    (transformers 5 keeps all experts of a layer in one module); [] for a dense model."""
    layer = decoder_layers(model)[0]
    return sorted(n for n, p in layer.named_parameters() if p.ndim == 3 and "lora_" not in n)


def lora_config(
    model: nn.Module, k: int | None, rank: int, alpha: float, dropout: float, experts: bool = False
):
    """LoRA on the projections of layers 0..K-1 (k=None: of every layer). experts=True also puts
    LoRA on an MoE's 3-D expert tensors (peft's `target_parameters`: rank r per expert), which
    whole-model LoRA baselines need to reach the FFN knowledge; the ULD/Offset assistant keeps
    to nn.Linear projections (its one-pass inference injects LoRA layers only)."""
    from peft import LoraConfig

    tensors = expert_tensor_names(model) if experts else []
    layers = None if k is None else list(range(k))
    if tensors and dropout:
        print(f"[uld] LoRA dropout {dropout} -> 0: peft's LoRA on expert tensors has no dropout")
        dropout = 0.0
    return LoraConfig(
        r=rank,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=projection_paths(model, projection_names(model), layers),
        target_parameters=tensors or None,
        layers_to_transform=layers,
        bias="none",
    )


def trainable_count(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts, each tensor counted once."""
    seen, trainable, total = set(), 0, 0
    for p in model.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        total += p.numel()
        trainable += p.numel() if p.requires_grad else 0
    return trainable, total


def weights_fingerprint(model: nn.Module) -> str:
    """A cheap identity of the target's weights (sums of a few tensors), stored with an adapter so
    that loading it onto a different target is refused."""
    import hashlib

    base = base_lm(model)
    parts = [base.config.model_type, str(base.config.hidden_size), str(base.config.vocab_size)]
    layer0 = [p for n, p in decoder_layers(model)[0].named_parameters() if "lora_" not in n]
    with torch.no_grad():
        for p in [base.get_input_embeddings().weight, *layer0[:3]]:
            # 3 significant digits: the same target loaded in fp32 or bf16 gives the same print
            parts.append(f"{p.float().abs().sum().item():.3e}")
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]

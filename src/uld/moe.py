"""UOE: unlearn one expert of a Mixture-of-Experts LLM and anchor its router.

Zhuang et al., "UOE: Unlearning One Expert Is Enough for Mixture-of-Experts LLMs" (arXiv:2411.18797;
ACL 2025 as "SEUF: Is Unlearning One Expert Enough for Mixture-of-Experts LLMs?"). The recipe:

    A = expert_attribution(model, tokenizer, forget_rows)     # [layers, E], paper Eq. 2
    (layer, expert), = top_experts(A, m=1)                    # the most engaged expert
    sel = select_experts(model, [(layer, expert)])            # only it and its router train
    with record_routing(model, [moe_layer(model, layer)]) as seen:
        loss = unlearn_loss(model, forget_batch)              # GA / NPO / ... on the forget set
    r = seen[layer][-1]                                       # router logits [B*T, E]
    g = router_probs(r.logits, "softmax")[forget_batch["attention_mask"].reshape(-1).bool()]
    loss = loss + alpha * anchor_loss(g, expert)              # keep the expert routed (UOE anchor)
    ...; sel.remove()
    routing_shift(original, unlearned, tokenizer, retain_rows)   # did routing drift?

Supported families (transformers >= 5, whose experts are 3-D tensors in one module): Mixtral,
Qwen2-MoE, Qwen3-MoE, OLMoE and DeepSeek-V3. In each, a decoder layer's `mlp` is the sparse block
with a router `gate` (weight [E, H]; forward returns (logits [N, E], top-k weights [N, k], top-k
indices [N, k])) and `experts` (gate_up_proj [E, 2I, H], down_proj [E, H, I]). Dense layers
(DeepSeek-V3's first_k_dense_replace, Qwen2-MoE's mlp_only_layers) are skipped; shared experts are
never selected. Router outputs are read with forward hooks, so no model forward is copied here.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.optim.optimizer import register_optimizer_step_post_hook

from uld.assistant import UnsupportedModelError, base_lm, decoder_layers, decoder_of
from uld.data.format import IGNORE, encode_qa, pad

# How each family turns router logits into expert scores s_{i,t} (DeepSeek-V3 uses sigmoid
# affinities; the others a softmax over experts).
SCORES = {
    "mixtral": "softmax",
    "qwen2_moe": "softmax",
    "qwen3_moe": "softmax",
    "olmoe": "softmax",
    "deepseek_v3": "sigmoid",
}
FAMILIES = "Mixtral, Qwen2-MoE, Qwen3-MoE, OLMoE, DeepSeek-V3"


class NotMoEError(UnsupportedModelError):
    """The model is dense or not one of the MoE families UOE knows; the message names both."""


@dataclass(frozen=True)
class MoELayer:
    """One decoder layer's sparse MoE block."""

    index: int  # position in the decoder's layer list
    router: nn.Module  # `gate`: weight [E, H]
    experts: nn.Module  # holds the [E, ...] expert weights
    n_experts: int
    top_k: int
    score: str  # "softmax" | "sigmoid"

    def expert_params(self) -> dict[str, nn.Parameter]:
        """The per-expert weights, each [E, ...] (gate_up_proj [E, 2I, H], down_proj [E, H, I])."""
        return {
            n: p
            for n, p in self.experts.named_parameters(recurse=False)
            if p.shape[0] == self.n_experts
        }


def moe_layers(model: nn.Module) -> list[MoELayer]:
    """The MoE blocks of a causal LM, in layer order; NotMoEError for a dense or unknown model."""
    base = base_lm(model)
    kind = getattr(base.config, "model_type", None)
    if kind not in SCORES:
        raise NotMoEError(
            f"{type(base).__name__} (model_type {kind!r}) is not a supported Mixture-of-Experts "
            f"model; UOE supports {FAMILIES} (for a dense Llama, see uld.upcycle.upcycle)"
        )
    found = []
    for i, layer in enumerate(decoder_layers(model)):
        block = getattr(layer, "mlp", None)
        router, experts = getattr(block, "gate", None), getattr(block, "experts", None)
        if router is None or experts is None:
            continue  # a dense layer of a model that mixes both
        weight = getattr(router, "weight", None)
        if not isinstance(weight, nn.Parameter) or not any(
            p.ndim == 3 for p in experts.parameters(recurse=False)
        ):
            raise NotMoEError(
                f"layer {i}'s {type(block).__name__} has no router weight [E, H] or no 3-D expert "
                "weights; UOE needs transformers >= 5, which stores the experts as [E, ...] tensors"
            )
        found.append(MoELayer(i, router, experts, weight.shape[0], int(router.top_k), SCORES[kind]))
    if not found:
        raise NotMoEError(f"{type(base).__name__} has no MoE layer (looked for mlp.gate/experts)")
    return found


def moe_layer(model: nn.Module, index: int) -> MoELayer:
    """The MoE block of decoder layer `index`."""
    layers = {layer.index: layer for layer in moe_layers(model)}
    if index not in layers:
        raise ValueError(f"decoder layer {index} has no MoE block; MoE layers: {sorted(layers)}")
    return layers[index]


# --------------------------------------------------------------------------- routing


class Routing(NamedTuple):
    """One router call: logits [N, E] and the chosen experts [N, k], N = B*T tokens."""

    logits: Tensor
    indices: Tensor


@contextmanager
def record_routing(
    model: nn.Module, layers: Sequence[MoELayer] | None = None
) -> Iterator[dict[int, list[Routing]]]:
    """Collect every router call inside the block: {layer index: [Routing, ...]}.

    The logits keep their graph, so a loss on them (the anchor) trains the router. Read them
    right after the forward: gradient checkpointing calls the routers again during backward.
    """
    layers = moe_layers(model) if layers is None else layers
    seen: dict[int, list[Routing]] = {layer.index: [] for layer in layers}

    def hook(index: int):
        def record(module, args, output):
            logits, _, indices = output
            seen[index].append(Routing(logits, indices))

        return record

    handles = [layer.router.register_forward_hook(hook(layer.index)) for layer in layers]
    try:
        yield seen
    finally:
        for h in handles:
            h.remove()


def router_probs(logits: Tensor, score: str = "softmax") -> Tensor:
    """Expert scores s_{i,t}: softmax over experts (sigmoid affinities for DeepSeek-V3).

    logits [N, E] -> [N, E] float32.
    """
    if score not in ("softmax", "sigmoid"):
        raise ValueError(f"score must be 'softmax' or 'sigmoid', got {score!r}")
    logits = logits.float()
    return logits.softmax(-1) if score == "softmax" else logits.sigmoid()


def gate_scores(probs: Tensor, indices: Tensor) -> Tensor:
    """g_{i,t}: the scores of each token's top-k experts, 0 elsewhere (UOE Eq. 1).

    probs [N, E], indices [N, k] -> [N, E]. The indices are the router's own choice, so
    DeepSeek-V3's group-limited, bias-corrected selection is respected.
    """
    return torch.zeros_like(probs).scatter(-1, indices, probs.gather(-1, indices))


def sequence_mean(scores: Tensor, mask: Tensor) -> Tensor:
    """Mean over each sequence's counted tokens. scores [B, T, E], mask [B, T] -> [B, E]."""
    mask = mask.to(scores.dtype).unsqueeze(-1)
    return (scores * mask).sum(1) / mask.sum(1).clamp(min=1)


def token_mask(batch: dict[str, Tensor], tokens: str) -> Tensor:
    """[B, T] bool: every real token ("all") or the answer and its EOS only ("answer")."""
    if tokens == "all":
        return batch["attention_mask"].bool()
    if tokens == "answer":
        return batch["labels"] != IGNORE
    raise ValueError(f"tokens must be 'all' or 'answer', got {tokens!r}")


def _batches(tokenizer, rows: Sequence[dict], batch_size: int) -> Iterator[dict[str, Tensor]]:
    items = [encode_qa(tokenizer, r["question"], r["answer"]) for r in rows]
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    for i in range(0, len(items), batch_size):
        yield pad(items[i : i + batch_size], pad_id)


@torch.no_grad()
def _route(model, tokenizer, rows, batch_size: int, tokens: str):
    """Yield (mask [B, T], {layer index: Routing}) for each batch of rows; decoder only."""
    layers = moe_layers(model)
    decoder, device = decoder_of(model), next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with record_routing(model, layers) as seen:
            for batch in _batches(tokenizer, rows, batch_size):
                decoder(
                    input_ids=batch["input_ids"].to(device),
                    attention_mask=batch["attention_mask"].to(device),
                )
                yield token_mask(batch, tokens).to(device), {i: c.pop() for i, c in seen.items()}
    finally:
        model.train(was_training)


def expert_attribution(
    model: nn.Module,
    tokenizer,
    rows: Sequence[dict],
    batch_size: int = 8,
    tokens: str = "all",
) -> Tensor:
    """How much each expert is engaged by `rows` (UOE, Eq. 2): [decoder layers, E] float32.

    A[l, i] = 1/|D| sum_{x in D} 1/|x| sum_{t in x} g^l_{i,t}, with g the top-k-masked router
    score. Rows of dense layers are 0. `tokens="all"` (the default) counts every token of the
    sample, prompt included, as the paper does: the question names the fact's subject, and the
    experts that route it are those an unlearning update reaches. With a chat template every row
    also carries the same system-prompt tokens, which add one constant vector to A; pass
    `tokens="answer"` to count the answer (and EOS) tokens only.
    """
    layers = moe_layers(model)
    total = torch.zeros(len(decoder_layers(model)), layers[0].n_experts)
    n = 0
    for mask, routing in _route(model, tokenizer, rows, batch_size, tokens):
        B, T = mask.shape
        counted = mask.any(1)
        for layer in layers:
            r = routing[layer.index]
            g = gate_scores(router_probs(r.logits, layer.score), r.indices).view(B, T, -1)
            total[layer.index] += sequence_mean(g, mask)[counted].sum(0).cpu()
        n += int(counted.sum())
    if n == 0:
        raise ValueError(f"none of the {len(rows)} rows has a token to count (tokens={tokens!r})")
    return total / n


def top_experts(attribution: Tensor, m: int = 1, layer: int | None = None) -> list[tuple[int, int]]:
    """The m highest-scoring (layer, expert) pairs: within `layer`, or across all layers.

    attribution [L, E] -> [(layer, expert), ...], best first. UOE unlearns m = 1 expert.
    """
    L, E = attribution.shape
    if layer is not None:
        if not 0 <= layer < L:
            raise ValueError(f"layer {layer} is outside 0..{L - 1}")
        if not 1 <= m <= E:
            raise ValueError(f"m={m} experts is outside 1..{E}")
        return [(layer, int(e)) for e in attribution[layer].argsort(descending=True)[:m]]
    if not 1 <= m <= L * E:
        raise ValueError(f"m={m} experts is outside 1..{L * E}")
    flat = attribution.flatten().argsort(descending=True)[:m]
    return [(int(i) // E, int(i) % E) for i in flat]


def ranking_rows(attribution: Tensor, top: int = 10) -> list[dict]:
    """The `top` experts across layers as table rows: rank, layer, expert, score and the
    expert's share of its layer's total score."""
    rows = []
    for rank, (layer, expert) in enumerate(top_experts(attribution, min(top, attribution.numel()))):
        score, row_sum = float(attribution[layer, expert]), float(attribution[layer].sum())
        share = score / row_sum if row_sum > 0 else 0.0
        rows.append(dict(rank=rank + 1, layer=layer, expert=expert, score=score, share=share))
    return rows


# --------------------------------------------------------------------------- selection


@dataclass
class ExpertSelection:
    """What `select_experts` made trainable; `remove()` takes its hooks off."""

    experts: list[tuple[int, int]]
    trainable: int  # parameters that can change: the chosen slices and the routers
    total: int
    _handles: list = field(default_factory=list, repr=False)
    _frozen: list[tuple[nn.Parameter, Tensor, Tensor]] = field(default_factory=list, repr=False)

    @property
    def share(self) -> float:
        return self.trainable / self.total

    @torch.no_grad()
    def restore(self) -> None:
        """Put back the saved values of the experts that are not selected."""
        for p, index, saved in self._frozen:
            p.index_copy_(0, index, saved)

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles, self._frozen = [], []


def select_experts(
    model: nn.Module, experts: Sequence[tuple[int, int]], train_router: bool = True
) -> ExpertSelection:
    """Freeze everything except the chosen experts' FFN weights (and their layers' routers).

    experts: (decoder layer, expert) pairs, e.g. `top_experts(A)`. One Parameter holds all E
    experts of a layer, so three things keep the others fixed:
    - a gradient hook zeroes the other experts' slices of the gradient, which keeps them out of
      AdamW's moments and out of gradient clipping's norm;
    - AdamW's decoupled weight decay (p -= lr * wd * p) still moves a slice whose gradient is 0,
      so after every optimizer step (a global torch post-step hook, whichever optimizer the
      Trainer builds) the other slices are copied back from a saved copy. We restore rather than
      ask for weight_decay=0 so that one Trainer setting serves every method, and the result
      is bit-for-bit the original;
    - everything else has requires_grad=False.
    """
    layers = {layer.index: layer for layer in moe_layers(model)}
    for index, expert in experts:
        if index not in layers or not 0 <= expert < layers[index].n_experts:
            raise ValueError(
                f"({index}, {expert}) is not an expert: MoE layers are {sorted(layers)}, experts "
                f"0..{next(iter(layers.values())).n_experts - 1}"
            )
    params = list(model.parameters())  # each shared (tied) tensor once
    for p in params:
        p.requires_grad_(False)
    selection = ExpertSelection(list(experts), 0, sum(p.numel() for p in params))
    for index in sorted({i for i, _ in experts}):
        layer = layers[index]
        keep = torch.zeros(layer.n_experts, dtype=torch.bool)
        keep[[e for i, e in experts if i == index]] = True
        for p in layer.expert_params().values():
            keep_p = keep.to(p.device).view(-1, *[1] * (p.ndim - 1))
            p.requires_grad_(True)
            selection._handles.append(p.register_hook(lambda g, k=keep_p: g * k))
            others = (~keep).nonzero().squeeze(1).to(p.device)
            selection._frozen.append((p, others, p.detach()[others].clone()))
            selection.trainable += p[keep.to(p.device)].numel()
        if train_router:
            layer.router.weight.requires_grad_(True)
            selection.trainable += layer.router.weight.numel()
    hook = register_optimizer_step_post_hook(lambda optimizer, args, kwargs: selection.restore())
    selection._handles.append(hook)
    return selection


def anchor_loss(router_probs: Tensor, expert: int) -> Tensor:
    """UOE router anchor: mean over tokens of ||g - a||^2, a one-hot on the selected expert.

    router_probs [N, E] (the forget tokens' scores at the selected layer) -> scalar. It keeps the
    unlearned expert routed, so the update cannot just steer the forget tokens away from it;
    the objective adds alpha * anchor_loss (alpha = 1 by default).
    """
    E = router_probs.shape[-1]
    if not 0 <= expert < E:
        raise ValueError(f"expert {expert} is outside 0..{E - 1}")
    a = F.one_hot(torch.tensor(expert, device=router_probs.device), E).to(router_probs.dtype)
    return (router_probs - a).pow(2).sum(-1).mean()


# --------------------------------------------------------------------------- routing shift


def changed_sets(a: Tensor, b: Tensor) -> Tensor:
    """Whether each token's top-k expert *set* differs. a, b [N, k] indices -> [N] bool."""
    return (a.sort(-1).values != b.sort(-1).values).any(-1)


def routed_experts(
    model: nn.Module, tokenizer, rows: Sequence[dict], batch_size: int = 8, tokens: str = "all"
) -> dict[int, Tensor]:
    """Each counted token's chosen experts: {layer index: [N, k]} over all rows."""
    out: dict[int, list[Tensor]] = {}
    for mask, routing in _route(model, tokenizer, rows, batch_size, tokens):
        for index, r in routing.items():
            out.setdefault(index, []).append(r.indices[mask.reshape(-1)].cpu())
    return {index: torch.cat(chunks) for index, chunks in out.items()}


def routing_shift(
    original: nn.Module,
    unlearned: nn.Module,
    tokenizer,
    rows: Sequence[dict],
    batch_size: int = 8,
    tokens: str = "all",
) -> dict:
    """Fraction of tokens whose top-k expert set differs between two models (on retain rows:
    how far unlearning moved the routing of what should be kept).

    Returns {"agg_value": over every (layer, token), "value_by_layer": {layer: fraction}}.
    """
    a = routed_experts(original, tokenizer, rows, batch_size, tokens)
    b = routed_experts(unlearned, tokenizer, rows, batch_size, tokens)
    if a.keys() != b.keys():
        raise ValueError(f"MoE layers differ: {sorted(a)} vs {sorted(b)}")
    changed = {i: changed_sets(a[i], b[i]) for i in a}
    return {
        "agg_value": float(torch.cat(list(changed.values())).float().mean()),
        "value_by_layer": {i: float(c.float().mean()) for i, c in changed.items()},
    }


# --------------------------------------------------------------------------- plot


def plot_attribution(
    attribution: Tensor,
    path: str | Path,
    selected: Sequence[tuple[int, int]] = (),
    title: str = "Expert attribution on the forget set (UOE Eq. 2)",
) -> Path:
    """Heat map of attribution [L, E] (layers down, experts across), selected experts boxed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    L, E = attribution.shape
    fig, ax = plt.subplots(figsize=(1.6 + 0.45 * E, 1.2 + 0.22 * L))
    im = ax.imshow(attribution.float().numpy(), aspect="auto", cmap="viridis")
    for layer, expert in selected:
        box = Rectangle((expert - 0.5, layer - 0.5), 1, 1, fill=False, edgecolor="red", lw=2)
        ax.add_patch(box)
    ax.set_xlabel("expert")
    ax.set_ylabel("decoder layer")
    ax.set_xticks(range(E))
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, label="mean top-k router score")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=130, bbox_inches="tight")
    plt.close(fig)
    return path

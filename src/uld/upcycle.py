"""Sparse upcycling: a dense Llama becomes a Mixtral whose experts start as copies of its MLP.

Komatsuzaki et al., "Sparse Upcycling: Training Mixture-of-Experts from Dense Checkpoints"
(arXiv:2212.05055). No pretrained MoE can be downloaded here, so the UOE demo makes one from the
embedded SmolLM2-135M (a Llama): attention, norms and embeddings are the dense model's, each
layer's MLP becomes E identical experts behind a new router, and the result is an ordinary
`MixtralForCausalLM` that `save_pretrained` / `from_pretrained` handle like any other model.

    dense, tok = load_model(None)
    moe = upcycle(dense, n_experts=4, top_k=2, expert_noise=0.01)
    save_model(moe, tok, "runs/moe/base", {"made_by": "uld upcycle"})

Mixtral renormalises the top-k router weights to sum to 1, so with exact copies every token's
MLP output is the dense one whatever the router picks: the upcycled model computes the dense
model's function (to float rounding) until fine-tuning moves the experts apart.
"""

from __future__ import annotations

import torch
from transformers import MixtralConfig, MixtralForCausalLM, PreTrainedModel


def moe_config(dense, n_experts: int, top_k: int) -> MixtralConfig:
    """The Mixtral config of a Llama config `dense`: same attention, RoPE, norms and vocabulary;
    E experts of the dense MLP's width, top-k routing."""
    if dense.model_type != "llama":
        raise ValueError(f"upcycle needs a Llama model, got model_type {dense.model_type!r}")
    if getattr(dense, "attention_bias", False) or getattr(dense, "mlp_bias", False):
        raise ValueError("upcycle needs a Llama without attention/MLP biases (Mixtral has none)")
    if not 2 <= top_k <= n_experts:
        # top-1 with renormalised weights gives every token weight 1: the router never learns
        raise ValueError(f"top_k={top_k} must be in 2..n_experts={n_experts}")
    return MixtralConfig(
        vocab_size=dense.vocab_size,
        hidden_size=dense.hidden_size,
        intermediate_size=dense.intermediate_size,
        num_hidden_layers=dense.num_hidden_layers,
        num_attention_heads=dense.num_attention_heads,
        num_key_value_heads=dense.num_key_value_heads,
        head_dim=getattr(dense, "head_dim", None),
        hidden_act=dense.hidden_act,
        max_position_embeddings=dense.max_position_embeddings,
        initializer_range=dense.initializer_range,
        rms_norm_eps=dense.rms_norm_eps,
        # Mixtral's default theta is 1e6, Llama's 1e4 and SmolLM2's 1e5: copy it, never default
        rope_parameters=dict(dense.rope_parameters),
        attention_dropout=dense.attention_dropout,
        tie_word_embeddings=dense.tie_word_embeddings,
        pad_token_id=dense.pad_token_id,
        bos_token_id=dense.bos_token_id,
        eos_token_id=dense.eos_token_id,
        sliding_window=None,
        num_local_experts=n_experts,
        num_experts_per_tok=top_k,
    )


@torch.no_grad()
def upcycle(
    dense: PreTrainedModel,
    n_experts: int = 4,
    top_k: int = 2,
    expert_noise: float = 0.0,
    router_std: float | None = None,
    seed: int = 0,
) -> MixtralForCausalLM:
    """A Mixtral with `dense`'s weights and each MLP copied into `n_experts` experts.

    expert_noise: Gaussian noise added to each expert copy, as a fraction of each weight
        matrix's std. 0 keeps the dense function exactly; a little (0.01) makes the experts
        differ from the first step, so the router gets a gradient at once (with identical
        experts it gets none until fine-tuning has moved them apart).
    router_std: std of the random router init (default: the config's initializer_range).

    Cost, the trade-off: the default 4 experts, top-2 runs 2 MLPs per token, 1.75x the dense
    per-layer FLOPs of SmolLM2 (the MLP is 3/4 of a layer's weights), and holds 4 MLPs per
    layer: SmolLM2-135M grows to 373M parameters (2.8x), and a full fine-tuning step (batch 8 x
    61 tokens, fp32, 2 CPU threads) took 4.7 s against the dense model's 2.2 s (AdamW over 2.8x
    the weights costs more than the FLOPs suggest). Splitting the MLP into fine-grained experts
    (LLaMA-MoE, arXiv:2406.16554) would keep parameters and FLOPs at the dense model's, but it
    breaks the dense function at initialisation and needs continued pre-training to repair,
    which a few CPU epochs of TOFU cannot give; copies start exactly where the dense model is.
    """
    config = moe_config(dense.config, n_experts, top_k)
    dtype = next(dense.parameters()).dtype
    moe = MixtralForCausalLM(config).to(dtype)
    g = torch.Generator().manual_seed(seed)
    state = dense.state_dict()
    std = config.initializer_range if router_std is None else router_std
    for i in range(config.num_hidden_layers):
        prefix = f"model.layers.{i}.mlp."
        gate, up, down = (state.pop(f"{prefix}{n}_proj.weight") for n in ("gate", "up", "down"))
        experts = moe.model.layers[i].mlp.experts
        experts.gate_up_proj.copy_(_copies(torch.cat([gate, up]), n_experts, expert_noise, g))
        experts.down_proj.copy_(_copies(down, n_experts, expert_noise, g))
        router = moe.model.layers[i].mlp.gate.weight
        router.copy_(torch.randn(router.shape, generator=g).to(router.device) * std)
    missing, unexpected = moe.load_state_dict(state, strict=False)
    missing = [
        k for k in missing if not k.endswith(("mlp.gate.weight", "gate_up_proj", "down_proj"))
    ]
    missing = [k for k in missing if k != "lm_head.weight" or not config.tie_word_embeddings]
    if missing or unexpected:
        raise ValueError(f"upcycle: weights did not map: missing={missing} unexpected={unexpected}")
    moe.tie_weights()
    moe.generation_config = dense.generation_config
    return moe.to(next(dense.parameters()).device).eval()


def _copies(w: torch.Tensor, n: int, noise: float, g: torch.Generator) -> torch.Tensor:
    """[n, *w.shape]: n copies of w, each plus noise * std(w) Gaussian noise."""
    out = w.unsqueeze(0).repeat(n, *[1] * w.ndim).float()
    if noise > 0:
        out += torch.randn(out.shape, generator=g).to(out.device) * noise * w.float().std()
    return out.to(w.dtype)

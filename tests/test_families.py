"""The assistant and the one-pass ULD forward on other decoder families, found by walking each
model's structure: each is checked against a naive two-model forward."""

from __future__ import annotations

import copy

import pytest
import torch
import transformers as tf

from uld.assistant import UnsupportedModelError, projection_names
from uld.logit_diff import ULDModel, exact_targets, logit_difference
from uld.methods import build_assistant

SMALL = dict(
    vocab_size=128,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=128,
    pad_token_id=0,
    bos_token_id=1,
    eos_token_id=2,
)
FAMILIES = {
    "mistral": (tf.MistralConfig, {}),
    "qwen2": (tf.Qwen2Config, {}),
    "gemma": (tf.GemmaConfig, {"head_dim": 8}),
    "gemma2": (tf.Gemma2Config, {"head_dim": 8, "final_logit_softcapping": 30.0}),
    "phi3": (tf.Phi3Config, {}),
    "qwen2_moe": (
        tf.Qwen2MoeConfig,
        {
            "num_experts": 4,
            "num_experts_per_tok": 2,
            "moe_intermediate_size": 16,
            "shared_expert_intermediate_size": 32,
        },
    ),
    "mixtral": (tf.MixtralConfig, {"num_local_experts": 4, "num_experts_per_tok": 2}),
}


def _save(tmp_path, cls, extra) -> str:
    torch.manual_seed(0)
    model = tf.AutoModelForCausalLM.from_config(cls(**SMALL, **extra))
    model.save_pretrained(tmp_path)
    return str(tmp_path)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_one_pass_matches_naive_forward(family, tmp_path, monkeypatch):
    cls, extra = FAMILIES[family]
    path = _save(tmp_path, cls, extra)
    # these folders have no tokenizer; the assistant builder only needs the weights
    monkeypatch.setattr("uld.models.load_tokenizer", lambda *a, **k: None)
    assistant, _ = build_assistant(path, k=2, rank=4, alpha=8, dropout=0.0)
    assert projection_names(assistant)  # found by walking the layer
    with torch.no_grad():
        for n, p in assistant.named_parameters():
            if "lora_" in n:
                p.normal_(0, 0.3)
    naive_assistant = copy.deepcopy(assistant).eval()
    target = tf.AutoModelForCausalLM.from_pretrained(path).eval()
    naive_target = copy.deepcopy(target)
    model = ULDModel(target, assistant, alpha=0.75, filter=0.05)
    ids = torch.randint(3, 128, (2, 7))
    mask = torch.ones_like(ids)
    mask[1, :2] = 0  # left padding
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        out = model(ids, mask, position_ids=pos, return_both=True)
        l_t = naive_target(input_ids=ids, attention_mask=mask, position_ids=pos).logits
        l_a = naive_assistant(input_ids=ids, attention_mask=mask, position_ids=pos).logits
    torch.testing.assert_close(out.parts[0], l_t, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(out.parts[1], l_a, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(
        out.logits, logit_difference(l_t, l_a, 0.75, 0.05), atol=1e-3, rtol=1e-4
    )


@pytest.mark.parametrize("family", ["qwen2_moe", "mixtral"])
def test_assistant_lora_sits_on_the_first_k_layers_linear_projections_only(
    family, tmp_path, monkeypatch
):
    """LoRA's targets are spelled as full paths: with leaf names, peft >= 0.22 also puts LoRA on
    an MoE's fused expert tensors (gate_proj/up_proj/down_proj map onto them), where the one-pass
    forward cannot run it. An adapter saved with leaf names is pinned to paths when loaded."""
    cls, extra = FAMILIES[family]
    path = _save(tmp_path, cls, extra)
    monkeypatch.setattr("uld.models.load_tokenizer", lambda *a, **k: None)
    assistant, _ = build_assistant(path, k=2, rank=4, alpha=8, dropout=0.0)
    base = assistant.get_base_model()
    wrapped = {n for n, m in base.named_modules() if hasattr(m, "lora_B")}
    linear = {
        n
        for n, m in tf.AutoModelForCausalLM.from_pretrained(path).named_modules()
        if isinstance(m, torch.nn.Linear)
        and n.split(".")[-1] in projection_names(assistant)
        and n.split(".")[2] in ("0", "1")
    }
    assert wrapped == linear and linear  # attention (+ shared expert) projections of layers 0, 1
    config = assistant.peft_config["default"]
    assert set(config.target_modules) == linear
    old = copy.deepcopy(config)
    old.target_modules = set(projection_names(assistant))  # as adapters were saved before
    target = tf.AutoModelForCausalLM.from_pretrained(path)
    assert set(exact_targets(old, target).target_modules) == linear
    assert old.target_modules == set(projection_names(assistant))  # the caller's is untouched


def test_unsupported_architecture_names_what_is_missing(tmp_path, monkeypatch):
    # GPT-2's projections are Conv1D modules, not nn.Linear: nothing to put LoRA on
    path = _save(tmp_path, tf.GPT2Config, {})
    monkeypatch.setattr("uld.models.load_tokenizer", lambda *a, **k: None)
    with pytest.raises(UnsupportedModelError, match="no nn.Linear projections"):
        build_assistant(path, k=2, rank=4, alpha=8, dropout=0.0)

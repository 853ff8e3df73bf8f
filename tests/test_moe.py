"""UOE on tiny MoE models built from configs: walking five families, expert attribution against
hand-set routers and the model's own router logits, training one expert slice, the anchor loss,
routing shift, plots, and upcycling a dense Llama."""

from __future__ import annotations

import copy

import pytest
import torch
import transformers as tf

from uld.assistant import UnsupportedModelError
from uld.data.format import encode_qa, pad
from uld.data.synthetic import fictitious_authors
from uld.losses import answer_logits, nll
from uld.moe import (
    NotMoEError,
    anchor_loss,
    changed_sets,
    expert_attribution,
    gate_scores,
    moe_layer,
    moe_layers,
    plot_attribution,
    ranking_rows,
    record_routing,
    routed_experts,
    router_probs,
    routing_shift,
    select_experts,
    sequence_mean,
    top_experts,
)
from uld.upcycle import upcycle

SMALL = dict(
    hidden_size=16,
    intermediate_size=24,
    num_hidden_layers=2,
    num_attention_heads=2,
    num_key_value_heads=1,
    max_position_embeddings=256,
    pad_token_id=0,
    bos_token_id=1,
    eos_token_id=2,
)
FAMILIES = {
    "mixtral": (tf.MixtralConfig, dict(num_local_experts=4, num_experts_per_tok=2)),
    "olmoe": (tf.OlmoeConfig, dict(num_experts=4, num_experts_per_tok=2)),
    "qwen2_moe": (
        tf.Qwen2MoeConfig,
        dict(
            num_experts=4,
            num_experts_per_tok=2,
            moe_intermediate_size=12,
            shared_expert_intermediate_size=24,
            mlp_only_layers=[0],
        ),
    ),
    "qwen3_moe": (
        tf.Qwen3MoeConfig,
        dict(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=12),
    ),
    "deepseek_v3": (
        tf.DeepseekV3Config,
        dict(
            n_routed_experts=4,
            num_experts_per_tok=2,
            moe_intermediate_size=12,
            n_group=1,
            topk_group=1,
            first_k_dense_replace=1,
            kv_lora_rank=8,
            q_lora_rank=8,
            qk_rope_head_dim=4,
            qk_nope_head_dim=4,
            v_head_dim=8,
            num_key_value_heads=2,  # MLA: one key/value per head
        ),
    ),
}
FIRST_MOE = {"qwen2_moe": 1, "deepseek_v3": 1}  # layer 0 is dense in these two


@pytest.fixture(scope="module")
def tok(tiny_model):
    return tf.AutoTokenizer.from_pretrained(tiny_model)


@pytest.fixture(scope="module")
def rows():
    return fictitious_authors(n_authors=3, qa_per_author=2)


def tiny(family: str, vocab: int, seed: int = 0, router_std: float = 1.0):
    cls, extra = FAMILIES[family]
    torch.manual_seed(seed)
    config = cls(vocab_size=vocab, **{**SMALL, **extra})
    model = tf.AutoModelForCausalLM.from_config(config).eval()
    with torch.no_grad():  # a wide router init: tokens spread over the experts
        for layer in moe_layers(model):
            layer.router.weight.normal_(0, router_std)
    return model


def batch_of(tok, rows):
    return pad([encode_qa(tok, r["question"], r["answer"]) for r in rows], tok.pad_token_id)


# ---------------------------------------------------------------- walking


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_walks_each_family(family, tok, rows):
    model = tiny(family, len(tok))
    layers = moe_layers(model)
    assert [m.index for m in layers] == list(range(FIRST_MOE.get(family, 0), 2))
    for m in layers:
        assert (m.n_experts, m.top_k) == (4, 2)
        assert m.router.weight.shape == (4, 16)
        assert set(m.expert_params()) == {"gate_up_proj", "down_proj"}
        assert all(p.ndim == 3 for p in m.expert_params().values())
    A = expert_attribution(model, tok, rows, batch_size=4)
    assert A.shape == (2, 4)
    if family in FIRST_MOE:
        assert (A[0] == 0).all()  # the dense layer
    moe_rows = A[[m.index for m in layers]]
    assert (moe_rows >= 0).all() and (moe_rows.sum(-1) > 0).all()
    if layers[0].score == "softmax":  # top-2 of a softmax: each token gives mass in (0, 1]
        assert (moe_rows.sum(-1) <= 1 + 1e-6).all()


def test_dense_model_is_refused():
    model = tf.LlamaForCausalLM(tf.LlamaConfig(vocab_size=64, **SMALL))
    with pytest.raises(NotMoEError, match="LlamaForCausalLM.*Mixtral, Qwen2-MoE") as e:
        moe_layers(model)
    assert isinstance(e.value, UnsupportedModelError) and isinstance(e.value, ValueError)


def test_moe_layer_names_the_moe_layers(tok):
    with pytest.raises(ValueError, match=r"MoE layers: \[1\]"):
        moe_layer(tiny("deepseek_v3", len(tok)), 0)


# ---------------------------------------------------------------- attribution


def test_sequence_mean_averages_each_sequence_then_the_caller_averages_sequences():
    scores = torch.tensor(
        [[[1.0, 0.0], [1.0, 0.0], [7.0, 7.0]], [[0.0, 1.0], [9.0, 9.0], [0.0, 0.0]]]
    )
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    assert torch.equal(sequence_mean(scores, mask), torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    probs = torch.tensor([[0.5, 0.3, 0.2], [0.1, 0.2, 0.7]])
    expected = torch.tensor([[0.5, 0.3, 0.0], [0.0, 0.2, 0.7]])
    assert torch.equal(gate_scores(probs, torch.tensor([[0, 1], [2, 1]])), expected)


def steered(tok) -> tf.MixtralForCausalLM:
    """A tiny Mixtral whose routing is known: residual dimension 0 is a constant 10 (attention
    and experts never write to it), and only routers' column 0 is non-zero, so every token of
    layer 0 goes to experts {2, 1} and of layer 1 to {0, 3}, more sharply in layer 1."""
    model = tiny("mixtral", len(tok), router_std=0.0)
    with torch.no_grad():
        model.model.embed_tokens.weight[:, 0] = 10.0
        for i, (first, second, c) in enumerate([(2, 1, 1.0), (0, 3, 3.0)]):
            layer = model.model.layers[i]
            layer.self_attn.o_proj.weight[0] = 0
            layer.mlp.experts.down_proj[:, 0] = 0
            layer.mlp.gate.weight[first, 0] = c
            layer.mlp.gate.weight[second, 0] = c / 2
    return model


def test_attribution_finds_the_steered_experts(tok, rows):
    A = expert_attribution(steered(tok), tok, rows, batch_size=4)
    assert (A[0, [0, 3]] == 0).all() and (A[1, [1, 2]] == 0).all()  # never routed there
    assert A[0, 2] > A[0, 1] > 0 and A[1, 0] > A[1, 3] > 0
    assert top_experts(A) == [(1, 0)]  # layer 1's margin is larger
    assert top_experts(A, m=2, layer=0) == [(0, 2), (0, 1)]
    assert top_experts(A, m=3) == [(1, 0), (0, 2), (0, 1)]


@pytest.mark.parametrize("tokens", ["all", "answer"])
def test_attribution_matches_the_models_own_router_logits(tok, rows, tokens):
    """Eq. 2 by hand, from the router logits that Mixtral itself returns."""
    model = tiny("mixtral", len(tok), seed=3)
    batch = batch_of(tok, rows)
    out = model(
        batch["input_ids"], attention_mask=batch["attention_mask"], output_router_logits=True
    )
    keep = batch["attention_mask"] if tokens == "all" else batch["labels"] != -100
    expected = torch.zeros(2, 4)
    for layer, logits in enumerate(out.router_logits):
        p = logits.softmax(-1).view(len(rows), -1, 4)
        for b in range(len(rows)):
            q = p[b][keep[b].bool()]
            top = q.topk(2, dim=-1).indices
            g = torch.zeros_like(q).scatter(-1, top, q.gather(-1, top))
            expected[layer] += g.mean(0) / len(rows)
    A = expert_attribution(model, tok, rows, batch_size=4, tokens=tokens)  # 2 batches: 4 + 2
    torch.testing.assert_close(A, expected, atol=1e-5, rtol=1e-5)


def test_ranking_rows_and_plot(tmp_path):
    A = torch.tensor([[0.1, 0.3, 0.0, 0.0], [0.5, 0.0, 0.2, 0.0]])
    rows = ranking_rows(A, top=2)
    assert [(r["rank"], r["layer"], r["expert"]) for r in rows] == [(1, 1, 0), (2, 0, 1)]
    assert rows[0]["score"] == pytest.approx(0.5) and rows[0]["share"] == pytest.approx(0.5 / 0.7)
    path = plot_attribution(A, tmp_path / "heat" / "a.png", selected=top_experts(A))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------- one expert trains


def test_anchor_loss_by_hand():
    g = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1]])
    # ||(-.3, .2, .1)||^2 = .14 and ||(-.9, .8, .1)||^2 = 1.46; mean .80
    assert anchor_loss(g, 0).item() == pytest.approx(0.80)
    assert anchor_loss(torch.eye(3), 1).item() == pytest.approx(4 / 3)
    with pytest.raises(ValueError, match="expert 3"):
        anchor_loss(g, 3)


def _train(model, batch, layer: int, expert: int, steps: int = 3):
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-2, weight_decay=0.01)  # the Trainer's decay
    model.train()
    for _ in range(steps):
        with record_routing(model, [moe_layer(model, layer)]) as seen:
            loss = -nll(*answer_logits(model, batch))  # gradient ascent, as unlearning does
        probs = router_probs(seen[layer][0].logits)[batch["attention_mask"].reshape(-1).bool()]
        (loss + anchor_loss(probs, expert)).backward()
        opt.step()
        opt.zero_grad()


def test_only_the_selected_expert_and_its_router_change(tok, rows):
    model = tiny("mixtral", len(tok))
    batch = batch_of(tok, rows)
    (layer, expert), *_ = top_experts(expert_attribution(model, tok, rows), layer=1)
    before = copy.deepcopy(model.state_dict())
    sel = select_experts(model, [(layer, expert)])
    E, I, H = 4, 24, 16
    assert sel.trainable == 2 * I * H + H * I + E * H
    assert sel.total == sum(p.numel() for p in model.parameters())
    assert sel.share == pytest.approx(sel.trainable / sel.total)
    others = [e for e in range(E) if e != expert]
    nll(*answer_logits(model, batch)).backward()
    for p in moe_layer(model, layer).expert_params().values():  # the gradient mask
        assert p.grad[expert].abs().sum() > 0 and (p.grad[others] == 0).all()
    model.zero_grad()
    _train(model, batch, layer, expert)
    sel.remove()
    prefix = f"model.layers.{layer}.mlp."
    after = model.state_dict()
    for name, w in before.items():
        if name in (prefix + "experts.gate_up_proj", prefix + "experts.down_proj"):
            assert not torch.equal(after[name][expert], w[expert]), name
            assert torch.equal(after[name][others], w[others]), name  # bit for bit
        elif name == prefix + "gate.weight":
            assert not torch.equal(after[name], w)
        else:
            assert torch.equal(after[name], w), name


def test_without_the_restore_weight_decay_moves_the_other_experts(tok, rows):
    """Why select_experts restores: AdamW's decay shrinks slices whose gradient is masked to 0."""
    model = tiny("mixtral", len(tok))
    sel = select_experts(model, [(1, 0)], train_router=False)
    sel._handles.pop().remove()  # the post-step restore only; the gradient mask stays
    w = model.model.layers[1].mlp.experts.down_proj
    before = w.detach().clone()
    _train(model, batch_of(tok, rows), 1, 0, steps=1)
    assert not torch.equal(w[1:], before[1:])
    torch.testing.assert_close(w[1:], before[1:] * (1 - 1e-2 * 0.01))
    sel.remove()


def test_select_experts_rejects_a_missing_expert(tok):
    with pytest.raises(ValueError, match=r"\(0, 1\) is not an expert: MoE layers are \[1\]"):
        select_experts(tiny("deepseek_v3", len(tok)), [(0, 1)])


# ---------------------------------------------------------------- routing shift


def test_changed_sets_ignores_order():
    a = torch.tensor([[0, 1], [2, 3], [1, 2]])
    b = torch.tensor([[1, 0], [2, 0], [1, 2]])
    assert changed_sets(a, b).tolist() == [False, True, False]


def test_routing_shift_counts_tokens_whose_expert_set_changed(tok, rows):
    original = tiny("mixtral", len(tok))
    assert routing_shift(original, original, tok, rows)["agg_value"] == 0.0
    unlearned = copy.deepcopy(original)
    with torch.no_grad():  # swap experts 0 and 3 in layer 1's router
        w = unlearned.model.layers[1].mlp.gate.weight
        w[[0, 3]] = w[[3, 0]].clone()
    chosen = routed_experts(original, tok, rows)[1]
    expected = ((chosen == 0).any(-1) ^ (chosen == 3).any(-1)).float().mean().item()
    assert 0 < expected < 1
    shift = routing_shift(original, unlearned, tok, rows, batch_size=4)
    assert shift["value_by_layer"][0] == 0.0
    assert shift["value_by_layer"][1] == pytest.approx(expected)
    assert shift["agg_value"] == pytest.approx(expected / 2)


# ---------------------------------------------------------------- upcycling


def tiny_llama(seed: int = 0) -> tf.LlamaForCausalLM:
    torch.manual_seed(seed)
    config = tf.LlamaConfig(
        vocab_size=128,
        tie_word_embeddings=True,
        rope_parameters={"rope_type": "default", "rope_theta": 500.0},
        **{**SMALL, "num_hidden_layers": 3},
    )
    return tf.LlamaForCausalLM(config).eval()


def test_upcycled_copies_compute_the_dense_model(tmp_path):
    dense = tiny_llama()
    moe = upcycle(dense, n_experts=4, top_k=2)
    assert isinstance(moe, tf.MixtralForCausalLM)
    ids = torch.randint(3, 128, (3, 11))
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0
    with torch.no_grad():
        want = dense(ids, attention_mask=mask).logits
        torch.testing.assert_close(moe(ids, attention_mask=mask).logits, want, atol=1e-5, rtol=0)
        moe.save_pretrained(tmp_path)
        again = tf.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
        torch.testing.assert_close(again(ids, attention_mask=mask).logits, want, atol=1e-5, rtol=0)
    assert [m.index for m in moe_layers(again)] == [0, 1, 2]


def test_upcycle_noise_makes_experts_differ_a_little():
    dense = tiny_llama()
    moe = upcycle(dense, n_experts=4, top_k=2, expert_noise=0.01, seed=1)
    w = moe.model.layers[0].mlp.experts.down_proj
    assert not torch.equal(w[0], w[1])
    rel = (w[0] - dense.model.layers[0].mlp.down_proj.weight).std() / w[0].std()
    assert 0.005 < rel < 0.02
    ids = torch.randint(3, 128, (2, 8))
    with torch.no_grad():
        torch.testing.assert_close(moe(ids).logits, dense(ids).logits, atol=1e-2, rtol=0)


def test_upcycle_refuses_top1_and_non_llama():
    with pytest.raises(ValueError, match="top_k=1"):
        upcycle(tiny_llama(), n_experts=4, top_k=1)
    with pytest.raises(ValueError, match="Llama"):
        upcycle(tiny("mixtral", 64), n_experts=4, top_k=2)

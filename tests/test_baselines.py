"""Baselines: each loss against values worked out by hand, the objectives at the start of
training (model = reference), every method through the one training loop on a tiny model, and
the Offset model's one-pass inference against its definition."""

from __future__ import annotations

import math

import pytest
import torch

from uld.config import UnlearnConfig
from uld.data.augment import REFUSALS, refusal_set
from uld.data.format import Collator
from uld.data.load import load_split
from uld.logit_diff import ULDModel, offset_logits
from uld.losses import (
    Frozen,
    Hyper,
    answer_logits,
    answer_rows,
    dpo_loss,
    kl_to_reference,
    npo_loss,
    sequence_logprob,
)
from uld.methods import METHODS, prepare
from uld.models import load_model
from uld.runs import unlearn
from uld.trainer import train

# --- the maths, by hand ------------------------------------------------------------------------


def test_npo_by_hand():
    z = torch.zeros(3)
    # model = reference: -(2/b) log sigmoid(0) = (2/b) log 2
    assert npo_loss(z, z, beta=0.1).item() == pytest.approx(20 * math.log(2))
    # log(p/p_ref) = -1, b = 0.1: -(20) log sigmoid(0.1) = 20 log(1 + e^-0.1) = 12.8879...
    got = npo_loss(torch.tensor([-3.0]), torch.tensor([-2.0]), beta=0.1).item()
    assert got == pytest.approx(20 * math.log(1 + math.exp(-0.1)), rel=1e-6)
    assert got == pytest.approx(12.88794, rel=1e-5)


def test_dpo_by_hand():
    z = torch.zeros(2)
    assert dpo_loss(z, z, z, z, beta=0.1).item() == pytest.approx(20 * math.log(2))
    # margin (w - ref_w) - (l - ref_l) = (-1 - -2) - (-4 - -3) = 2; b = 0.5:
    # -(2/0.5) log sigmoid(1) = 4 log(1 + e^-1) = 1.25305
    t = torch.tensor
    got = dpo_loss(t([-1.0]), t([-4.0]), t([-2.0]), t([-3.0]), beta=0.5).item()
    assert got == pytest.approx(1.25305, rel=1e-5)


def test_kl_to_reference_by_hand():
    ref = torch.tensor([[0.0, 0.0]])  # p_ref = [1/2, 1/2]
    logits = torch.tensor([[math.log(3), 0.0]])  # p = [3/4, 1/4]
    # KL(p_ref || p) = 1/2 ln(2/3) + 1/2 ln 2 = 0.143841
    assert kl_to_reference(logits, ref).item() == pytest.approx(0.143841, abs=1e-6)
    x = torch.randn(4, 9)
    assert kl_to_reference(x, x).item() == pytest.approx(0.0, abs=1e-6)


def test_sequence_logprob_sums_per_row():
    logits = torch.zeros(3, 4)  # every token has probability 1/4
    rows = torch.tensor([0, 0, 1])
    got = sequence_logprob(logits, torch.tensor([1, 2, 3]), rows, n_rows=2)
    torch.testing.assert_close(got, torch.tensor([2 * math.log(0.25), math.log(0.25)]))


def test_offset_logits_by_hand():
    l_t, l_o, l_o0 = torch.tensor([1.0, 2.0]), torch.tensor([0.5, 0.0]), torch.tensor([0.0, 1.0])
    torch.testing.assert_close(offset_logits(l_t, l_o, l_o0), torch.tensor([1.5, 1.0]))
    torch.testing.assert_close(offset_logits(l_t, l_o, l_o0, alpha=0.0), l_t)


def test_refusals_align_with_the_forget_rows():
    forget = load_split("forget05")
    idk = refusal_set(forget)
    assert [r["question"] for r in idk] == [r["question"] for r in forget]
    assert all(r["answer"] in REFUSALS for r in idk) and len({r["answer"] for r in idk}) > 1


# --- the objectives at the start: model = reference ------------------------------------------


def _cfg(tiny_model, method: str, tmp_path, **kw) -> UnlearnConfig:
    base = dict(
        method=method,
        model=tiny_model,
        forget="forget05",
        retain="retain95",
        out=str(tmp_path / method),
        layers=2,
        lora_rank=4,
        lora_dropout=0.0,
        batch_size=4,
        epochs=1,
        lr=1e-2,
    )
    return UnlearnConfig(**(base | kw))


def _batch(run, n: int = 4) -> dict:
    return Collator(run.tokenizer.pad_token_id)([run.dataset[i] for i in range(n)])


@pytest.mark.parametrize("lora", [False, True])
def test_npo_and_kl_at_the_start_are_2_log2_over_beta_and_zero(tiny_model, tmp_path, lora):
    run = prepare(_cfg(tiny_model, "npo+kl", tmp_path, lora=lora))
    run.model.eval()  # no dropout: the model must equal its reference exactly
    loss, logs = run.method.objective(run.model, _batch(run), Hyper(npo_beta=0.1), run.frozen)
    assert logs["forget_loss"] == pytest.approx(20 * math.log(2), rel=1e-5)
    assert logs["retain_loss"] == pytest.approx(0.0, abs=1e-6)
    assert loss.item() == pytest.approx(20 * math.log(2), rel=1e-5)


def test_dpo_at_the_start_and_ga_is_minus_nll(tiny_model, tmp_path):
    run = prepare(_cfg(tiny_model, "dpo", tmp_path))
    run.model.eval()
    batch = _batch(run)
    assert set(batch) == {"forget", "idk"}
    loss, _ = METHODS["dpo"].objective(run.model, batch, Hyper(dpo_beta=0.1), run.frozen)
    assert loss.item() == pytest.approx(20 * math.log(2), rel=1e-5)
    ga, _ = METHODS["ga"].objective(run.model, batch, Hyper(), run.frozen)
    logits, targets = answer_logits(run.model, batch["forget"])
    assert ga.item() == pytest.approx(-torch.nn.functional.cross_entropy(logits, targets).item())
    assert answer_rows(batch["forget"]).shape[0] == targets.shape[0]


def test_offset_at_the_start_is_the_target(tiny_model, tmp_path):
    run = prepare(_cfg(tiny_model, "offset-npo+kl", tmp_path))
    run.model.eval()
    loss, logs = run.method.objective(run.model, _batch(run), Hyper(), run.frozen)
    assert logs["forget_loss"] == pytest.approx(20 * math.log(2), rel=1e-5)
    assert logs["retain_loss"] == pytest.approx(0.0, abs=1e-6)


# --- every method through the training loop ---------------------------------------------------


def _snapshot(module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in module.named_parameters()}


@pytest.mark.parametrize(
    "method, lora, distill",
    [(m, False, False) for m, spec in METHODS.items() if not spec.moe]
    + [(m, True, False) for m in ("ga+gd", "dpo+kl", "npo+kl", "simnpo+gd", "undial", "rmu")]
    + [("uld", False, True)],  # the assistant taught by the target (frozen.target untouched)
)
def test_every_method_trains_what_it_should_and_nothing_else(
    tiny_model, tmp_path, method, lora, distill
):
    run = prepare(_cfg(tiny_model, method, tmp_path, lora=lora, distill=distill))
    assert (run.frozen is not None and run.frozen.target is not None) == (
        distill or method.startswith("offset-")
    )
    trainable = {n for n, p in run.model.named_parameters() if p.requires_grad}
    before = _snapshot(run.model)
    frozen = {
        name: _snapshot(m) for name, m in vars(run.frozen or Frozen()).items() if m is not None
    }
    trainer = train(
        run.model,
        run.dataset,
        Collator(run.tokenizer.pad_token_id),
        tmp_path / "out",
        run.method.objective,
        # the random tiny model gives every token p ~ 1/V (V = 400): SimNPO's sigma(beta (ln V -
        # delta)) and SatImp's p^5 then leave gradients near 1e-12, as they should on answers
        # already unlikely; a margin near ln V and beta1 = 1 keep every weight's update visible
        hp=Hyper(simnpo_delta=5.0, satimp_beta1=1.0),
        frozen=run.frozen,
        lr=1e-2,
        batch_size=4,
        max_steps=3,
        weight_decay=0.0,
    )
    losses = [h[k] for h in trainer.state.log_history for k in ("loss", "train_loss") if k in h]
    assert losses and all(math.isfinite(x) for x in losses)
    after = dict(run.model.named_parameters())
    assert trainable, "nothing to train"
    # every trainable weight moved (LoRA B starts at 0, so A's gradient is 0 at step 1 and A
    # first moves at step 2), and every frozen one is bit for bit as it was
    unchanged = sorted(n for n in trainable if torch.equal(before[n], after[n]))
    assert unchanged == [], f"{len(unchanged)} of {len(trainable)} unchanged: {unchanged[:4]}"
    for n in set(before) - trainable:
        assert torch.equal(before[n], after[n]), f"frozen weight {n} changed"
    if lora or method == "uld" or method.startswith("offset-"):
        assert all("lora_" in n for n in trainable)
    else:
        assert all("embed_tokens" not in n for n in trainable)  # as the target was trained
    for name, snap in frozen.items():
        model = getattr(run.frozen, name)
        for n, p in model.named_parameters():
            assert torch.equal(snap[n], p), f"{name} weight {n} changed"


def test_offset_model_saves_and_reloads_as_its_definition(tiny_model, tmp_path):
    cfg = _cfg(tiny_model, "offset-ga+kl", tmp_path, max_steps=2)
    out = unlearn(cfg)
    model, tok = ULDModel.from_pretrained(out)
    assert model.mode == "offset" and model.alpha == 1.0
    # naive definition: full target + trained offset (K layers + LoRA) - offset at the start
    from uld.methods import build_assistant

    offset, _ = build_assistant(tiny_model, 2, 4, 4, 0.0)
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    set_peft_model_state_dict(offset, load_file(str(out / "adapter_model.safetensors")))
    offset.eval()
    target, _ = load_model(tiny_model)
    ids = torch.tensor([tok("Where was Zeynep born?").input_ids])
    with torch.no_grad():
        l_t = target(ids).logits
        l_o = offset(ids).logits
        with offset.disable_adapter():
            l_o0 = offset(ids).logits
        got = model(ids).logits
    torch.testing.assert_close(got, offset_logits(l_t, l_o, l_o0), atol=1e-4, rtol=1e-4)
    assert not torch.allclose(l_o, l_o0)  # the offset did train


def test_baseline_saves_a_plain_model_with_its_card(tiny_model, tmp_path):
    out = unlearn(_cfg(tiny_model, "npo+gd", tmp_path, max_steps=2, lora=True))
    from uld.models import read_card

    card = read_card(out)
    assert card["method"] == "npo+gd" and card["made_by"] == "uld unlearn --method npo+gd"
    model, _ = load_model(out)  # LoRA merged back: an ordinary model folder
    assert not any("lora_" in n for n, _ in model.named_parameters())


def test_unknown_method_is_refused_by_name(tiny_model, tmp_path):
    with pytest.raises(ValueError, match="unknown method 'gd'.*npo\\+kl"):
        prepare(_cfg(tiny_model, "gd", tmp_path))


# --- UOE on a tiny Mixtral: the method end to end -------------------------------------------


@pytest.fixture(scope="module")
def tiny_moe(tiny_model, tmp_path_factory) -> str:
    import transformers as tf

    tok = tf.AutoTokenizer.from_pretrained(tiny_model)
    torch.manual_seed(0)
    config = tf.MixtralConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        num_local_experts=4,
        num_experts_per_tok=2,
        max_position_embeddings=256,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        tie_word_embeddings=True,
    )
    model = tf.MixtralForCausalLM(config)
    path = tmp_path_factory.mktemp("moe") / "tiny-mixtral"
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


@pytest.mark.parametrize("method", ["uoe+ga", "uoe+npo+kl"])
def test_uoe_trains_one_expert_and_its_router_only(tiny_moe, tmp_path, method):
    from uld.moe import moe_layer

    run = prepare(_cfg(tiny_moe, method, tmp_path))
    ((layer, expert),) = run.extra["experts"]
    assert (run.extra["anchor_layer"], run.extra["anchor_expert"]) == (layer, expert)
    before = _snapshot(run.model)
    train(
        run.model,
        run.dataset,
        Collator(run.tokenizer.pad_token_id),
        tmp_path / "o",
        run.method.objective,
        hp=Hyper(anchor_layer=layer, anchor_expert=expert),
        frozen=run.frozen,
        lr=1e-2,
        batch_size=4,
        max_steps=3,
    )  # weight decay 0.01, as every method trains
    run.finish()
    moe = moe_layer(run.model, layer)
    expert_names = {
        n
        for n, p in run.model.named_parameters()
        if any(p is q for q in moe.expert_params().values())
    }
    router_name = next(n for n, p in run.model.named_parameters() if p is moe.router.weight)
    for n, p in run.model.named_parameters():
        if n in expert_names:
            others = [e for e in range(4) if e != expert]
            assert torch.equal(before[n][others], p[others]), f"{n}: another expert moved"
            assert not torch.equal(before[n][expert], p[expert]), f"{n}: the expert did not move"
        elif n == router_name:
            assert not torch.equal(before[n], p), "the router did not train"
        else:
            assert torch.equal(before[n], p), f"{n} changed"
    assert 0 < run.extra["trainable_share"] < 0.5


def test_uoe_objective_adds_the_anchor(tiny_moe, tmp_path):
    run = prepare(_cfg(tiny_moe, "uoe+ga", tmp_path))
    run.model.eval()
    batch = _batch(run)
    layer, expert = run.extra["anchor_layer"], run.extra["anchor_expert"]
    hp = Hyper(anchor=2.0, anchor_layer=layer, anchor_expert=expert)
    loss, logs = METHODS["uoe+ga"].objective(run.model, batch, hp, run.frozen)
    assert loss.item() == pytest.approx(logs["forget_loss"] + 2.0 * logs["anchor"], rel=1e-5)
    assert 0 < logs["anchor"] < 2  # ||g - a||^2 of probability vectors is in [0, 2]
    run.finish()


def test_uoe_refuses_a_dense_model(tiny_model, tmp_path):
    from uld.moe import NotMoEError

    with pytest.raises(NotMoEError, match="not a supported Mixture-of-Experts"):
        prepare(_cfg(tiny_model, "uoe+ga", tmp_path))


def test_lora_baseline_on_an_moe_reaches_the_experts(tiny_moe, tmp_path):
    """Whole-model LoRA puts adapters on the 3-D expert tensors too (peft target_parameters);
    the merged model's experts moved, its router did not."""
    run = prepare(_cfg(tiny_moe, "npo", tmp_path, lora=True, lora_dropout=0.05))
    names = [n for n, p in run.model.named_parameters() if p.requires_grad]
    assert any("experts" in n for n in names) and any("q_proj" in n for n in names)
    out = unlearn(_cfg(tiny_moe, "npo", tmp_path, lora=True, max_steps=2))
    before, _ = load_model(tiny_moe)
    after, _ = load_model(str(out))
    start = dict(before.named_parameters())
    moved = {n for n, p in after.named_parameters() if not torch.equal(p, start[n])}
    assert any(n.endswith("experts.gate_up_proj") for n in moved)
    assert any(n.endswith("experts.down_proj") for n in moved)
    assert not any("gate.weight" in n or "embed" in n or "norm" in n for n in moved)


def test_which_methods_use_the_frozen_model_and_the_retain_set():
    baselines = [
        m
        for m, spec in METHODS.items()
        if not spec.composite and not spec.moe and spec.forget_term in ("ga", "dpo", "npo")
    ]
    assert baselines == [
        "ga",
        "ga+gd",
        "ga+kl",
        "dpo",
        "dpo+gd",
        "dpo+kl",
        "npo",
        "npo+gd",
        "npo+kl",
    ]
    assert [b for b in baselines if METHODS[b].has_retain_term] == [
        "ga+gd",
        "ga+kl",
        "dpo+gd",
        "dpo+kl",
        "npo+gd",
        "npo+kl",
    ]
    assert METHODS["uld"].has_retain_term and not METHODS["uld"].needs_reference
    assert [b for b in baselines if not METHODS[b].needs_reference] == ["ga", "ga+gd"]
    # every baseline has its Offset and UOE variants, with the same terms
    for b in baselines:
        for v in (f"offset-{b}", f"uoe+{b}"):
            assert METHODS[v].forget_term == METHODS[b].forget_term
            assert METHODS[v].retain_term == METHODS[b].retain_term
    # and open-unlearning's later five forget terms, each alone, +GD or +KL, and RMU
    assert len(METHODS) == 1 + 3 * 9 + 5 * 3 + 1

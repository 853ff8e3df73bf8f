"""The methods open-unlearning added after the ULD paper's baselines: SimNPO, WGA, SatImp,
UNDIAL, CE-U and RMU. Each loss against a value worked out by hand on logits written here, the
objectives at the start of training on a tiny model, RMU's layer and trainable weights, and
every hyperparameter's range refused before training. The training loop covers them through
tests/test_baselines.py's parametrised test, which reads METHODS."""

from __future__ import annotations

import math

import pytest
import torch
from test_baselines import _batch, _cfg  # the tiny runs' config and first batch

from uld.config import UnlearnConfig
from uld.losses import (
    Hyper,
    activation_mse,
    answer_positions,
    ceu_loss,
    layer_output,
    rmu_layer,
    simnpo_loss,
    steering_vector,
    undial_loss,
    weighted_ga_loss,
)
from uld.methods import METHODS, prepare
from uld.models import load_model

LN3 = math.log(3)

# --- the maths, by hand ------------------------------------------------------------------------


def test_simnpo_by_hand():
    # mean NLL 1, beta 2, delta 0.5: -(2/2) log sigmoid(2 * 0.5) = log(1 + e^-1) = 0.3132617
    got = simnpo_loss(torch.tensor([1.0]), beta=2.0, delta=0.5).item()
    assert got == pytest.approx(0.3132617, rel=1e-6)
    # at mean NLL = delta the loss is (2/beta) log 2, as NPO's at the reference
    assert simnpo_loss(torch.tensor([0.3, 0.3]), 4.5, 0.3).item() == pytest.approx(
        2 / 4.5 * math.log(2), rel=1e-6
    )
    # the mean over rows: rows at mean NLL 0 and 2, beta 1 -> (2 log 2 + 2 log(1 + e^-2)) / 2
    got = simnpo_loss(torch.tensor([0.0, 2.0]), beta=1.0).item()
    assert got == pytest.approx(math.log(2) + math.log(1 + math.exp(-2)), rel=1e-6)


def test_simnpo_objective_normalises_by_answer_length(tiny_model, tmp_path):
    run = prepare(_cfg(tiny_model, "simnpo", tmp_path))
    run.model.eval()
    batch = _batch(run)
    f = batch["forget"]
    loss, logs = run.method.objective(run.model, batch, Hyper(simnpo_beta=2.0), run.frozen)
    # each row's mean token NLL, from the model's logits over the full sequence
    with torch.no_grad():
        logits = run.model(input_ids=f["input_ids"], attention_mask=f["attention_mask"]).logits
    labels = f["labels"][:, 1:]
    token_nll = torch.nn.functional.cross_entropy(
        logits[:, :-1].transpose(1, 2).float(), labels, reduction="none", ignore_index=-100
    )
    mean_nll = token_nll.sum(1) / (labels != -100).sum(1)
    want = -torch.nn.functional.logsigmoid(2.0 * mean_nll).mean().item()  # 2/beta = 1
    assert logs["forget_loss"] == pytest.approx(want, rel=1e-4)


def test_wga_and_satimp_by_hand():
    logits = torch.tensor([[LN3, 0.0], [0.0, 0.0]], requires_grad=True)
    targets = torch.tensor([0, 1])  # p = 3/4 and 1/2; NLL = ln(4/3) and ln 2
    nll = [math.log(4 / 3), math.log(2)]
    # WGA, beta 1: w = p -> -(3/4 ln(4/3) + 1/2 ln 2) / 2 = -0.2811680
    wga = weighted_ga_loss(logits, targets, beta1=1.0)
    assert wga.item() == pytest.approx(-(0.75 * nll[0] + 0.5 * nll[1]) / 2, rel=1e-6)
    assert wga.item() == pytest.approx(-0.2811680, rel=1e-5)
    # SatImp, beta1 2, beta2 1: w = p^2 (1 - p) = 9/64 and 1/8
    sat = weighted_ga_loss(logits, targets, beta1=2.0, beta2=1.0)
    assert sat.item() == pytest.approx(-(9 / 64 * nll[0] + 1 / 8 * nll[1]) / 2, rel=1e-6)
    assert sat.item() == pytest.approx(-0.0635490, rel=1e-5)
    # the weights carry no gradient: d/dz of -(w/N) NLL is -(w/N) (p - onehot)
    wga.backward()
    torch.testing.assert_close(logits.grad[0], torch.tensor([0.09375, -0.09375]))
    # beta 0 is plain gradient ascent, -NLL
    assert weighted_ga_loss(logits, targets, 0.0).item() == pytest.approx(-sum(nll) / 2)


def test_undial_by_hand():
    ref = torch.tensor([[0.0, 0.0]])
    targets = torch.tensor([0])
    # the teacher's true logit lowered by ln 3: q = softmax([-ln 3, 0]) = [1/4, 3/4];
    # the model's p = [3/4, 1/4]: -(1/4 ln 3/4 + 3/4 ln 1/4) = 1.1116413
    got = undial_loss(torch.tensor([[LN3, 0.0]]), ref, targets, beta=LN3).item()
    assert got == pytest.approx(-(0.25 * math.log(0.75) + 0.75 * math.log(0.25)), rel=1e-6)
    assert got == pytest.approx(1.1116413, rel=1e-6)
    # beta 0 and the model = the teacher: the teacher's entropy, ln 2
    assert undial_loss(ref, ref, targets, beta=0.0).item() == pytest.approx(math.log(2))


def test_ceu_by_hand():
    logits = torch.tensor([[LN3, 0.0, 0.0]], requires_grad=True)  # p = [3/5, 1/5, 1/5]
    # q = the model's own distribution without token 0 = [0, 1/2, 1/2]: -ln(1/5) = ln 5
    loss = ceu_loss(logits, torch.tensor([0]))
    assert loss.item() == pytest.approx(math.log(5), rel=1e-6)
    loss.backward()  # q carries no gradient: p - q
    torch.testing.assert_close(logits.grad[0], torch.tensor([0.6, -0.3, -0.3]))


def test_answer_positions_count_from_each_answers_start():
    labels = torch.tensor([[-100, -100, 5, 6, 7], [-100, 8, 9, -100, -100]])
    # shifted targets: [-100, 5, 6, 7] and [8, 9, -100, -100]
    assert answer_positions({"labels": labels}).tolist() == [0, 1, 2, 0, 1]


def test_rmu_maths_by_hand():
    c = steering_vector(8, coeff=6.5, seed=3)
    assert c.norm().item() == pytest.approx(6.5, rel=1e-6) and (c >= 0).all()
    torch.testing.assert_close(c, steering_vector(8, 6.5, seed=3))  # fixed by the seed
    assert not torch.equal(c, steering_vector(8, 6.5, seed=4))
    h = torch.tensor([[[1.0, 2.0], [3.0, 4.0]], [[0.0, 0.0], [0.0, 2.0]]])
    zero = torch.zeros(2)
    # row 0, first token only: (1 + 4) / 2 = 2.5; row 1, both tokens: (0 + 2) / 2 = 1 -> 1.75
    mask = torch.tensor([[1, 0], [1, 1]])
    assert activation_mse(h, zero, mask).item() == pytest.approx(1.75)
    # row 0, both tokens: (2.5 + 12.5) / 2 = 7.5; row 1 as above -> (7.5 + 1) / 2
    assert activation_mse(h, zero, torch.ones(2, 2)).item() == pytest.approx(4.25)
    # WMDP's layer 7 of 32, scaled; an explicit layer as given
    assert [rmu_layer(n) for n in (32, 30, 16, 4, 1)] == [7, 7, 4, 1, 0]
    assert rmu_layer(30, 12) == 12


# --- on a tiny model --------------------------------------------------------------------------


def test_the_new_methods_and_their_defaults():
    for term in ("simnpo", "wga", "satimp", "undial", "ceu"):
        for name in (term, f"{term}+gd", f"{term}+kl"):
            assert METHODS[name].forget_term == term
        assert METHODS[f"{term}+gd"].has_retain_term and not METHODS[term].has_retain_term
    # open-unlearning's forget weights (gamma) and UNDIAL's learning rate
    assert METHODS["simnpo+gd"].forget_weight == 0.125 and METHODS["satimp+gd"].forget_weight == 0.1
    assert METHODS["wga+gd"].forget_weight == 1.0 and METHODS["undial"].lr == 1e-4
    # the frozen model: UNDIAL's teacher, RMU's retain activations, +KL; not the others
    assert METHODS["undial"].needs_reference and METHODS["rmu"].needs_reference
    assert not any(METHODS[m].needs_reference for m in ("simnpo", "wga", "satimp", "ceu"))
    assert METHODS["rmu"].has_retain_term and METHODS["rmu"].lr == 5e-5


@pytest.mark.parametrize("method", ["undial", "ceu", "wga+gd", "satimp+kl"])
def test_the_objectives_at_the_start(tiny_model, tmp_path, method):
    """Model = reference: UNDIAL's loss is the cross-entropy toward the adjusted reference, and
    every retain term is 0 (+KL) or the retain NLL (+GD)."""
    run = prepare(_cfg(tiny_model, method, tmp_path))
    run.model.eval()
    loss, logs = run.method.objective(run.model, _batch(run), Hyper(), run.frozen)
    assert math.isfinite(loss.item())
    if method == "satimp+kl":
        assert logs["retain_loss"] == pytest.approx(0.0, abs=1e-6)
    if method in ("undial", "ceu"):  # both a cross-entropy toward a distribution: > 0
        assert logs["forget_loss"] > 0 and "retain_loss" not in logs
    else:  # weighted gradient ascent: minus a weighted NLL
        assert logs["forget_loss"] < 0


def test_forget_weight_scales_the_forget_term(tiny_model, tmp_path):
    run = prepare(_cfg(tiny_model, "wga+gd", tmp_path))
    run.model.eval()
    batch = _batch(run)
    one, logs = run.method.objective(run.model, batch, Hyper(), run.frozen)
    tenth, _ = run.method.objective(run.model, batch, Hyper(forget_weight=0.1), run.frozen)
    want = 0.1 * logs["forget_loss"] + logs["retain_loss"]
    assert tenth.item() == pytest.approx(want, rel=1e-5)
    assert one.item() == pytest.approx(logs["forget_loss"] + logs["retain_loss"], rel=1e-5)


def test_layer_output_is_the_layers_hidden_state(tiny_model):
    model, tok = load_model(tiny_model)
    batch = tok(["Where was Zeynep born?"], return_tensors="pt")
    with torch.no_grad():
        states = model(**batch, output_hidden_states=True).hidden_states
        got = layer_output(model, batch, 1)
    torch.testing.assert_close(got, states[2])  # hidden_states[0] is the embeddings


@pytest.mark.parametrize("lora", [False, True])
def test_rmu_trains_the_mlp_outputs_around_its_layer(tiny_model, tmp_path, lora):
    run = prepare(_cfg(tiny_model, "rmu", tmp_path, lora=lora))
    assert run.extra["rmu_layer"] == 1  # 7/32 of the tiny model's 4 layers
    assert run.extra["rmu_trained_layers"] == [0, 1]
    trainable = sorted(n for n, p in run.model.named_parameters() if p.requires_grad)
    if lora:
        assert trainable and all("lora_" in n and "down_proj" in n for n in trainable)
        assert {n.split("layers.")[1].split(".")[0] for n in trainable} == {"0", "1"}
        assert run.frozen.ref is None  # the model with its adapters off
    else:
        assert trainable == [f"model.layers.{i}.mlp.down_proj.weight" for i in (0, 1)]
        assert run.frozen.ref.config.num_hidden_layers == 2  # only what the objective reads
    run.model.eval()
    hp = Hyper(rmu_steer=3.0, retain_weight=5.0)
    loss, logs = run.method.objective(run.model, _batch(run), hp, run.frozen)
    assert logs["retain_loss"] == pytest.approx(0.0, abs=1e-10)  # the model is still frozen's
    f = _batch(run)["forget"]
    with torch.no_grad():
        h = layer_output(run.model, f, 1)
    want = activation_mse(h, steering_vector(h.shape[-1], 3.0), f["labels"] != -100)
    assert logs["forget_loss"] == pytest.approx(want.item(), rel=1e-5)
    assert loss.item() == pytest.approx(want.item(), rel=1e-5)


def test_rmu_layer_beyond_the_model_is_refused_before_training(tiny_model, tmp_path):
    with pytest.raises(ValueError, match=r"--rmu-layer=4 is beyond the target's 4 layers.*0\.\.3"):
        prepare(_cfg(tiny_model, "rmu", tmp_path, rmu_layer=4))


@pytest.mark.parametrize(
    "flag, value",
    [
        ("simnpo_beta", 0.0),
        ("simnpo_beta", -1.0),
        ("simnpo_delta", -0.5),
        ("wga_beta", -1.0),
        ("satimp_beta1", -5.0),
        ("satimp_beta2", float("nan")),
        ("undial_beta", -10.0),
        ("ceu_ignore_first", -1),
        ("rmu_layer", -2),
        ("rmu_steer", 0.0),
        ("retain_weight", -1.0),
        ("forget_weight", 0.0),
    ],
)
def test_hyperparameters_out_of_range_are_refused_by_name(tmp_path, flag, value):
    cfg = UnlearnConfig(method="wga", model="m", out=str(tmp_path), **{flag: value})
    with pytest.raises(ValueError, match=f"--{flag.replace('_', '-')}="):
        cfg.validate()

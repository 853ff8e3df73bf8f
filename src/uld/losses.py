"""Training objectives, as pure functions.

Two levels:
- maths on logits: `nll`, `uniform_kl`, `kl_to_reference`, `npo_loss`, `dpo_loss`; they take the
  logits of answer positions only, `logits [N, V]` with `targets [N]` (N = answer tokens in the
  batch), because the LM head (49k vocab on SmolLM2) is most of a small model's compute and only
  answer tokens need it (NPO and DPO sum them per row into sequence log-likelihoods);
- objectives `(model, batch, hp, frozen) -> (loss, logs)`: fine-tuning, ULD's assistant, the
  ULD paper's baselines (GA, DPO, NPO, each alone, +GD or +KL; `baseline_objective` with the
  terms named), which the Offset variants reuse, UOE's (a baseline's loss plus the router
  anchor), the later forget terms that open-unlearning ships (SimNPO, WGA, SatImp, UNDIAL,
  CE-U; also through `baseline_objective`) and RMU's (on one layer's activations, not logits).
  Which method uses which is `uld.methods.METHODS`.

`answer_logits` runs a model's decoder on a right-padded batch and applies the LM head only where
the (shifted) labels are not -100.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from uld import dist
from uld.assistant import base_lm, decoder_layers, decoder_of
from uld.moe import anchor_loss, moe_layer, record_routing, router_probs

IGNORE = -100

_ACROSS = [False]  # inside `across_processes`: means are over every process's batch


@contextmanager
def across_processes():
    """Within this block, every mean an objective takes over its batch's tokens or rows
    (`batch_mean`) is the mean over the whole batch of all processes, times the number of
    processes. Data-parallel training averages the processes' gradients, so each step is then
    the one process's step on the whole batch, whatever the share of answer tokens each process
    got. Every process must compute the same terms in the same order (one sum per mean)."""
    _ACROSS[0] = dist.world_size() > 1
    try:
        yield
    finally:
        _ACROSS[0] = False


def batch_mean(x: torch.Tensor) -> torch.Tensor:
    """x.mean() over all its elements (tokens or rows); within `across_processes`, the sum over
    this process's x times the number of processes over the count of all processes' x."""
    if not _ACROSS[0]:
        return x.mean()
    n = dist.all_sum(x.numel(), x.device)
    return x.sum() * (dist.world_size() / n).to(x.dtype)


@dataclass
class Hyper:
    """Loss weights shared by the objectives."""

    beta: float = 6.5  # ULD: weight of the uniform (retain) term, paper Eq. 5
    npo_beta: float = 0.1  # NPO inverse temperature (Zhang et al. 2024)
    dpo_beta: float = 0.1  # DPO inverse temperature (Rafailov et al. 2023)
    retain_weight: float = 1.0  # weight of the GD / KL retain term of the baselines
    anchor: float = 1.0  # UOE: weight alpha of the router anchor loss
    anchor_layer: int = -1  # UOE: the decoder layer of the unlearned expert
    anchor_expert: int = -1  # UOE: the unlearned expert, the anchor's one-hot target
    forget_weight: float = 1.0  # weight of the forget term (open-unlearning's gamma)
    simnpo_beta: float = 4.5  # SimNPO inverse temperature (open-unlearning's SimNPO.yaml)
    simnpo_delta: float = 0.0  # SimNPO margin on the mean token NLL (Unlearn-Simple's gamma)
    wga_beta: float = 1.0  # WGA: token weight p^beta
    satimp_beta1: float = 5.0  # SatImp: token weight p^beta1 (1 - p)^beta2
    satimp_beta2: float = 1.0
    undial_beta: float = 10.0  # UNDIAL: how far the true token's teacher logit is lowered
    ceu_ignore_first: int = 1  # CE-U: answer tokens left out at the start of each answer
    rmu_layer: int = -1  # RMU: the steered decoder layer (-1: `rmu_layer`'s default)
    rmu_steer: float = 2.0  # RMU: steering coefficient c, the norm of the target activation
    rmu_seed: int = 0  # RMU: seed of the fixed random direction u


def answer_logits(model: torch.nn.Module, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits at answer positions. batch: input_ids, attention_mask, labels [B, T].

    Returns (logits [N, V] float32, targets [N]) where position t predicts labels[t + 1].
    """
    decoder, head = decoder_of(model), base_lm(model).get_output_embeddings()
    h = decoder(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
    ).last_hidden_state
    targets = batch["labels"][:, 1:]
    keep = targets != IGNORE
    logits = head(h[:, :-1][keep]).float()
    cap = getattr(getattr(model, "config", None), "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return logits, targets[keep]


def answer_rows(batch: dict) -> torch.Tensor:
    """The row of each answer position, in `answer_logits` order. -> [N] (long)."""
    return (batch["labels"][:, 1:] != IGNORE).nonzero()[:, 0]


def answer_positions(batch: dict) -> torch.Tensor:
    """The index of each answer position within its row's answer (0 for the first answer
    token), in `answer_logits` order. -> [N] (long)."""
    keep = batch["labels"][:, 1:] != IGNORE
    return (keep.cumsum(dim=1) - 1)[keep]


def nll(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean negative log-likelihood of the answer tokens. logits [N, V], targets [N] -> scalar."""
    if not _ACROSS[0]:
        return F.cross_entropy(logits, targets)
    return batch_mean(F.cross_entropy(logits, targets, reduction="none"))


def soft_nll(logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """Cross-entropy toward a teacher's next-token distribution, averaged over positions:
    -sum_v softmax(teacher)_v log softmax(logits)_v. It is nll when the teacher is one-hot and
    KL(teacher || p) plus the teacher's entropy otherwise. logits, teacher_logits [N, V] -> scalar.

    ULD with `--distill` (our variant): L_f with the target's soft labels on D'_f.
    """
    teacher = F.softmax(teacher_logits.float(), dim=-1)
    return -batch_mean((teacher * F.log_softmax(logits, dim=-1)).sum(dim=-1))


def uniform_kl(logits: torch.Tensor) -> torch.Tensor:
    """KL(U || p) averaged over positions: cross-entropy toward the uniform distribution minus
    its floor log V, so it is >= 0 and 0 exactly when p is uniform. logits [N, V] -> scalar.

    ULD paper, Eq. 4 (the retain term L_r of the assistant: "know nothing" of D'_r).
    """
    logp = F.log_softmax(logits, dim=-1)
    return -batch_mean(logp.mean(dim=-1)) - math.log(logits.shape[-1])


def sequence_logprob(
    logits: torch.Tensor, targets: torch.Tensor, rows: torch.Tensor, n_rows: int
) -> torch.Tensor:
    """log p(answer | question) per row: the sum of its answer tokens' log-probabilities.

    logits [N, V], targets [N], rows [N] (the row of each position) -> [n_rows].
    """
    logp = -F.cross_entropy(logits, targets, reduction="none")
    return torch.zeros(n_rows, dtype=logp.dtype, device=logp.device).index_add(0, rows, logp)


def npo_loss(logp: torch.Tensor, logp_ref: torch.Tensor, beta: float = 0.1) -> torch.Tensor:
    """Negative Preference Optimization (Zhang et al. 2024, arXiv 2404.05868, Eq. 3):
    -(2/beta) * mean log sigmoid(-beta * log(p_theta / p_ref)) over forget answers.

    logp, logp_ref [B] (sequence log-likelihoods under the model and the frozen reference) ->
    scalar. Equals (2/beta) log 2 when the model is the reference; tends to 0 as p_theta -> 0,
    so unlike GA it stops pushing once an answer is unlikely.
    """
    return -(2 / beta) * batch_mean(F.logsigmoid(-beta * (logp - logp_ref)))


def dpo_loss(
    logp_w: torch.Tensor,
    logp_l: torch.Tensor,
    ref_w: torch.Tensor,
    ref_l: torch.Tensor,
    beta: float = 0.1,
) -> torch.Tensor:
    """DPO (Rafailov et al. 2023, Eq. 7) with a refusal as the preferred answer w and the
    forget answer as the rejected one l, as TOFU and the ULD paper use it:
    -(2/beta) * mean log sigmoid(beta * ((logp_w - ref_w) - (logp_l - ref_l))).

    All [B] sequence log-likelihoods -> scalar; (2/beta) log 2 when the model is the reference
    (the 2/beta scale is the ULD code's, so DPO and NPO losses read alike).
    """
    return -(2 / beta) * batch_mean(F.logsigmoid(beta * ((logp_w - ref_w) - (logp_l - ref_l))))


def kl_to_reference(logits: torch.Tensor, ref_logits: torch.Tensor) -> torch.Tensor:
    """KL(p_ref || p_theta) averaged over positions: TOFU's KL retain regulariser (Maini et al.
    2024, Sec. 4: "minimise the KL divergence between the predictions on the retain set of the
    original and the new model"). logits, ref_logits [N, V] -> scalar, 0 when they agree.
    """
    if not _ACROSS[0]:
        return F.kl_div(
            F.log_softmax(logits, -1),
            F.log_softmax(ref_logits, -1),
            reduction="batchmean",
            log_target=True,
        )
    logp, logq = F.log_softmax(logits, -1), F.log_softmax(ref_logits, -1)
    return batch_mean((logq.exp() * (logq - logp)).sum(-1))


def simnpo_loss(mean_nll: torch.Tensor, beta: float = 4.5, delta: float = 0.0) -> torch.Tensor:
    """SimNPO (Fan et al. 2024, arXiv 2410.07163, Sec. 4): NPO without the reference model, on
    the length-normalised log-likelihood, with a margin:
    -(2/beta) * mean log sigmoid(beta * (-log p_theta(y|x) / |y| - delta)).

    mean_nll [B]: each forget answer's mean token NLL, -log p_theta(y|x) / |y| -> scalar.
    delta is subtracted inside beta's product as in the authors' code (OPTML-Group/Unlearn-
    Simple, `simnpo` loss) and open-unlearning; the paper's margin gamma is beta * delta.
    Equals (2/beta) log 2 at mean NLL = delta and tends to 0 as the answers become unlikely.
    """
    return -(2 / beta) * batch_mean(F.logsigmoid(beta * (mean_nll - delta)))


def weighted_ga_loss(
    logits: torch.Tensor, targets: torch.Tensor, beta1: float, beta2: float = 0.0
) -> torch.Tensor:
    """Token-weighted gradient ascent: mean over answer tokens of -w_t * NLL_t with the weight
    w_t = p_t^beta1 * (1 - p_t)^beta2 held constant (no gradient), p_t the model's probability
    of the answer token. logits [N, V], targets [N] -> scalar.

    beta2 = 0 is WGA (Wang et al. 2025, arXiv 2502.19301, weighted GA: w = p^beta, beta = 1):
    tokens the model no longer predicts stop being pushed. beta2 > 0 is SatImp (Yang et al.
    2025, arXiv 2505.11953, Sec. 5: saturation p^beta1 times importance (1 - p)^beta2, beta1 = 5,
    beta2 = 1). As open-unlearning's compute_wga_loss / compute_satimp_loss.
    """
    token_nll = F.cross_entropy(logits, targets, reduction="none")
    p = torch.exp(-token_nll.detach())
    w = p.pow(beta1) * (1 - p).pow(beta2)
    return -batch_mean(w * token_nll)


def undial_loss(
    logits: torch.Tensor, ref_logits: torch.Tensor, targets: torch.Tensor, beta: float = 10.0
) -> torch.Tensor:
    """UNDIAL (Dong et al. 2024, arXiv 2402.10052, Sec. 3): self-distillation toward the frozen
    model's logits with the true token's logit lowered by beta,
    -sum_v softmax(z_ref - beta * onehot(y))_v log softmax(z)_v, averaged over answer tokens.

    logits, ref_logits [N, V], targets [N] -> scalar. Its minimum is at p = the adjusted teacher,
    so unlike GA the forget tokens' probability falls by a bounded amount and the rest of the
    distribution keeps the teacher's shape. (open-unlearning's compute_undial_loss averages
    over every position of the batch; here over answer tokens.)
    """
    adjusted = ref_logits.float() - beta * F.one_hot(targets, ref_logits.shape[-1])
    return soft_nll(logits, adjusted)


def ceu_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """CE-U (Yang 2025, arXiv 2503.01224, Sec. 3): cross-entropy toward the model's own
    distribution with the true token removed, q = softmax(stopgrad(z) with z_y = -inf):
    -sum_v q_v log softmax(z)_v, averaged over answer tokens.

    logits [N, V], targets [N] -> scalar. Its gradient in the logits is p - q: p_y is pushed to
    0 and the rest keep their relative sizes, with no blow-up as p_y -> 0 (GA's 1/p_y).
    """
    others = logits.detach().float().scatter(-1, targets[:, None], float("-inf"))
    return soft_nll(logits, others)


def rmu_layer(n_layers: int, layer: int = -1) -> int:
    """RMU's steered layer: `layer`, or for -1 WMDP's layer 7 of zephyr-7b's 32 scaled to the
    model's depth (layer 7 of SmolLM2-135M's 30)."""
    if layer >= 0:
        return layer
    return min(n_layers - 1, round(7 * n_layers / 32))


def steering_vector(dim: int, coeff: float, seed: int = 0) -> torch.Tensor:
    """RMU's target activation c * u: u a random unit vector, uniform [0, 1) entries normalised
    (as WMDP's rmu/unlearn.py), fixed by `seed`. -> [dim] (float32, CPU)."""
    u = torch.rand(dim, generator=torch.Generator().manual_seed(seed))
    return coeff * u / u.norm()


def activation_mse(h: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared difference of activations: per token the mean over the D dimensions, per
    row the mean over its masked tokens, then the mean over rows (open-unlearning's RMU
    compute_activation_loss). h [B, T, D], target [B, T, D] or [D], mask [B, T] -> scalar."""
    sq = (h.float() - target.float()).pow(2).mean(dim=-1)
    m = mask.float()
    return batch_mean((sq * m).sum(dim=1) / m.sum(dim=1).clamp(min=1))


# --- objectives: (model, batch, hp, frozen) -> (loss, logs) -------------------------------


@dataclass
class Frozen:
    """Frozen models an objective may need, loaded once and shared by every step.

    ref: the model before unlearning (NPO, DPO and KL compare against it). None with LoRA: the
    model with its adapters switched off *is* the reference, so no second copy is loaded.
    target: set for the Offset methods (Huang et al. 2024, delta-unlearning): the trained model
    is then a small offset model and the unlearned logits are
    l_target + l_offset - l_offset_at_start; the reference is the target itself. For ULD with
    `--distill`, the teacher whose distribution on D'_f the assistant learns.
    offset_start: the offset model at the start when it is fully fine-tuned (None with LoRA).
    """

    ref: torch.nn.Module | None = None
    target: torch.nn.Module | None = None
    offset_start: torch.nn.Module | None = None


@contextmanager
def _adapters_off(model):
    with model.disable_adapter():
        yield


def _frozen_logits(model, frozen_model, batch: dict) -> torch.Tensor:
    """Answer logits of the frozen counterpart: `frozen_model`, or `model` without adapters."""
    with torch.no_grad():
        if frozen_model is not None:
            return answer_logits(frozen_model, batch)[0]
        if not hasattr(model, "disable_adapter"):
            raise ValueError("this loss needs a reference model: pass Frozen(ref=...) or use LoRA")
        with _adapters_off(model):
            return answer_logits(model, batch)[0]


def policy_logits(model, batch: dict, frozen: Frozen, need_ref: bool):
    """(logits [N, V] of the model being unlearned, targets [N], reference logits [N, V] or
    None) at the answer positions of `batch`."""
    logits, targets = answer_logits(model, batch)
    if frozen.target is not None:  # Offset: target + (offset - offset at the start)
        with torch.no_grad():
            ref = answer_logits(frozen.target, batch)[0]
        start = _frozen_logits(model, frozen.offset_start, batch)
        return ref + logits - start, targets, ref
    if need_ref:
        return logits, targets, _frozen_logits(model, frozen.ref, batch)
    return logits, targets, None


def finetune_objective(model, batch: dict, hp: Hyper, frozen: Frozen | None = None):
    """Plain fine-tuning (TOFU's target/retain models): NLL of the answers."""
    loss = nll(*answer_logits(model, batch))
    return loss, {"nll": loss.item()}


def uld_objective(model, batch: dict, hp: Hyper, frozen: Frozen | None = None):
    """ULD assistant, reversed objective (ULD paper, Eq. 3-5): remember D'_f, know nothing of D'_r.

    L = L_f + beta * L_u with L_f = NLL on D'_f answers and L_u = uniform_kl on D'_r answers.
    We average L_u over answer tokens rather than all positions (the paper's choice): the
    assistant is only ever subtracted where the target answers, and applying the LM head to
    prompt positions would double the cost of a step.
    With `frozen.target` set (`--distill`, our variant) L_f is `soft_nll` toward the target's
    distribution instead of the answer tokens.
    """
    logits, targets = answer_logits(model, batch["forget"])
    if frozen is not None and frozen.target is not None:
        with torch.no_grad():
            teacher = answer_logits(frozen.target, batch["forget"])[0]
        l_f = soft_nll(logits, teacher)
    else:
        l_f = nll(logits, targets)
    l_u = uniform_kl(answer_logits(model, batch["retain"])[0])
    return l_f + hp.beta * l_u, {"l_f": l_f.item(), "l_u": l_u.item()}


def baseline_objective(
    forget_loss: str, retain_loss: str, model, batch: dict, hp: Hyper, frozen: Frozen
) -> tuple[torch.Tensor, dict]:
    """A forget loss times hp.forget_weight plus, if named, a retain term (gd: NLL on retain
    answers; kl: `kl_to_reference` on them) times hp.retain_weight. The forget losses: the ULD
    paper's baselines (ga, npo, dpo) and those open-unlearning added since (simnpo, wga, satimp,
    undial, ceu), each with its own function above.

    batch: {"forget": ..., "retain": ... (with a retain term), "idk": ... (DPO: the forget
    questions with refusal answers)}, each a right-padded batch with answer labels.
    """
    f = batch["forget"]
    rows, n = answer_rows(f), f["input_ids"].shape[0]
    need_ref = forget_loss in REFERENCE_TERMS
    logits, targets, ref = policy_logits(model, f, frozen, need_ref=need_ref)
    if forget_loss == "ga":  # gradient ascent: minus the NLL of the forget answers
        l_f = -nll(logits, targets)
    elif forget_loss == "npo":
        logp = sequence_logprob(logits, targets, rows, n)
        l_f = npo_loss(logp, sequence_logprob(ref, targets, rows, n), hp.npo_beta)
    elif forget_loss == "dpo":
        w = batch["idk"]
        w_logits, w_targets, w_ref = policy_logits(model, w, frozen, need_ref=True)
        w_rows = answer_rows(w)
        l_f = dpo_loss(
            sequence_logprob(w_logits, w_targets, w_rows, n),
            sequence_logprob(logits, targets, rows, n),
            sequence_logprob(w_ref, w_targets, w_rows, n),
            sequence_logprob(ref, targets, rows, n),
            hp.dpo_beta,
        )
    elif forget_loss == "simnpo":
        length = torch.bincount(rows, minlength=n).clamp(min=1)
        mean_nll = -sequence_logprob(logits, targets, rows, n) / length
        l_f = simnpo_loss(mean_nll, hp.simnpo_beta, hp.simnpo_delta)
    elif forget_loss == "wga":
        l_f = weighted_ga_loss(logits, targets, hp.wga_beta)
    elif forget_loss == "satimp":
        l_f = weighted_ga_loss(logits, targets, hp.satimp_beta1, hp.satimp_beta2)
    elif forget_loss == "undial":
        l_f = undial_loss(logits, ref, targets, hp.undial_beta)
    elif forget_loss == "ceu":  # the first answer tokens left out, as the CE-U paper's footnote
        keep = answer_positions(f) >= hp.ceu_ignore_first
        l_f = ceu_loss(logits[keep], targets[keep]) if keep.any() else 0 * logits.sum()
    else:
        raise ValueError(
            f"unknown forget loss {forget_loss!r}; choose one of {', '.join(ALL_FORGET_TERMS)}"
        )
    logs = {"forget_loss": l_f.item()}
    l_f = hp.forget_weight * l_f
    if not retain_loss:
        return l_f, logs
    r_logits, r_targets, r_ref = policy_logits(
        model, batch["retain"], frozen, need_ref=retain_loss == "kl"
    )
    if retain_loss == "gd":
        l_r = nll(r_logits, r_targets)
    elif retain_loss == "kl":
        l_r = kl_to_reference(r_logits, r_ref)
    else:
        raise ValueError(f"unknown retain loss {retain_loss!r}; choose gd or kl")
    logs["retain_loss"] = l_r.item()
    return l_f + hp.retain_weight * l_r, logs


def uoe_objective(
    forget_loss: str, retain_loss: str, model, batch: dict, hp: Hyper, frozen: Frozen
) -> tuple[torch.Tensor, dict]:
    """UOE (Zhuang et al. 2024, arXiv 2411.18797, Sec. 4): a baseline's loss, with only the
    selected expert and its router trainable (`uld.moe.select_experts`), plus the router anchor
    alpha * ||g - a||^2 on the forget tokens at the expert's layer (`uld.moe.anchor_loss`), which
    keeps them routed to the expert being unlearned instead of letting the router steer around it.
    """
    layer = moe_layer(model, hp.anchor_layer)
    with record_routing(model, [layer]) as seen:
        loss, logs = baseline_objective(forget_loss, retain_loss, model, batch, hp, frozen)
    forget_routing = seen[layer.index][0]  # the objective's first pass is the forget batch
    tokens = batch["forget"]["attention_mask"].reshape(-1).bool()
    g = router_probs(forget_routing.logits, layer.score)[tokens]
    anchor = anchor_loss(g, hp.anchor_expert)
    logs["anchor"] = anchor.item()
    return loss + hp.anchor * anchor, logs


class _Stop(Exception):
    """Raised by `layer_output`'s hook: nothing after the steered layer needs to run."""


def layer_output(model, batch: dict, layer: int) -> torch.Tensor:
    """The hidden states leaving decoder layer `layer` (0-based) on `batch`; the layers after it
    and the LM head are not run. batch: input_ids, attention_mask [B, T] -> [B, T, D]."""
    seen = []

    def hook(_module, _inputs, output):
        seen.append(output[0] if isinstance(output, tuple) else output)
        raise _Stop

    handle = decoder_layers(model)[layer].register_forward_hook(hook)
    try:
        decoder_of(model)(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    except _Stop:
        pass
    finally:
        handle.remove()
    return seen[0]


def _frozen_layer_output(model, frozen_model, batch: dict, layer: int) -> torch.Tensor:
    """`layer_output` of the frozen counterpart: `frozen_model`, or `model` without adapters."""
    with torch.no_grad():
        if frozen_model is not None:
            return layer_output(frozen_model, batch, layer)
        if not hasattr(model, "disable_adapter"):
            raise ValueError("RMU needs the frozen model: pass Frozen(ref=...) or use LoRA")
        with _adapters_off(model):
            return layer_output(model, batch, layer)


def rmu_objective(model, batch: dict, hp: Hyper, frozen: Frozen) -> tuple[torch.Tensor, dict]:
    """RMU (Li et al. 2024, WMDP, arXiv 2403.03218, Sec. 5.2): at the steered layer l, push the
    forget tokens' activations toward c * u (a fixed random unit vector u, `steering_vector`)
    and keep the retain tokens' activations where the frozen model has them:
    L = mse(h_l(forget), c * u) + alpha * mse(h_l(retain), h_l^frozen(retain)),
    alpha = hp.retain_weight, c = hp.rmu_steer, each mse over answer tokens (`activation_mse`;
    WMDP's code averages over every token of raw text, open-unlearning over answer tokens).
    Beyond l nothing runs: the LM head is never applied.
    """
    f, r = batch["forget"], batch["retain"]
    layer = rmu_layer(base_lm(model).config.num_hidden_layers, hp.rmu_layer)
    h_f = layer_output(model, f, layer)
    steer = steering_vector(h_f.shape[-1], hp.rmu_steer, hp.rmu_seed).to(h_f.device)
    l_f = activation_mse(h_f, steer, f["labels"] != IGNORE)
    h_r = layer_output(model, r, layer)
    h_ref = _frozen_layer_output(model, frozen.ref, r, layer)
    l_r = activation_mse(h_r, h_ref, r["labels"] != IGNORE)
    loss = hp.forget_weight * l_f + hp.retain_weight * l_r
    return loss, {"forget_loss": l_f.item(), "retain_loss": l_r.item()}


Objective = Callable[[torch.nn.Module, dict, Hyper, Frozen], tuple[torch.Tensor, dict]]

# the baselines' terms, combined in uld.methods.METHODS: a forget loss, alone or with a retain term
FORGET_TERMS = ("ga", "dpo", "npo")  # the ULD paper's, also as Offset and UOE variants
LATER_FORGET_TERMS = ("simnpo", "wga", "satimp", "undial", "ceu")  # open-unlearning's since
ALL_FORGET_TERMS = FORGET_TERMS + LATER_FORGET_TERMS
RETAIN_TERMS = ("", "gd", "kl")
REFERENCE_TERMS = ("npo", "dpo", "undial")  # forget terms that read the frozen model

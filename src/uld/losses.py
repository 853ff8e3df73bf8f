"""Training objectives, as pure functions.

Two levels:
- maths on logits: `nll`, `uniform_kl`; each takes the logits of answer positions only,
  `logits [N, V]` with `targets [N]` (N = answer tokens in the batch), because the LM head
  (49k vocab on SmolLM2) is most of a small model's compute and only answer tokens need it;
- objectives `(model, batch, hp) -> (loss, logs)` for each method, collected in `LOSSES`.

`answer_logits` runs a model's decoder on a right-padded batch and applies the LM head only where
the (shifted) labels are not -100.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from uld.assistant import base_lm, decoder_of

IGNORE = -100


@dataclass
class Hyper:
    """Loss weights shared by the objectives."""

    beta: float = 6.5  # ULD: weight of the uniform (retain) term, paper Eq. 5


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


def nll(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean negative log-likelihood of the answer tokens. logits [N, V], targets [N] -> scalar."""
    return F.cross_entropy(logits, targets)


def uniform_kl(logits: torch.Tensor) -> torch.Tensor:
    """KL(U || p) averaged over positions: cross-entropy toward the uniform distribution minus
    its floor log V, so it is >= 0 and 0 exactly when p is uniform. logits [N, V] -> scalar.

    ULD paper, Eq. 4 (the retain term L_r of the assistant: "know nothing" of D'_r).
    """
    logp = F.log_softmax(logits, dim=-1)
    return -logp.mean(dim=-1).mean() - math.log(logits.shape[-1])


# --- objectives: (model, batch, hp) -> (loss, logs) ---------------------------------------


def finetune_objective(model, batch: dict, hp: Hyper) -> tuple[torch.Tensor, dict]:
    """Plain fine-tuning (TOFU's target/retain models): NLL of the answers."""
    loss = nll(*answer_logits(model, batch))
    return loss, {"nll": loss.item()}


def uld_objective(model, batch: dict, hp: Hyper) -> tuple[torch.Tensor, dict]:
    """ULD assistant, reversed objective (ULD paper, Eq. 3-5): remember D'_f, know nothing of D'_r.

    L = L_f + beta * L_u with L_f = NLL on D'_f answers and L_u = uniform_kl on D'_r answers.
    We average L_u over answer tokens rather than all positions (the paper's choice): the
    assistant is only ever subtracted where the target answers, and applying the LM head to
    prompt positions would double the cost of a step.
    """
    l_f = nll(*answer_logits(model, batch["forget"]))
    l_u = uniform_kl(answer_logits(model, batch["retain"])[0])
    return l_f + hp.beta * l_u, {"l_f": l_f.item(), "l_u": l_u.item()}


Objective = Callable[[torch.nn.Module, dict, Hyper], tuple[torch.Tensor, dict]]

LOSSES: dict[str, Objective] = {
    "finetune": finetune_objective,
    "uld": uld_objective,
}

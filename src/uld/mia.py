"""Membership inference in `uld eval`: can an attacker tell the forget rows from held-out rows?

Each attack scores every forget and holdout row; `aucs` turns the scores into the ROC AUC of
forget (members) against holdout (non-members), 0.5 when they look alike. The maths is in
`uld.metrics`; this module runs the two attacks that need passes of their own:

    ATTACKS    loss, min_k, zlib, min_k++: from `uld.evaluate.score_answers`' one pass (free);
               ref: a reference model's loss on the same rows (one more forward per row);
               gradnorm: the norm of each row's loss gradient (a forward and a backward per row)

    losses = answer_losses(reference, tok, questions, answers)   # [N], the `ref` attack
    norms = gradient_norms(model, tok, questions, answers)       # [N], the `gradnorm` attack
    aucs(forget_items, holdout_items, ATTACKS)                   # {"mia_loss_auc": .., ...}

For a ULD or Offset model (a `ULDModel`), the gradient is taken w.r.t. its LoRA weights, the
only weights unlearning trained (the target is frozen), through the combined logits.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from uld import metrics
from uld.data.format import encode_qa, pad
from uld.logit_diff import ADAPTER, ULDModel
from uld.losses import answer_logits

# attack -> (summary key, per-item key, sign): the AUC of sign * item[key], higher = member
ATTACKS = {
    "loss": ("mia_loss_auc", "loss", -1),
    "min_k": ("mia_min_k_auc", "min_k", 1),
    "zlib": ("mia_zlib_auc", "zlib", -1),
    "min_k++": ("mia_min_k_pp_auc", "min_k_pp", 1),
    "ref": ("mia_ref_auc", "ref", -1),
    "gradnorm": ("mia_gradnorm_auc", "grad_norm", -1),
}
FREE = ("loss", "min_k", "zlib", "min_k++")  # read off the evaluation's own pass


def parse_attacks(spec: str) -> tuple[str, ...]:
    """`--mia` as attack names: "all" (every attack of `ATTACKS`), "none" (the free ones only),
    or a comma-separated list of attacks (the free ones come along)."""
    if spec.strip() == "all":
        return tuple(ATTACKS)
    names = [a.strip() for a in spec.split(",") if a.strip() and a.strip() != "none"]
    unknown = [a for a in names if a not in ATTACKS]
    if unknown:
        raise ValueError(
            f"--mia {spec!r}: unknown attack(s) {unknown}; choose all, none, or from "
            f"{', '.join(ATTACKS)}"
        )
    return FREE + tuple(a for a in names if a not in FREE)


def answer_positions_logits(model, batch: dict, keep: torch.Tensor) -> torch.Tensor:
    """Logits [N, V] at the positions t with keep[:, t] (t predicts token t + 1); a plain
    model or a `ULDModel` (its combined logits)."""
    if isinstance(model, ULDModel):
        pos = torch.zeros_like(batch["labels"], dtype=torch.bool)
        pos[:, :-1] = keep
        return model(batch["input_ids"], batch["attention_mask"], keep=pos).logits
    return answer_logits(model, batch)[0]


@contextmanager
def as_target(model):
    """A ULD or Offset model scores as its own target (alpha 0) inside; others as they are."""
    if not isinstance(model, ULDModel):
        yield model
        return
    saved, model.alpha = model.alpha, 0.0
    try:
        yield model
    finally:
        model.alpha = saved


@torch.no_grad()
def answer_losses(
    model, tokenizer, questions: Sequence[str], answers: Sequence[str], batch_size: int = 16
) -> torch.Tensor:
    """Mean NLL per answer token of each (question, answer) pair under `model`, in order. -> [N]
    float64 (`metrics.loss_score`, as the evaluation's LOSS attack scores it)."""
    device = next(iter(model.parameters())).device
    items = [encode_qa(tokenizer, q, a) for q, a in zip(questions, answers, strict=True)]
    out = []
    for s in range(0, len(items), batch_size):
        batch = {
            k: v.to(device)
            for k, v in pad(items[s : s + batch_size], tokenizer.pad_token_id).items()
        }
        targets = batch["labels"][:, 1:]
        keep = targets != metrics.IGNORE_INDEX
        logits = answer_positions_logits(model, batch, keep).float()
        logp = torch.zeros(keep.shape, device=device)
        logp[keep] = -F.cross_entropy(logits, targets[keep], reduction="none")
        out.append(metrics.loss_score(logp, keep).cpu())
    return torch.cat(out)


def _weights(model) -> list[torch.nn.Parameter]:
    """What the gradient is taken w.r.t.: a ULDModel's LoRA weights, else every parameter."""
    if isinstance(model, ULDModel):
        return [w for m in model.lora for w in (m.lora_A[ADAPTER].weight, m.lora_B[ADAPTER].weight)]
    return list(model.parameters())


def gradient_norms(
    model, tokenizer, questions: Sequence[str], answers: Sequence[str], progress: bool = False
) -> torch.Tensor:
    """L2 norm of the gradient of each pair's mean answer NLL w.r.t. the model's weights
    (`_weights`; `metrics.gradient_norm`), in order. -> [N] float64.

    One forward and one backward per row, unpadded, in eval mode (no dropout): a per-example
    gradient needs its own backward, and a row at a time keeps one gradient in memory (the
    model's size) rather than one per row. The weights' requires_grad flags and .grad are left
    as they were. A ULD model at alpha 0 does not depend on its LoRA weights: norm 0."""
    device = next(iter(model.parameters())).device
    weights = _weights(model)
    flags = [w.requires_grad for w in weights]
    was_training = model.training
    model.eval()
    norms = []
    try:
        for w in weights:
            w.requires_grad_(True)
        for q, a in tqdm(
            list(zip(questions, answers, strict=True)), desc="gradient norms", disable=not progress
        ):
            row = pad([encode_qa(tokenizer, q, a)], tokenizer.pad_token_id)
            batch = {k: v.to(device) for k, v in row.items()}
            targets = batch["labels"][:, 1:]
            keep = targets != metrics.IGNORE_INDEX
            with torch.enable_grad():
                logits = answer_positions_logits(model, batch, keep).float()
                loss = F.cross_entropy(logits, targets[keep])
                if not loss.requires_grad:  # the weights do not reach the loss
                    norms.append(0.0)
                    continue
                grads = torch.autograd.grad(loss, weights, allow_unused=True)
            norms.append(metrics.gradient_norm(grads))
    finally:
        for w, flag in zip(weights, flags, strict=True):
            w.requires_grad_(flag)
        model.train(was_training)
    return torch.tensor(norms, dtype=torch.float64)


def aucs(forget: list[dict], holdout: list[dict], attacks: Sequence[str]) -> dict[str, float]:
    """{summary key: AUC of forget (members) against holdout rows} for each of `attacks` whose
    per-item score every row has (`ATTACKS`: the item key and the sign that makes higher mean
    member); an attack some row lacks is left out."""
    out = {}
    for attack in attacks:
        key, item_key, sign = ATTACKS[attack]
        if all(item_key in it for it in forget + holdout):
            out[key] = metrics.mia_auc(
                [sign * it[item_key] for it in forget], [sign * it[item_key] for it in holdout]
            )
    return out

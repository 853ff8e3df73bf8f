"""Efficiency as the ULD paper measures it: the training time a method needs to reach a good
model, and what one of its optimizer steps costs, read from a run's per-epoch full evaluations.

A run's history (`uld.trainer.EpochEval`, saved as `epochs_evaluated`) is one dict per epoch
evaluated: `epoch`, `step` (optimizer steps so far), `train_seconds` (training wall time to the
end of that epoch, all resumes together, the evaluations left out) and the evaluation's summary
(`forget_quality`, `model_utility`, ...). A good model here has Forget Quality >= 0.5 (the KS
test no longer tells its truth ratios on the forget set from the retain model's) and Model
Utility >= 0.95 x the target's. Time can only be read where a run was evaluated, so a run
evaluated after every epoch is timed to the epoch.
"""

from __future__ import annotations

FQ_LEAST = 0.5  # Forget Quality of a good model
MU_RATIO = 0.95  # its Model Utility, as a share of the target's


def reaching_quality(
    history: list[dict], target_mu: float, fq: float = FQ_LEAST, mu_ratio: float = MU_RATIO
) -> dict | None:
    """The first epoch (by `epoch`) of `history` with forget_quality >= fq and model_utility >=
    mu_ratio * target_mu, both in the same epoch; None if no epoch has both."""
    for h in sorted(history, key=lambda h: h["epoch"]):
        f, mu = h.get("forget_quality"), h.get("model_utility")
        if f is not None and mu is not None and f >= fq and mu >= mu_ratio * target_mu:
            return h
    return None


def time_to_quality(
    history: list[dict], target_mu: float, fq: float = FQ_LEAST, mu_ratio: float = MU_RATIO
) -> float | None:
    """The `train_seconds` of the first epoch that reaches both thresholds (`reaching_quality`),
    None if none does."""
    hit = reaching_quality(history, target_mu, fq, mu_ratio)
    if hit is None:
        return None
    if hit.get("train_seconds") is None:
        raise ValueError(
            f"epoch {hit['epoch']} of the history has no train_seconds; only runs whose "
            "per-epoch evaluations record their training time can be timed"
        )
    return hit["train_seconds"]


def seconds_per_step(history: list[dict]) -> float | None:
    """Training wall time per optimizer step: `train_seconds / step` at the last epoch
    evaluated (the Trainer's set-up included, the evaluations not); None without timing."""
    timed = [h for h in history if h.get("train_seconds") is not None and h.get("step")]
    if not timed:
        return None
    last = max(timed, key=lambda h: h["epoch"])
    return last["train_seconds"] / last["step"]


def timed(history: list[dict]) -> bool:
    """Whether a history can be timed to quality: every epoch in it has `train_seconds`, and
    some epoch has both Forget Quality and Model Utility."""
    return (
        bool(history)
        and all(h.get("train_seconds") is not None for h in history)
        and any(
            h.get("forget_quality") is not None and h.get("model_utility") is not None
            for h in history
        )
    )


def efficiency(
    histories: dict[str, list[dict]],
    target_mu: float,
    baseline: str = "",
    fq: float = FQ_LEAST,
    mu_ratio: float = MU_RATIO,
) -> dict[str, dict]:
    """{run: {seconds_per_step, time_to_quality, epoch_reached, epochs, step_ratio,
    time_ratio}} for the runs whose history can be timed (`timed`). `epochs`: the last epoch
    evaluated; time_to_quality and epoch_reached are None where no epoch reaches quality; the
    ratios are to the run `baseline` (None without one, or where either side has no value)."""
    rows: dict[str, dict] = {}
    for name, history in histories.items():
        if not timed(history):
            continue
        hit = reaching_quality(history, target_mu, fq, mu_ratio)
        rows[name] = {
            "seconds_per_step": seconds_per_step(history),
            "time_to_quality": time_to_quality(history, target_mu, fq, mu_ratio),
            "epoch_reached": None if hit is None else hit["epoch"],
            "epochs": max(h["epoch"] for h in history),
        }
    base = rows.get(baseline, {})
    for row in rows.values():
        for key, ratio in (("seconds_per_step", "step_ratio"), ("time_to_quality", "time_ratio")):
            mine, theirs = row[key], base.get(key)
            row[ratio] = mine / theirs if mine is not None and theirs else None
    return rows


def efficiency_table(
    rows: dict[str, dict],
    target_mu: float,
    baseline: str = "",
    fq: float = FQ_LEAST,
    mu_ratio: float = MU_RATIO,
) -> str:
    """`efficiency`'s rows as a markdown table, its thresholds and baseline stated above it."""
    against = f"; ratios to `{baseline}`" if baseline in rows else ""
    lines = [
        f"Time to quality: training wall time (per-epoch evaluations left out) to the first "
        f"epoch evaluated with F.Q. >= {fq:g} and M.U. >= {mu_ratio:g} x the target's "
        f"({target_mu:.4f}, so >= {mu_ratio * target_mu:.4f}); seconds per optimizer step over "
        f"the run to its last epoch evaluated{against}.",
        "",
    ]
    header = ["Run", "s / step", "Time to quality (s)", "Epoch reached"]
    if against:
        header[2:2] = [f"s / step ÷ {baseline}"]
        header.append(f"Time ÷ {baseline}")
    lines += ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    for name, r in rows.items():
        never = f"never in {r['epochs']} epochs"
        cells = [
            _num(r["seconds_per_step"], ".3g"),
            never if r["time_to_quality"] is None else _num(r["time_to_quality"], ".1f"),
            "–" if r["epoch_reached"] is None else str(r["epoch_reached"]),
        ]
        if against:
            cells[1:1] = [_num(r["step_ratio"], ".2f")]
            cells.append(_num(r["time_ratio"], ".2f"))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _num(v: float | None, spec: str) -> str:
    return "–" if v is None else format(v, spec)

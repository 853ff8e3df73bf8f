"""Unlearning runs. ULD: train the assistant on the reversed objective, save only its adapter.

Everything that can be wrong with the inputs is checked before any model is loaded.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import torch
from transformers import AutoConfig, set_seed

from uld import config as cfgmod
from uld.assistant import (
    check_num_layers,
    decoder_layers,
    default_lora_rank,
    default_num_layers,
    lora_config,
    trainable_count,
)
from uld.config import UTILITY_ROLES, UnlearnConfig
from uld.data.augment import (
    check_disjoint,
    drop_forget_overlap,
    forget_set,
    refusal_set,
    report_duplicates,
    retain_set,
)
from uld.data.format import Collator, PairedDataset, QADataset
from uld.data.load import DataError, load_split, local_paths
from uld.defaults import after_run_check, auto_epochs, choose_alpha_on_rows, format_check
from uld.losses import BASELINES, Frozen, Hyper, has_retain_term, needs_reference
from uld.models import load_model, resolve, save_model, source_fingerprint
from uld.outdir import check_out, locked, output_dir
from uld.trainer import (
    WeightAverage,
    checkpoint_dir,
    claim_checkpoints,
    remove_checkpoints,
    train,
)


def build_assistant(target: str, k: int, rank: int, alpha: float, dropout: float):
    """(peft assistant, tokenizer): the target loaded with its first K layers only, plus LoRA."""
    from peft import get_peft_model
    from transformers.utils import logging

    verbosity = logging.get_verbosity()
    logging.set_verbosity_error()  # the unused layers K.. are reported as "unexpected" otherwise
    try:
        base, tokenizer = load_model(target, num_hidden_layers=k)
    finally:
        logging.set_verbosity(verbosity)
    base.config.use_cache = False
    return get_peft_model(base, lora_config(base, k, rank, alpha, dropout)), tokenizer


def methods() -> list[str]:
    """Every method `unlearn` runs."""
    return [
        "uld",
        *BASELINES,
        *(f"offset-{b}" for b in BASELINES),
        *(f"uoe+{b}" for b in BASELINES),
    ]


def unlearn(cfg: UnlearnConfig) -> Path:
    """Run `cfg.method`; returns the output folder (a ULD/Offset folder or a plain model).

    `cfg.out` is checked before anything is loaded (`uld.outdir.check_out`: never an input,
    never a folder holding files uld did not write, an earlier result only with
    `cfg.overwrite`) and locked while the run lasts."""
    if cfg.method not in methods():
        raise ValueError(f"unknown method {cfg.method!r}; choose one of {', '.join(methods())}")
    general = cfg.general_sources().split(",")
    general = [g for g in general if g.strip() not in ("", "builtin", "knowledge")]
    inputs = [cfg.model, cfg.reference, *local_paths(cfg.data, cfg.forget, cfg.retain, *general)]
    if cfg.calibrate:
        inputs += local_paths(cfg.data, cfg.calibrate)
    check_out(cfg.out, cfg.overwrite, inputs=inputs)
    with locked(cfg.out):
        return train_and_save(cfg, prepare(cfg))


def run_settings(cfg: UnlearnConfig, run: Run) -> dict:
    """What defines a run, recorded beside its checkpoints (`uld.trainer.claim_checkpoints`):
    every setting but where it is written, the target's fingerprint and a hash of every
    training token."""
    after = ("out", "overwrite", "check", "strict")  # where and how the result is written
    settings = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in after}
    return settings | {
        "made_by": "uld unlearn",
        "model": source_fingerprint(run.target),
        "rows": run.dataset.fingerprint(),
    }


class Run(NamedTuple):
    """What a method trains, and with what: everything `train_and_save` needs."""

    target: str  # the target's folder
    model: torch.nn.Module  # the trained model: assistant, offset model or the target itself
    tokenizer: object
    dataset: PairedDataset
    loss: str  # key of uld.losses.LOSSES
    frozen: Frozen | None
    extra: dict  # facts for the saved card
    k: int  # assistant/offset layers; 0 for a baseline on the target itself
    finish: Callable[[], None] | None = None  # undo training-only hooks (UOE)
    # ULD: (forget rows, held-out rows, the reference's forget truth ratios or None)
    calibration: tuple[list[dict], list[dict], list[float] | None] | None = None
    rows: tuple[list[dict], list[dict]] = ([], [])  # (forget, retain) as given: for the checks


def prepare(cfg: UnlearnConfig) -> Run:
    """Load and set up everything `cfg.method` trains (no training yet)."""
    if cfg.method not in methods():
        raise ValueError(f"unknown method {cfg.method!r}; choose one of {', '.join(methods())}")
    loss = cfg.method.removeprefix("offset-").removeprefix("uoe+")
    if cfg.general_sources() and not has_retain_term(loss):
        raise ValueError(
            f"--general adds retain rows, but {cfg.method} has no retain term; use a method with "
            "one (uld, or a baseline with +gd or +kl) or drop --general"
        )
    if cfg.method == "uld":
        return prepare_uld(cfg)
    return prepare_uoe(cfg) if cfg.method.startswith("uoe+") else prepare_baseline(cfg)


def _training_sets(
    cfg: UnlearnConfig, target: str
) -> tuple[list[dict], list[dict], list[dict], list[dict]]:
    """(forget, retain, D_f, D_r) rows: the splits, checked, with the augmentation the method
    and flags ask for (`uld.data.augment`), and `--general` rows added to D_r."""
    forget = load_split(cfg.forget, cfg.data)
    retain = load_split(cfg.retain, cfg.data)
    check_disjoint(forget, retain)
    report_duplicates(forget, f"the forget split {cfg.forget}")
    paraphrase, perturbed = cfg.augment()
    if (paraphrase or perturbed) and not cfg.augment_from_eval:
        forget = augmented(forget, retain, cfg.seed)
    d_f = forget_set(forget, paraphrase, cfg.augment_from_eval)
    d_r = retain_set(retain, forget, perturbed, cfg.augment_from_eval)
    n_perturbed = len(d_r) - len(retain)
    sources = cfg.general_sources()
    try:
        general = general_rows(sources, target) if sources else []
    except DataError as e:
        if cfg.general is not None:  # asked for: an error; the default: a warning
            raise
        print(f"[uld] warning: D'_r is not widened with general prompts: {e}")
        general = []
    check_disjoint(forget, general)
    kept = drop_forget_overlap(general, d_f)
    d_r += kept
    print(
        f"[uld] forget set: {len(forget)} + {len(d_f) - len(forget)} paraphrased = {len(d_f)} "
        f"rows; retain set: {len(retain)} + {n_perturbed} perturbed + {len(kept)} general "
        f"= {len(d_r)} rows"
        + (f" ({len(general) - len(kept)} general rows quoting D_f dropped)" if general else "")
    )
    return forget, retain, d_f, d_r


def augmented(forget: list[dict], retain: list[dict], seed: int = 0) -> list[dict]:
    """`forget` with ULD's augment_* fields written without a model (`uld.data.rewrite`) on the
    rows that have neither, facts swapped from the other forget rows and the retain rows; rows
    that have them keep theirs."""
    from uld.data.rewrite import augment_without_model

    bare = [
        i
        for i, r in enumerate(forget)
        if not (r.get("augment_paraphrased") or r.get("augment_perturbed"))
    ]
    if not bare:
        return forget
    others = [r for i, r in enumerate(forget) if i not in set(bare)]
    made = augment_without_model([forget[i] for i in bare], others + retain, seed=seed)
    rows = list(forget)
    for i, row in zip(bare, made, strict=True):
        rows[i] = row
    n_p = sum(len(r["augment_paraphrased"]) for r in made)
    n_w = sum(len(r["augment_perturbed"]) for r in made)
    print(
        f"[uld] {len(bare)} forget rows have no augment_* fields: wrote {n_p} rewordings and "
        f"{n_w} wrong answers from the rows themselves, without a model (uld.data.rewrite); "
        "`uld data augment` writes them with an instruct model instead"
    )
    return rows


def general_rows(source: str, target: str, batch_size: int = 16) -> list[dict]:
    """Rows that widen D_r, from one source or several joined by commas: `builtin` ->
    `uld.data.general`'s everyday prompts, `knowledge` -> its well-known-fact prompts, each with
    the target's own greedy answers (what the target does off the forget set is what must be
    kept); anything else is a .json/.jsonl file (or split) of question/answer rows, used as is."""
    from uld.data.general import general_prompts, knowledge_prompts

    builtin = {"builtin": general_prompts, "knowledge": knowledge_prompts}
    sources = [s.strip() for s in source.split(",") if s.strip()]
    rows = [
        {"question": r["question"], "answer": r["answer"]}
        for s in sources
        if s not in builtin
        for r in load_split(s)
    ]
    prompts = [p for s in sources if s in builtin for p in builtin[s]()]
    if not prompts:
        return rows
    from uld.evaluate import generate_answers

    model, tokenizer = load_model(target)
    start = time.time()
    answers = generate_answers(model.eval(), tokenizer, prompts, batch_size, 64, progress=False)
    took = time.time() - start
    print(f"[uld] the target answered {len(prompts)} built-in prompts in {took:.0f} s")
    answered = [{"question": q, "answer": a} for q, a in zip(prompts, answers, strict=True) if a]
    if not answered:
        raise DataError(
            f"the target {target} answered none of the {len(prompts)} built-in prompts (every "
            "answer was blank); check that it is an instruction-tuned model, or pass --general "
            "a .json/.jsonl file of question/answer rows"
        )
    return answered + rows


def _assistant_shape(cfg: UnlearnConfig, target: str) -> tuple[int, int, int]:
    """(K layers, LoRA rank, the target's layer count), defaults resolved and checked."""
    target_config = AutoConfig.from_pretrained(target)
    n_layers = target_config.num_hidden_layers
    k = cfg.layers or default_num_layers(n_layers)
    check_num_layers(k, n_layers)
    return k, cfg.lora_rank or default_lora_rank(target_config.hidden_size), n_layers


def _report_trainable(model, what: str, target_total: int | None = None) -> dict:
    trainable, total = trainable_count(model)
    total = target_total or total
    print(
        f"[uld] {what}: {trainable:,} trainable parameters "
        f"({100 * trainable / total:.2f}% of the target's {total:,})"
    )
    return {"trainable_params": trainable, "trainable_share": trainable / total}


def retain_passes(n_f: int, n_r: int, epochs: float) -> float:
    """How many times ULD's training goes through D'_r: each epoch pairs every D'_f row with one
    D'_r row, so n_f * epochs D'_r rows are seen in all.

    Below about one pass the assistant stays close to where it started, the target's first K
    layers, whose logits agree with the target's almost everywhere; subtracting them then costs
    utility on everything, not only the forget set (docs/results.md: forget01, where 10 epochs
    see 0.23 passes and M.U. falls to 0.00-0.10, while forget10's 10 epochs see 2.0)."""
    return n_f * epochs / max(n_r, 1)


def prepare_uld(cfg: UnlearnConfig) -> Run:
    """ULD: an assistant (the target's first K layers with LoRA) on D'_f and D'_r."""
    target = resolve(cfg.model)
    k, rank, n_layers = _assistant_shape(cfg, target)
    forget, retain, d_f, d_r = _training_sets(cfg, target)
    passes = retain_passes(len(d_f), len(d_r), cfg.epochs)
    if cfg.epochs and passes < 1:  # (epochs 0: from the data, at least 2 passes)
        two_passes = math.ceil(2 * len(d_r) / len(d_f))
        print(
            f"[uld] warning: {cfg.epochs:g} epochs over {len(d_f)} D'_f rows see {passes:.2f} "
            f"passes of D'_r ({len(d_r)} rows): the assistant will stay close to the target's "
            "first layers off the forget set, and subtracting it will cost utility there. "
            f"Raise --epochs to {two_passes} or more (about two passes, as forget10's 10 epochs "
            "give) and choose alpha with --calibrate holdout10 (or your own held-out rows): a "
            "longer-trained assistant knows the forget set more strongly"
        )
    calibration = calibration_rows(cfg, forget) if cfg.calibrate else None
    set_seed(cfg.seed)  # the LoRA matrices are initialised at random: same seed, same run
    assistant, tokenizer = build_assistant(
        target, k, rank, cfg.lora_alpha or 2 * rank, cfg.lora_dropout
    )
    extra = {
        "method": "uld",
        "lora_rank": rank,
        "d_f_rows": len(d_f),
        "d_r_rows": len(d_r),
        "d_r_passes": round(passes, 3),
        **_report_trainable(
            assistant,
            f"assistant, {k} of {n_layers} layers, LoRA r={rank}",
            _target_params(assistant, k, n_layers),
        ),
    }
    frozen = None
    if cfg.distill:  # the target is the teacher of L_f
        frozen = Frozen(target=load_model(target)[0])
        extra["distill"] = True
    dataset = PairedDataset(QADataset(d_f, tokenizer), QADataset(d_r, tokenizer), seed=cfg.seed)
    rows = (forget, retain)
    return Run(
        target, assistant, tokenizer, dataset, "uld", frozen, extra, k, None, calibration, rows
    )


def calibration_rows(
    cfg: UnlearnConfig, forget: list[dict]
) -> tuple[list[dict], list[dict], list[float] | None]:
    """(forget rows, held-out rows, with --alpha-by-reference the reference's forget truth
    ratios) to choose ULD's alpha on after training, all checked before it."""
    from uld.calibrate import check_held_out, check_rows
    from uld.evaluate import load_reference

    holdout = load_split(cfg.calibrate, cfg.data)
    check_rows(forget, f"the forget split {cfg.forget}")
    check_rows(holdout, f"--calibrate {cfg.calibrate}")
    seen = forget + load_split(cfg.retain, cfg.data)
    check_held_out(holdout, seen, f"--calibrate {cfg.calibrate}")
    reference = None
    if cfg.alpha_by_reference:
        reference = load_reference(cfg.reference, forget)["truth_ratios"]
    return forget, holdout, reference


def _target_params(assistant, k: int, n_layers: int) -> int:
    """The full target's parameter count, from an assistant holding its first k layers."""
    trainable, total = trainable_count(assistant)
    per_layer = sum(
        p.numel() for n, p in decoder_layers(assistant)[0].named_parameters() if "lora_" not in n
    )
    return total - trainable + (n_layers - k) * per_layer


def prepare_baseline(cfg: UnlearnConfig) -> Run:
    """GA / DPO / NPO (+GD / +KL) on the target itself, full fine-tuning or LoRA; or, for
    `offset-*`, the same loss on the logits of target + offset model (Huang et al. 2024), the
    offset model being the target's first K layers with LoRA (as ULD's assistant)."""
    target = resolve(cfg.model)
    offset = cfg.method.startswith("offset-")
    loss = cfg.method.removeprefix("offset-")
    forget, retain, d_f, d_r = _training_sets(cfg, target)
    set_seed(cfg.seed)
    extra: dict = {"method": cfg.method, "d_f_rows": len(d_f), "d_r_rows": len(d_r)}
    if offset:
        k, rank, n_layers = _assistant_shape(cfg, target)
        model, tokenizer = build_assistant(
            target, k, rank, cfg.lora_alpha or rank, cfg.lora_dropout
        )
        frozen = Frozen(target=load_model(target)[0])
        extra |= {"lora_rank": rank} | _report_trainable(
            model,
            f"offset model, {k} of {n_layers} layers, LoRA r={rank}",
            _target_params(model, k, n_layers),
        )
    else:
        k = 0
        model, tokenizer = load_model(target)
        if cfg.lora:  # the reference is the model with its adapters off: no second copy
            from peft import get_peft_model

            rank = cfg.lora_rank or default_lora_rank(model.config.hidden_size)
            config = lora_config(
                model, None, rank, cfg.lora_alpha or rank, cfg.lora_dropout, experts=True
            )
            model = get_peft_model(model, config)
            frozen = Frozen()
            extra["lora_rank"] = rank
        else:  # as the target was fine-tuned: the (tied) embeddings stay frozen
            model.get_input_embeddings().weight.requires_grad_(False)
            model.get_output_embeddings().weight.requires_grad_(False)
            frozen = Frozen(ref=load_model(target)[0] if needs_reference(loss) else None)
        extra |= _report_trainable(model, f"{cfg.method}, {'LoRA' if cfg.lora else 'full'}")
    model.config.use_cache = False
    dataset = _loss_dataset(d_f, d_r, tokenizer, loss, cfg.seed)
    return Run(target, model, tokenizer, dataset, loss, frozen, extra, k, rows=(forget, retain))


def prepare_uoe(cfg: UnlearnConfig) -> Run:
    """UOE on an MoE target: attribute the forget set to experts (UOE Eq. 2), make only the top
    expert(s) and their router trainable, and train with a baseline's loss plus the anchor."""
    from uld.moe import expert_attribution, moe_layers, select_experts, top_experts

    target = resolve(cfg.model)
    loss = cfg.method.removeprefix("uoe+")
    forget, retain, d_f, d_r = _training_sets(cfg, target)
    model, tokenizer = load_model(target)
    moe_layers(model)  # a dense or unknown model stops here, with the reason
    attribution = expert_attribution(model, tokenizer, forget)
    experts = top_experts(
        attribution, cfg.uoe_experts, None if cfg.uoe_layer < 0 else cfg.uoe_layer
    )
    selection = select_experts(model, experts)
    layer, expert = experts[0]
    print(
        f"[uld] UOE: unlearning expert(s) {experts} (layer, expert) with the router anchor on "
        f"({layer}, {expert}); {selection.trainable:,} trainable parameters "
        f"({100 * selection.share:.3f}% of {selection.total:,})"
    )
    frozen = Frozen(ref=load_model(target)[0] if needs_reference(loss) else None)
    model.config.use_cache = False
    extra = {
        "method": cfg.method,
        "d_f_rows": len(d_f),
        "d_r_rows": len(d_r),
        "experts": [list(e) for e in experts],
        "anchor_layer": layer,
        "anchor_expert": expert,
        "attribution": [[round(v, 5) for v in row] for row in attribution.tolist()],
        "trainable_params": selection.trainable,
        "trainable_share": selection.share,
    }
    dataset = _loss_dataset(d_f, d_r, tokenizer, loss, cfg.seed)
    return Run(
        target,
        model,
        tokenizer,
        dataset,
        cfg.method,
        frozen,
        extra,
        0,
        selection.remove,
        rows=(forget, retain),
    )


def _loss_dataset(d_f, d_r, tokenizer, loss: str, seed: int) -> PairedDataset:
    """Forget items, paired with retain items if the loss has a retain term (+gd, +kl) and with
    refusals of the same questions for DPO."""
    return PairedDataset(
        QADataset(d_f, tokenizer),
        QADataset(d_r, tokenizer) if has_retain_term(loss) else None,
        seed=seed,
        idk=QADataset(refusal_set(d_f), tokenizer) if loss.startswith("dpo") else None,
    )


# With `--eval-splits all` the kept epoch was evaluated in full during training; its results
# are saved beside the model under this name, so `uld compare` need not evaluate it again.
KEPT_EVAL = "epoch_eval.json"


def train_and_save(cfg: UnlearnConfig, run: Run) -> Path:
    """The one training loop, the per-epoch evaluation if asked, and the atomic save."""
    target, model, tokenizer, dataset, loss, frozen, extra, k, finish, calibration, _ = run
    settings = run_settings(cfg, run)
    if not cfg.epochs:
        n_retain = len(dataset.retain) if dataset.retain is not None else 0
        epochs = auto_epochs(len(dataset.forget), n_retain, cfg.batch_size)
        print(
            f"[uld] epochs from the data: {epochs} ({len(dataset.forget)} rows in batches of "
            f"{cfg.batch_size}: {epochs * math.ceil(len(dataset.forget) / cfg.batch_size)} steps"
            + (
                f", {epochs * len(dataset.forget) / n_retain:.1f} passes over {n_retain} retain "
                "rows)"
                if n_retain
                else ")"
            )
        )
        cfg = dataclasses.replace(cfg, epochs=float(epochs))
        extra["epochs_from_data"] = epochs
        if "d_r_passes" in extra:
            extra["d_r_passes"] = round(retain_passes(len(dataset.forget), n_retain, epochs), 3)
    claim_checkpoints(cfg.out, settings, cfg.overwrite)  # before the evaluator writes there
    best = checkpoint_dir(cfg.out) / "best"
    average = WeightAverage(model, cfg.ema) if cfg.ema else None
    callbacks: list = [average] if average else []
    if cfg.eval_metric:
        callbacks.append(epoch_evaluator(cfg, target, tokenizer, best, frozen, average))
    watch = train(
        model,
        dataset,
        Collator(tokenizer.pad_token_id),
        cfg.out,
        loss,
        hp=Hyper(
            beta=cfg.beta,
            npo_beta=cfg.npo_beta,
            dpo_beta=cfg.dpo_beta,
            retain_weight=cfg.retain_weight,
            anchor=cfg.anchor,
            anchor_layer=extra.get("anchor_layer", -1),
            anchor_expert=extra.get("anchor_expert", -1),
        ),
        frozen=frozen,
        epochs=cfg.epochs,
        lr=cfg.default_lr(),
        batch_size=cfg.batch_size,
        seed=cfg.seed,
        max_steps=cfg.max_steps,
        weight_decay=0.0 if k else 0.01,
        callbacks=callbacks,
        settings=settings,
        overwrite=cfg.overwrite,
    ).stopwatch
    if average is not None:
        average.finish(model)  # the averaged weights are the model (or load_best's below)
        extra["ema"] = cfg.ema
    if finish is not None:
        finish()
    extra["train_seconds"] = round(watch.seconds(), 1)  # all resumes together
    extra["lr"] = cfg.default_lr()
    if cfg.eval_metric:
        ev = callbacks.pop()  # the last reference but `ev` to the evaluation's full target
        extra["eval_seconds"] = round(sum(h.pop("seconds", 0) for h in ev.history), 1)
        extra["train_seconds"] = round(extra["train_seconds"] - extra["eval_seconds"], 1)
        extra["epochs_evaluated"] = ev.history
        extra["best_epoch"] = ev.best_epoch
        load_best(model, best)
        print(f"[uld] keeping epoch {ev.best_epoch} (best {cfg.eval_metric})")
        if ev.floor:
            extra["min_utility"] = {"fraction": cfg.min_utility, "least": ev.floor[1]}
            kept = ev.kept()
            if not ev.meets_floor(kept):
                print(
                    f"[uld] warning: no epoch kept M.U. >= {ev.floor[1]:.4g} ({cfg.min_utility} "
                    f"of the target's); epoch {ev.best_epoch} has the highest, "
                    f"{kept['model_utility']:.4g}"
                )
        del ev  # frees that target before `calibrated` loads its own
    new_alpha = bool(calibration) or (cfg.method == "uld" and cfg.alpha is None)
    view = None  # ULD/Offset as users run them: one ULDModel on a full target, made once
    if k and (new_alpha or cfg.check):
        view = eval_view(cfg, load_model(target)[0], model).eval()
    if calibration:
        cfg = calibrated(cfg, run, extra, view)
    elif new_alpha:
        cfg = safe_alpha(cfg, run, extra, view)
    kept_eval = best / KEPT_EVAL
    files = {}
    if cfg.eval_metric and not new_alpha and kept_eval.exists():  # (a new alpha voids it)
        files[KEPT_EVAL] = kept_eval.read_text()
    if not k and hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    if view is not None and cfg.method == "uld":
        view.alpha = cfg.alpha  # the chosen one (Offset's stays 1)
    check = after_check(run, view or model) if cfg.check else None
    if check is not None:
        files["after_run_check.json"] = json.dumps(check, indent=1, ensure_ascii=False) + "\n"
    if k:  # ULD or Offset: adapter + uld_config.json
        save_assistant(model, target, cfg, k, extra, files)
    else:
        model.config.use_cache = True
        card = {"made_by": f"uld unlearn --method {cfg.method}", "target": str(cfg.model), **extra}
        save_model(model, tokenizer, cfg.out, card, cfg, cfg.overwrite, files)
    remove_checkpoints(cfg.out)
    if check is not None and check["problems"] and cfg.strict:
        raise CheckFailed(
            f"the after-run check failed ({'; '.join(check['problems'])}); the model is saved in "
            f"{cfg.out} (after_run_check.json holds the sample)"
        )
    return Path(cfg.out)


class CheckFailed(ValueError):
    """`--strict` and the after-run check found a problem; the model was saved all the same."""


def safe_alpha(cfg: UnlearnConfig, run: Run, extra: dict, view) -> UnlearnConfig:
    """`cfg` with ULD's alpha chosen by `uld.calibrate.choose_alpha_safely` on the run's own
    rows (retain questions and general prompts the target must answer as before, the forget
    rows' answers fluent), for `view`, the ULD model of the run; the grid goes into the saved
    card."""
    from uld.calibrate import format_safe_grid

    start = time.time()
    res = choose_alpha_on_rows(view, run.tokenizer, *run.rows)
    seconds = round(time.time() - start, 1)
    print(f"[uld] alpha chosen on the run's own rows ({seconds} s):\n{format_safe_grid(res)}")
    if not res["safe"]:
        print(
            "[uld] warning: no alpha kept the retain and general answers and every forget answer "
            "fluent; alpha 0 is saved (the target: nothing is forgotten). Train longer "
            "(--epochs), or set --alpha yourself and read the after-run check"
        )
    extra["alpha_choice"] = res | {"seconds": seconds}
    return dataclasses.replace(cfg, alpha=res["alpha"])


def after_check(run: Run, model) -> dict:
    """`uld.defaults.after_run_check` on `model`, the trained model as users run it, printed. A
    ULD or Offset model (a ULDModel) is its own target at alpha 0: no second copy."""
    from uld.evaluate import generate_answers
    from uld.logit_diff import ULDModel

    forget, retain = run.rows
    tok = run.tokenizer
    composite = isinstance(model, ULDModel)
    target = model if composite else load_model(run.target)[0].eval()
    alpha = model.alpha if composite else None

    def answers(net, at: float | None):
        def answer(questions: list[str]) -> list[str]:
            if at is not None:
                net.alpha = at
            try:
                return generate_answers(net, tok, questions, 8, 48, progress=False)
            finally:
                if at is not None:
                    net.alpha = alpha

        return answer

    with torch.no_grad():
        check = after_run_check(
            answers(target, 0.0 if composite else None),
            answers(model.eval(), alpha),
            forget,
            retain,
            scorer=(target, tok),
        )
    print(format_check(check))
    return check


def load_best(model, best: Path) -> None:
    """Put the best epoch's weights (saved by `epoch_evaluator`) back into `model`."""
    from safetensors.torch import load_file

    if (best / "adapter_model.safetensors").exists():
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(model, load_file(str(best / "adapter_model.safetensors")))
    else:
        state = load_file(str(best / "model.safetensors"))
        missing = set(dict(model.named_parameters())) - set(state)
        model.load_state_dict(state, strict=False)
        if missing - {n for n, p in model.named_parameters() if not p.requires_grad}:
            raise RuntimeError(f"best-epoch weights lack {sorted(missing)[:3]}")


def eval_view(cfg: UnlearnConfig, target_full, model):
    """The model as users will run it: ULD/Offset -> a ULDModel on the full target; a baseline
    -> the model itself."""
    from uld.logit_diff import ULDModel

    if cfg.method == "uld":  # before alpha is chosen (alpha None), evaluated at 1
        return ULDModel(target_full, model, 1.0 if cfg.alpha is None else cfg.alpha, cfg.filter)
    if cfg.method.startswith("offset-"):
        return ULDModel(target_full, model, 1.0, mode="offset")
    return model


def calibrated(cfg: UnlearnConfig, run: Run, extra: dict, view) -> UnlearnConfig:
    """`cfg` with the alpha `uld.calibrate.choose_alpha` picks for `view`, the run's ULD
    model; the grid goes into the saved card."""
    from uld.calibrate import choose_alpha, format_grid

    start = time.time()
    forget, holdout, reference = run.calibration
    res = choose_alpha(
        view,
        run.tokenizer,
        forget,
        holdout,
        filter=cfg.filter,
        reference=reference,
        near=cfg.alpha_by_reference,
    )
    seconds = round(time.time() - start, 1)
    how = f" and by F.Q. among {cfg.alpha_by_reference} near it" if reference is not None else ""
    print(f"[uld] alpha chosen on {cfg.calibrate}{how} ({seconds} s):\n{format_grid(res)}")
    extra["calibration"] = {"split": cfg.calibrate, "alpha_before": cfg.alpha} | res
    if reference is not None:
        extra["calibration"]["reference"] = cfg.reference
    extra["calibration"]["seconds"] = seconds
    return dataclasses.replace(cfg, alpha=res["alpha"])


def epoch_evaluator(
    cfg: UnlearnConfig, target: str, tokenizer, best: Path, frozen=None, average=None
):
    """EpochEval running the evaluation protocol (`uld.evaluate`) on the model as users will
    run it (with `average`, its averaged weights), every epoch; keeps the best epoch's trainable
    weights in `best`."""
    from uld.config import EvalSplits
    from uld.evaluate import evaluate, load_reference, load_roles
    from uld.logit_diff import ULDModel
    from uld.trainer import EpochEval

    splits = EvalSplits.for_data(cfg.data, forget=cfg.forget)
    if cfg.eval_splits in ("forget", "truth"):
        splits = EvalSplits(
            forget=cfg.forget, retain="", real_authors="", world_facts="", holdout=""
        )
    roles = load_roles(splits, cfg.data)
    reference = load_reference(cfg.reference, roles["forget"]) if cfg.reference else None
    composite = cfg.composite
    full = None
    if composite:
        full = frozen.target if frozen is not None and frozen.target is not None else None
        full = full or load_model(target)[0]
    view: ULDModel | None = None
    last: dict = {}  # the latest evaluation in full

    def run(model) -> dict:
        nonlocal view
        if composite:
            if view is None:  # injects the adapter into the full target, copies its weights
                view = eval_view(cfg, full, model).eval()
            else:
                view.load_lora(model)
        start = time.time()
        # fluency judged by the target: a ULD view's own, or a baseline's frozen reference copy
        ref = frozen.ref if frozen is not None else None
        judge = view if composite else ref
        res = evaluate(
            view if composite else model,
            tokenizer,
            roles,
            reference,
            progress=False,
            generate=cfg.eval_splits != "truth",
            scorer=None if judge is None else (judge, tokenizer),
        )
        last.clear()
        last.update(res)
        s = {k: v for k, v in res["summary"].items() if v is not None}
        return s | {"seconds": round(time.time() - start, 1)}

    def save_best(model, epoch: int, scores: dict) -> None:
        if hasattr(model, "peft_config"):
            model.save_pretrained(best)
        else:
            from safetensors.torch import save_file

            best.mkdir(parents=True, exist_ok=True)
            state = {
                n: p.detach().contiguous() for n, p in model.named_parameters() if p.requires_grad
            }
            save_file(state, str(best / "model.safetensors"))
        if cfg.eval_splits == "all":  # the kept epoch's whole evaluation, for `uld compare`
            from uld.report import write_json

            write_json(last, best / KEPT_EVAL)

    floor = None
    if cfg.min_utility:
        mu = target_utility(target, tokenizer, roles, best.parent, full)
        floor = ("model_utility", cfg.min_utility * mu)
        print(f"[uld] epochs kept only with M.U. >= {floor[1]:.4g} ({cfg.min_utility} x {mu:.4g})")
    mode = "min" if cfg.eval_metric == "forget_rouge" else "max"
    state = best.parent / "epochs.json"
    return EpochEval(
        run,
        cfg.eval_metric,
        save_best,
        mode,
        state,
        average=average,
        every=cfg.eval_every,
        floor=floor,
    )


def target_utility(target: str, tokenizer, roles: dict, folder: Path, model=None) -> float:
    """The target's Model Utility on the utility roles of `roles`, evaluated once and kept in
    `folder/target_utility.json` (so a resumed run does not evaluate it again) and, for a local
    target folder, in the uld cache (`models.model_cache`), so the other runs of a `uld compare`
    plan on the same target and rows do not evaluate it again either. `model`: the target if
    already loaded."""
    from uld.evaluate import evaluate
    from uld.models import model_cache
    from uld.report import write_json

    path = folder / "target_utility.json"
    if path.exists():
        return json.loads(path.read_text())["model_utility"]
    utility = {r: rows for r, rows in roles.items() if r in UTILITY_ROLES}
    shared = model_cache("utility", target, utility) if Path(target).is_dir() else None
    if shared is not None and shared.exists():
        mu = json.loads(shared.read_text())["model_utility"]
        print(f"[uld] the target's Model Utility from the cache {shared}: {mu:.4g}")
    else:
        model = model if model is not None else load_model(target)[0].eval()
        with torch.no_grad():
            mu = evaluate(model, tokenizer, utility, progress=False)["summary"]["model_utility"]
        if shared is not None:
            write_json({"target": str(target), "model_utility": mu}, shared)
    write_json({"target": str(target), "model_utility": mu}, path)
    return mu


def save_assistant(
    assistant, target_path: str, cfg: UnlearnConfig, k: int, extra: dict, files: dict | None = None
) -> None:
    """Adapter weights + adapter config + uld_config.json + the run's config (+ `files`, name ->
    text), written whole through `uld.outdir.output_dir`."""
    from uld.logit_diff import write_uld_config

    offset = cfg.method.startswith("offset-")
    with output_dir(cfg.out, f"uld unlearn --method {cfg.method}", cfg.overwrite) as tmp:
        for name, text in (files or {}).items():
            (tmp / name).write_text(text)
        assistant.save_pretrained(tmp)
        write_uld_config(
            tmp,
            assistant,
            target_path,
            k,
            1.0 if offset else cfg.alpha,  # Offset adds the offset's change at weight 1
            cfg.filter,
            {
                "mode": "offset" if offset else "uld",
                "made_by": f"uld unlearn --method {cfg.method}",
                **extra,
            },
        )
        cfgmod.save(cfg, tmp / "run_config.yaml")

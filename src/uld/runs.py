"""What the `uld` commands do, as functions: the one orchestration layer.

- `load_any`: any model folder (plain, ULD, Offset; a hub id; None for the embedded default);
- `unlearn`: run a method of `uld.methods.METHODS` (train, keep the best epoch if asked, choose
  ULD's alpha, check the result, save the folder whole);
- `evaluate_model` / `evaluate_to`: the evaluation protocol on a model, and its folder written.

`uld.compare` (the comparison of several runs) and `uld.demo` (the main job) are built on these.
Data flows one way: `cli` -> `runs` -> `methods` / `trainer` / `evaluate` / `calibrate` /
`defaults` -> `losses` / `metrics` / `logit_diff` / `models` / `data`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path

import torch

from uld import config as cfgmod
from uld import dist
from uld.calibrate import choose_alpha, format_grid, format_safe_grid
from uld.config import UTILITY_ROLES, EvalSplits, UnlearnConfig
from uld.data.format import Collator
from uld.data.load import local_paths
from uld.defaults import after_run_check, auto_epochs, choose_alpha_on_rows, format_check
from uld.evaluate import (
    base_model,
    evaluate,
    fluency_scorer,
    generate_answers,
    load_reference,
    load_roles,
    merge_shards,
    shard_roles,
    summarise,
)
from uld.logit_diff import ULDModel, load_any, write_uld_config
from uld.losses import Hyper
from uld.methods import (
    Method,
    Run,
    check,
    forget_weight,
    general_sources,
    learning_rate,
    prepare,
    retain_passes,
    text_config,
)
from uld.mia import parse_attacks
from uld.models import load_model, model_cache, save_model, source_fingerprint
from uld.outdir import check_out, locked, output_dir, write_json
from uld.report import model_info, write_eval
from uld.trainer import (
    ZERO3_EMA,
    ZERO3_EPOCHS,
    ZERO3_LORA,
    EpochEval,
    WeightAverage,
    check_precision,
    checkpoint_dir,
    claim_checkpoints,
    load_trainable,
    remove_checkpoints,
    train,
    whole_weights,
)

__all__ = ["load_any", "unlearn", "evaluate_model", "evaluate_to"]


def evaluate_model(
    model_path: str | Path | None,
    roles: dict[str, list[dict]],
    name: str | None = None,
    reference: dict | None = None,
    scorer: tuple | None = None,
    fluency: str = "",
    alpha: float | None = None,
    filter: float | None = None,
    target: str | None = None,
    combine: str | None = None,
    info: dict | None = None,
    loaded: tuple | None = None,
    mia: str = "all",
    mia_reference: str = "",
    **kwargs,
) -> dict:
    """The evaluation protocol (`uld.evaluate.evaluate`) on the model at `model_path` (any
    folder `load_any` reads), with its card: name, model, kind (plain or uld), how it was
    trained, and `info`. Fluency is judged by `scorer` = (model, tokenizer) if given, else as
    `uld.evaluate.fluency_scorer` reads `fluency` ("": the base the model was made from; "none":
    repetition only; a model folder). `loaded`: the (model, tokenizer) if already loaded.
    `mia`: the membership attacks (`uld.mia.parse_attacks`: "all", "none" or a list); the
    reference-model attack compares with `mia_reference` (a model folder or hub id; "": the base
    the model was made from, `uld.evaluate.base_model`), and is left out, with a message, where
    there is none unless `mia` names it. `kwargs` go to `evaluate`.

    On several processes (`uld.dist`) each evaluates a share of every split's rows and every
    process returns the whole evaluation (`uld.evaluate.merge_shards`)."""
    attacks = parse_attacks(mia)
    dist.check_rows({r: len(v) for r, v in roles.items()})
    if loaded is None:
        path = None if model_path is None else str(model_path)
        loaded = load_any(path, alpha, filter, target, combine)
    model, tok = loaded
    name = name or (Path(model_path).name if model_path else "default")
    res = {
        "name": name,
        "model": str(model_path or "default"),
        "kind": "uld" if isinstance(model, ULDModel) else "plain",
        "training": model_info(model_path) if model_path else {},
        **(info or {}),
    }
    print(f"[uld] evaluating {name}: " + ", ".join(f"{r} {len(v)}" for r, v in roles.items()))
    path = model_path and str(model_path)
    base = None  # the base model, loaded once for the fluency judge and the reference attack
    if (scorer is None and not fluency) or ("ref" in attacks and not mia_reference):
        base = base_model(model, tok, path)
    if scorer is None:
        scorer = fluency_scorer(model, tok, path, fluency, base)
    ref = None
    if "ref" in attacks:
        if mia_reference:
            net, ref_tok = load_model(mia_reference)
            ref = net.eval(), ref_tok
        else:
            ref = base
        if ref is None and "ref" in [a.strip() for a in mia.split(",")]:
            raise ValueError(
                f"the reference-model attack (--mia ref) needs a reference: {path or 'default'} "
                "names no base or target model; give --mia-reference MODEL"
            )
        if ref is None:
            print(
                f"[uld] the reference-model attack is left out: {path or 'default'} names no "
                "base or target model to compare with (--mia-reference MODEL gives one)"
            )
            attacks = tuple(a for a in attacks if a != "ref")
    return res | evaluate_shared(
        model, tok, roles, reference, scorer=scorer, mia=attacks, mia_reference=ref, **kwargs
    )


def evaluate_shared(model, tok, roles: dict, reference: dict | None = None, **kwargs) -> dict:
    """`uld.evaluate.evaluate`; on several processes (`uld.dist`) each evaluates a share of
    every split's rows and every process returns the whole evaluation, merged
    (`uld.evaluate.merge_shards`) and summarised as one process would."""
    if dist.world_size() == 1:
        return evaluate(model, tok, roles, reference, **kwargs)
    part = evaluate(model, tok, shard_roles(roles, dist.share), **kwargs)
    parts = dist.gather(part)
    splits = merge_shards([p["splits"] for p in parts])
    return {
        "splits": splits,
        "summary": summarise(splits, reference),
        "reference": reference["source"] if reference else None,
        "eval_seconds": max(p["eval_seconds"] for p in parts),
        "processes": dist.world_size(),
    }


def evaluate_to(folder: str | Path, results: dict, command: str, overwrite: bool = False):
    """Write an evaluation (`evaluate_model`'s results) as the folder `folder` (eval.json and
    eval.md), whole, locked, through `uld.outdir`."""
    with locked(folder), output_dir(folder, command, overwrite) as tmp:
        write_eval(results, tmp)


def unlearn(cfg: UnlearnConfig) -> Path:
    """Run `cfg.method`; returns the output folder (a ULD/Offset folder or a plain model).

    `cfg.out` is checked before anything is loaded (`uld.outdir.check_out`: never an input,
    never a folder holding files uld did not write, an earlier result only with
    `cfg.overwrite`) and locked while the run lasts. On raw text, `cfg` is first resolved by
    `uld.methods.text_config`."""
    cfg = text_config(cfg)
    spec = check(cfg)
    check_precision(cfgmod.precision(cfg))  # before anything is loaded or written
    dist.refuse_zero3(needs_whole_weights(cfg, spec))
    if cfg.combine != "mass" and spec.composite != "uld":
        raise ValueError(
            f"--combine {cfg.combine} is how ULD combines its logits; --method {cfg.method} has "
            "no such combination (leave --combine at mass)"
        )
    general = general_sources(cfg).split(",")
    general = [g for g in general if g.strip() not in ("", "builtin", "knowledge")]
    inputs = [cfg.model, cfg.reference, *local_paths(cfg.data, cfg.forget, cfg.retain, *general)]
    if cfg.calibrate:
        inputs += local_paths(cfg.data, cfg.calibrate)
    check_out(cfg.out, cfg.overwrite, inputs=inputs)
    with locked(cfg.out):
        return train_and_save(cfg, prepare(cfg))


def needs_whole_weights(cfg: UnlearnConfig, spec: Method) -> dict[str, str]:
    """What in `cfg` needs the trained weights whole in one process during or after training,
    with why and what to do instead: refused under DeepSpeed ZeRO-3 (`uld.dist.refuse_zero3`),
    whose processes each hold a shard of every weight (saving gathers them: `whole_weights`)."""
    needs = {}
    if spec.composite:
        needs[f"--method {cfg.method}"] = (
            "its alpha is chosen, and its model checked, on the main process; its assistant, a "
            "few layers with LoRA, trains whole on each GPU: launch without DeepSpeed "
            "(accelerate launch --multi_gpu)"
        )
    if cfg.lora:
        needs["--lora"] = ZERO3_LORA
    if cfg.eval_metric:
        needs["--eval-metric"] = ZERO3_EPOCHS
    if cfg.ema:
        needs["--ema"] = ZERO3_EMA
    if cfg.check:
        needs["the after-run check"] = (
            "the main process generates with the model alone: pass --no-check and evaluate the "
            "saved model with `uld eval`"
        )
    return needs


def run_settings(cfg: UnlearnConfig, run: Run) -> dict:
    """What defines a run, recorded beside its checkpoints (`uld.trainer.claim_checkpoints`):
    every setting but where it is written, the target's fingerprint and a hash of every
    training token."""
    after = ("out", "overwrite", "check", "strict")  # where and how the result is written
    # (how it is computed: the same run; a precision only when asked for)
    after += ("gradient_checkpointing",) + tuple(k for k in ("bf16", "fp16") if not getattr(cfg, k))
    settings = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in after}
    return settings | {
        "made_by": "uld unlearn",
        "model": source_fingerprint(run.target),
        "rows": run.dataset.fingerprint(),
    }


# With `--eval-splits all` the kept epoch was evaluated in full during training; its results
# are saved beside the model under this name, so `uld compare` need not evaluate it again.
KEPT_EVAL = "epoch_eval.json"


def train_and_save(cfg: UnlearnConfig, run: Run) -> Path:
    """The one training loop, the per-epoch evaluation if asked, and the atomic save."""
    target, model, tokenizer, dataset, spec, frozen, extra, k, finish, calibration, _ = run
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
        callbacks.append(epoch_evaluator(cfg, spec, target, tokenizer, best, frozen, average))
    trainer = train(
        model,
        dataset,
        Collator(tokenizer.pad_token_id),
        cfg.out,
        spec.objective,
        hp=Hyper(
            beta=cfg.beta,
            npo_beta=cfg.npo_beta,
            dpo_beta=cfg.dpo_beta,
            retain_weight=cfg.retain_weight,
            anchor=cfg.anchor,
            anchor_layer=extra.get("anchor_layer", -1),
            anchor_expert=extra.get("anchor_expert", -1),
            forget_weight=forget_weight(cfg),
            simnpo_beta=cfg.simnpo_beta,
            simnpo_delta=cfg.simnpo_delta,
            wga_beta=cfg.wga_beta,
            satimp_beta1=cfg.satimp_beta1,
            satimp_beta2=cfg.satimp_beta2,
            undial_beta=cfg.undial_beta,
            ceu_ignore_first=cfg.ceu_ignore_first,
            rmu_layer=extra.get("rmu_layer", -1),
            rmu_steer=cfg.rmu_steer,
            rmu_seed=cfg.seed,
        ),
        frozen=frozen,
        epochs=cfg.epochs,
        lr=learning_rate(cfg),
        batch_size=cfg.batch_size,
        seed=cfg.seed,
        max_steps=cfg.max_steps,
        weight_decay=0.0 if k else 0.01,
        callbacks=callbacks,
        settings=settings,
        overwrite=cfg.overwrite,
        precision=cfgmod.precision(cfg),
        gradient_checkpointing=cfg.gradient_checkpointing,
    )
    watch = trainer.stopwatch
    weights = whole_weights(trainer)  # under ZeRO-3, gathered from every process's shards
    if not dist.is_main():  # the main process chooses alpha, checks and saves
        return Path(cfg.out)
    if average is not None:
        average.finish(model)  # the averaged weights are the model (or the best epoch's below)
        extra["ema"] = cfg.ema
    if finish is not None:
        finish()
    # all resumes together, less the per-epoch evaluations (the watch sets them aside)
    extra["train_seconds"] = round(watch.training_seconds(), 1)
    extra["steps"] = trainer.state.global_step  # optimizer steps: the per-step cost's divisor
    extra["lr"] = learning_rate(cfg)
    if cfg.eval_metric:
        ev = callbacks.pop()  # the last reference but `ev` to the evaluation's full target
        extra["eval_seconds"] = round(watch.set_aside, 1)
        extra["epochs_evaluated"] = ev.history
        extra["best_epoch"] = ev.best_epoch
        load_trainable(model, best)
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
    new_alpha = bool(calibration) or (spec.has_alpha and cfg.alpha is None)
    view = None  # ULD/Offset as users run them: one ULDModel on a full target, made once
    if k and (new_alpha or cfg.check):
        view = eval_view(cfg, spec, load_model(target)[0], model).eval()
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
    if view is not None and spec.has_alpha:
        view.alpha = cfg.alpha  # the chosen one (Offset's stays 1)
    check = after_check(run, view or model) if cfg.check else None
    if check is not None:
        files["after_run_check.json"] = json.dumps(check, indent=1, ensure_ascii=False) + "\n"
    if k:  # ULD or Offset: adapter + uld_config.json
        save_assistant(model, target, cfg, spec, k, extra, files)
    else:
        model.config.use_cache = True
        card = {"made_by": f"uld unlearn --method {cfg.method}", "target": str(cfg.model), **extra}
        save_model(model, tokenizer, cfg.out, card, cfg, cfg.overwrite, files, weights)
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


def eval_view(cfg: UnlearnConfig, spec: Method, target_full, model):
    """The model as users will run it: ULD/Offset -> a ULDModel on the full target; a baseline
    -> the model itself."""
    if spec.composite == "uld":  # before alpha is chosen (alpha None), evaluated at 1
        alpha = 1.0 if cfg.alpha is None else cfg.alpha
        return ULDModel(target_full, model, alpha, cfg.filter, combine=cfg.combine)
    if spec.composite == "offset":
        return ULDModel(target_full, model, 1.0, mode="offset")
    return model


def calibrated(cfg: UnlearnConfig, run: Run, extra: dict, view) -> UnlearnConfig:
    """`cfg` with the alpha `uld.calibrate.choose_alpha` picks for `view`, the run's ULD
    model; the grid goes into the saved card."""
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


class EpochEvaluation:
    """The evaluation protocol (`uld.evaluate`) on the model as users will run it: a ULD or
    Offset assistant inside a ULDModel on the full target (made on the first call, its adapter
    reloaded on the next), a baseline as it is; fluency judged by the target. Called by
    `uld.trainer.EpochEval` after each epoch; `last` holds the latest evaluation in full."""

    def __init__(
        self, cfg: UnlearnConfig, spec: Method, tokenizer, roles, reference, full, judge=None
    ):
        self.cfg, self.spec, self.tokenizer, self.roles = cfg, spec, tokenizer, roles
        self.reference, self.full = reference, full
        self.view: ULDModel | None = None
        self.judge = judge  # a baseline's frozen reference copy, if it has one
        self.last: dict = {}

    def __call__(self, model) -> dict:
        if self.spec.composite:
            if self.view is None:  # injects the adapter into the full target, copies its weights
                self.view = eval_view(self.cfg, self.spec, self.full, model).eval()
            else:
                self.view.load_lora(model)
        judge = self.view if self.spec.composite else self.judge
        res = evaluate_shared(
            self.view if self.spec.composite else model,
            self.tokenizer,
            self.roles,
            self.reference,
            progress=False,
            generate=self.cfg.eval_splits != "truth",
            scorer=None if judge is None else (judge, self.tokenizer),
        )
        self.last = res
        return {k: v for k, v in res["summary"].items() if v is not None}


def epoch_evaluator(
    cfg: UnlearnConfig, spec: Method, target: str, tokenizer, best: Path, frozen=None, average=None
) -> EpochEval:
    """`uld.trainer.EpochEval` running `EpochEvaluation` every epoch (with `average`, on the
    averaged weights), keeping the best epoch's trainable weights in `best` (and, with
    `--eval-splits all`, its whole evaluation, for `uld compare`), under the utility floor if
    `cfg.min_utility`."""
    splits = EvalSplits.for_data(cfg.data, forget=cfg.forget)
    if cfg.eval_splits in ("forget", "truth"):
        splits = EvalSplits(
            forget=cfg.forget, retain="", real_authors="", world_facts="", holdout=""
        )
    roles = load_roles(splits, cfg.data)
    dist.check_rows({r: len(v) for r, v in roles.items()}, "evaluate after each epoch")
    reference = load_reference(cfg.reference, roles["forget"]) if cfg.reference else None
    full = None
    if spec.composite:
        full = frozen.target if frozen is not None and frozen.target is not None else None
        full = full or load_model(target)[0]
    judge = frozen.ref if frozen is not None else None
    evaluation = EpochEvaluation(cfg, spec, tokenizer, roles, reference, full, judge)

    def keep_evaluation(_model, _epoch: int, _scores: dict) -> None:
        if cfg.eval_splits == "all":  # the kept epoch's whole evaluation, for `uld compare`
            write_json(evaluation.last, best / KEPT_EVAL)

    floor = None
    if cfg.min_utility:
        mu = target_utility(target, tokenizer, roles, best.parent, full)
        floor = ("model_utility", cfg.min_utility * mu)
        print(f"[uld] epochs kept only with M.U. >= {floor[1]:.4g} ({cfg.min_utility} x {mu:.4g})")
    return EpochEval(
        evaluation,
        cfg.eval_metric,
        best,
        "min" if cfg.eval_metric == "forget_rouge" else "max",
        best.parent / "epochs.json",
        average=average,
        every=cfg.eval_every,
        floor=floor,
        on_best=keep_evaluation,
    )


def target_utility(target: str, tokenizer, roles: dict, folder: Path, model=None) -> float:
    """The target's Model Utility on the utility roles of `roles`, evaluated once and kept in
    `folder/target_utility.json` (so a resumed run does not evaluate it again) and, for a local
    target folder, in the uld cache (`models.model_cache`), so the other runs of a `uld compare`
    plan on the same target and rows do not evaluate it again either. `model`: the target if
    already loaded."""
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
    assistant,
    target_path: str,
    cfg: UnlearnConfig,
    spec: Method,
    k: int,
    extra: dict,
    files: dict | None = None,
) -> None:
    """Adapter weights + adapter config + uld_config.json + the run's config (+ `files`, name ->
    text), written whole through `uld.outdir.output_dir`."""
    offset = spec.composite == "offset"
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
                **({} if offset else {"combine": cfg.combine}),
                "made_by": f"uld unlearn --method {cfg.method}",
                **extra,
            },
        )
        cfgmod.save(cfg, tmp / "run_config.yaml")

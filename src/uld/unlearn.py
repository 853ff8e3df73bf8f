"""Unlearning runs. ULD: train the assistant on the reversed objective, save only its adapter.

Everything that can be wrong with the inputs is checked before any model is loaded.
"""

from __future__ import annotations

import time
from pathlib import Path

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
from uld.config import UnlearnConfig
from uld.data.augment import check_disjoint, forget_set, retain_set
from uld.data.format import Collator, PairedDataset, QADataset
from uld.data.load import load_split
from uld.losses import Hyper
from uld.models import load_model, resolve
from uld.trainer import checkpoint_dir, remove_checkpoints, train


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


def unlearn(cfg: UnlearnConfig) -> Path:
    if cfg.method != "uld":
        raise ValueError(f"unknown method {cfg.method!r}; this version implements: uld")
    return unlearn_uld(cfg)


def unlearn_uld(cfg: UnlearnConfig) -> Path:
    """Train a ULD assistant for `cfg.model` and save adapter + config to `cfg.out`."""
    target = resolve(cfg.model)
    target_config = AutoConfig.from_pretrained(target)
    n_layers = target_config.num_hidden_layers
    k = cfg.layers or default_num_layers(n_layers)
    rank = cfg.lora_rank or default_lora_rank(target_config.hidden_size)
    check_num_layers(k, n_layers)
    forget = load_split(cfg.forget, cfg.data)
    retain = load_split(cfg.retain, cfg.data)
    check_disjoint(forget, retain)
    d_f = forget_set(forget, cfg.paraphrase)
    d_r = retain_set(retain, forget, cfg.perturbed)
    print(
        f"[uld] D'_f: {len(forget)} forget + {len(d_f) - len(forget)} paraphrased = {len(d_f)} "
        "rows; "
        f"D'_r: {len(retain)} retain + {len(d_r) - len(retain)} perturbed = {len(d_r)} rows"
    )

    set_seed(cfg.seed)  # the LoRA matrices are initialised at random: same seed, same run
    assistant, tokenizer = build_assistant(
        target, k, rank, cfg.lora_alpha or rank, cfg.lora_dropout
    )
    trainable, total = trainable_count(assistant)
    per_layer = sum(
        p.numel() for n, p in decoder_layers(assistant)[0].named_parameters() if "lora_" not in n
    )
    target_total = total - trainable + (n_layers - k) * per_layer
    print(
        f"[uld] assistant: {k} of {n_layers} layers, LoRA r={rank}: {trainable:,} trainable "
        f"parameters ({100 * trainable / target_total:.2f}% of the target's {target_total:,})"
    )
    dataset = PairedDataset(QADataset(d_f, tokenizer), QADataset(d_r, tokenizer), seed=cfg.seed)
    extra = {
        "lora_rank": rank,
        "trainable_params": trainable,
        "d_f_rows": len(d_f),
        "d_r_rows": len(d_r),
    }
    best = checkpoint_dir(cfg.out) / "best"
    callbacks = []
    if cfg.eval_metric:
        callbacks.append(epoch_evaluator(cfg, target, tokenizer, best))
    start = time.time()
    train(
        assistant,
        dataset,
        Collator(tokenizer.pad_token_id),
        cfg.out,
        "uld",
        hp=Hyper(beta=cfg.beta),
        epochs=cfg.epochs,
        lr=cfg.lr,
        batch_size=cfg.batch_size,
        seed=cfg.seed,
        max_steps=cfg.max_steps,
        weight_decay=0.0,
        callbacks=callbacks,
    )
    extra["train_seconds"] = round(time.time() - start, 1)
    if callbacks:
        extra["epochs_evaluated"] = callbacks[0].history
        extra["best_epoch"] = callbacks[0].best_epoch
        # the best epoch's LoRA weights go into the assistant that is saved
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        set_peft_model_state_dict(assistant, load_file(str(best / "adapter_model.safetensors")))
        print(f"[uld] keeping epoch {extra['best_epoch']} (best {cfg.eval_metric})")
    save_assistant(assistant, target, cfg, k, extra)
    remove_checkpoints(cfg.out)
    return Path(cfg.out)


def epoch_evaluator(cfg: UnlearnConfig, target: str, tokenizer, best: Path):
    """EpochEval for the ULD model made of the full target and the assistant being trained."""
    from uld.evaluate import rouge_eval, truth_ratios
    from uld.logit_diff import ULDModel
    from uld.metrics import forget_quality
    from uld.trainer import EpochEval

    rows = load_split(cfg.forget, cfg.data, require_eval=cfg.eval_metric == "forget_quality")
    full, _ = load_model(target)
    ref = None
    if cfg.eval_metric == "forget_quality":
        retain_model, _ = load_model(cfg.reference)
        ref = truth_ratios(retain_model.eval(), tokenizer, rows)
        del retain_model
    model: ULDModel | None = None

    def evaluate(assistant) -> dict:
        nonlocal model
        if model is None:  # injects the adapter into the full target and copies its weights
            model = ULDModel(full, assistant, cfg.alpha, cfg.filter).eval()
        else:
            model.load_lora(assistant)
        if cfg.eval_metric == "forget_quality":
            return {"forget_quality": forget_quality(truth_ratios(model, tokenizer, rows), ref)}
        return {"forget_rouge": rouge_eval(model, tokenizer, rows, progress=False)[0]}

    def save_best(assistant, epoch: int, scores: dict) -> None:
        assistant.save_pretrained(best)

    mode = "max" if cfg.eval_metric == "forget_quality" else "min"
    return EpochEval(evaluate, cfg.eval_metric, save_best, mode=mode)


def save_assistant(assistant, target_path: str, cfg: UnlearnConfig, k: int, extra: dict) -> None:
    """Adapter weights + adapter config + uld_config.json + the run's config, written atomically."""
    from uld.logit_diff import write_uld_config
    from uld.models import _atomic_dir

    with _atomic_dir(Path(cfg.out)) as tmp:
        assistant.save_pretrained(tmp)
        write_uld_config(
            tmp,
            assistant,
            target_path,
            k,
            cfg.alpha,
            cfg.filter,
            {"made_by": "uld unlearn --method uld", **extra},
        )
        cfgmod.save(cfg, tmp / "run_config.yaml")

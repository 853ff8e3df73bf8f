"""Unlearning runs. ULD: train the assistant on the reversed objective, save only its adapter.

Everything that can be wrong with the inputs is checked before any model is loaded.
"""

from __future__ import annotations

import time
from pathlib import Path

from transformers import AutoConfig

from uld import config as cfgmod
from uld.assistant import check_num_layers, default_num_layers, lora_config, trainable_count
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
    n_layers = AutoConfig.from_pretrained(target).num_hidden_layers
    k = cfg.layers or default_num_layers(n_layers)
    check_num_layers(k, n_layers)
    forget = load_split(cfg.forget, cfg.data)
    retain = load_split(cfg.retain, cfg.data)
    check_disjoint(forget, retain)
    d_f = forget_set(forget, cfg.paraphrase)
    d_r = retain_set(retain, forget, cfg.perturbed)
    print(
        f"[uld] D'_f: {len(forget)} forget + {len(d_f) - len(forget)} paraphrased = {len(d_f)} rows; "
        f"D'_r: {len(retain)} retain + {len(d_r) - len(retain)} perturbed = {len(d_r)} rows"
    )

    assistant, tokenizer = build_assistant(target, k, cfg.lora_rank, cfg.lora_alpha, cfg.lora_dropout)
    trainable, total = trainable_count(assistant)
    print(
        f"[uld] assistant: {k} of {n_layers} layers, LoRA r={cfg.lora_rank}: {trainable:,} trainable "
        f"parameters ({100 * trainable / total:.2f}% of the assistant's {total:,})"
    )
    dataset = PairedDataset(QADataset(d_f, tokenizer), QADataset(d_r, tokenizer), seed=cfg.seed)
    start = time.time()
    train(
        assistant, dataset, Collator(tokenizer.pad_token_id), cfg.out, "uld",
        hp=Hyper(beta=cfg.beta), epochs=cfg.epochs, lr=cfg.lr, batch_size=cfg.batch_size,
        seed=cfg.seed, max_steps=cfg.max_steps, weight_decay=0.0,
    )
    seconds = time.time() - start
    save_assistant(assistant, target, cfg, k, {"train_seconds": round(seconds, 1),
                                              "trainable_params": trainable,
                                              "d_f_rows": len(d_f), "d_r_rows": len(d_r)})
    remove_checkpoints(cfg.out)
    return Path(cfg.out)


def save_assistant(assistant, target_path: str, cfg: UnlearnConfig, k: int, extra: dict) -> None:
    """Adapter weights + adapter config + uld_config.json + the run's config, written atomically."""
    from uld.logit_diff import write_uld_config
    from uld.models import _atomic_dir

    with _atomic_dir(Path(cfg.out)) as tmp:
        assistant.save_pretrained(tmp)
        write_uld_config(tmp, assistant, target_path, k, cfg.alpha, cfg.filter,
                         {"made_by": "uld unlearn --method uld", **extra})
        cfgmod.save(cfg, tmp / "run_config.yaml")


__all__ = ["build_assistant", "unlearn", "checkpoint_dir"]

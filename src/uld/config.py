"""Typed run configurations. Each field's `help` becomes a command-line flag; a YAML file can
give any of them (`--config run.yaml`) and flags given on the command line win. The resolved
config is validated once and saved next to every result.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml


def _f(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


@dataclass
class FinetuneConfig:
    """How a target or retain model is made (TOFU recipe)."""

    split: str = _f("full", "split to fine-tune on (full -> target, retain90 -> retain model)")
    out: str = _f("", "output model folder")
    model: str | None = _f(None, "base model: hub id or folder (default: embedded SmolLM2-135M)")
    data: str = _f("builtin", "data: builtin, a folder of <split>.json files, or a hub id")
    epochs: float = _f(4.0, "epochs")
    lr: float = _f(3e-4, "peak learning rate (AdamW, linear warm-up and decay)")
    batch_size: int = _f(8, "batch size")
    lora: bool = _f(False, "train LoRA adapters and merge them back instead of full fine-tuning")
    lora_rank: int = _f(32, "LoRA rank when --lora")
    seed: int = _f(0, "random seed")
    max_steps: int = _f(-1, "stop after this many steps (for smoke tests)")

    def validate(self) -> None:
        _positive(epochs=self.epochs, lr=self.lr, batch_size=self.batch_size)
        if not self.out:
            raise ValueError("--out is required: the folder to write the model to")


@dataclass
class UnlearnConfig:
    """An unlearning run. ULD defaults follow the paper (TOFU), scaled to the model."""

    method: str = _f("uld", "unlearning method")
    model: str = _f("", "target model folder or hub id (the fine-tuned model to unlearn)")
    forget: str = _f("forget10", "forget split (or a .json/.jsonl file)")
    retain: str = _f("retain90", "retain split (or a .json/.jsonl file)")
    data: str = _f("builtin", "data: builtin, a folder of <split>.json files, or a hub id")
    out: str = _f("", "output folder")
    layers: int = _f(0, "ULD: assistant layers K (0: a quarter of the target's, paper 8 of 32)")
    lora_rank: int = _f(0, "ULD: LoRA rank (0: paper's 32 scaled by hidden size / 4096, >= 8)")
    lora_alpha: float = _f(0.0, "ULD: LoRA alpha (0: equal to the rank, as the paper's 32/32)")
    lora_dropout: float = _f(0.05, "ULD: LoRA dropout")
    beta: float = _f(6.5, "ULD: weight of the uniform loss on D'_r (paper 6.5)")
    alpha: float = _f(0.75, "ULD: logit-difference weight at inference (paper 0.75)")
    filter: float = _f(1e-2, "ULD: relative-top filter; subtract only where p >= filter * p_max")
    paraphrase: bool = _f(True, "ULD: add paraphrased forget pairs to D'_f")
    perturbed: bool = _f(True, "ULD: add forget questions with perturbed answers to D'_r")
    epochs: float = _f(10.0, "epochs over the forget set (paper 10)")
    lr: float = _f(1e-3, "peak learning rate (paper 1e-3 for ULD)")
    batch_size: int = _f(8, "batch size (forget items; each is paired with a retain item)")
    seed: int = _f(0, "random seed")
    max_steps: int = _f(-1, "stop after this many steps (for smoke tests)")
    eval_metric: str = _f(
        "",
        "evaluate each epoch and keep the best: forget_quality (needs "
        "--reference) or forget_rouge; empty: keep the last epoch",
    )
    reference: str = _f("", "retain model folder: the reference for forget_quality")

    def validate(self) -> None:
        _positive(epochs=self.epochs, lr=self.lr, batch_size=self.batch_size)
        if self.eval_metric not in ("", "forget_quality", "forget_rouge"):
            raise ValueError(
                f"--eval-metric={self.eval_metric!r}: choose forget_quality, "
                "forget_rouge or leave it empty"
            )
        if self.eval_metric == "forget_quality" and not self.reference:
            raise ValueError("--eval-metric forget_quality needs --reference RETAIN_MODEL_FOLDER")
        if self.lora_rank < 0 or self.layers < 0:
            raise ValueError("--lora-rank and --layers must be >= 0 (0 picks the default)")
        for name in ("beta", "alpha", "lora_alpha"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v >= 0):
                raise ValueError(f"--{name.replace('_', '-')}={v} must be a finite number >= 0")
        if not (math.isfinite(self.filter) and 0 < self.filter <= 1):
            raise ValueError(f"--filter={self.filter} must be in (0, 1] (the paper uses 1e-2)")
        if not 0 <= self.lora_dropout < 1:
            raise ValueError(f"--lora-dropout={self.lora_dropout} must be in [0, 1)")
        if not self.model:
            raise ValueError("--model is required: the fine-tuned target to unlearn")
        if not self.out:
            raise ValueError("--out is required: the folder to write the unlearned model to")


def _positive(**values: float) -> None:
    for name, v in values.items():
        if not (math.isfinite(v) and v > 0):
            raise ValueError(f"--{name.replace('_', '-')}={v} must be a positive number")


def add_flags(parser: argparse.ArgumentParser, cls: type) -> None:
    """One flag per dataclass field; defaults are None so that YAML values can fill the gaps."""
    for f in fields(cls):
        flag = "--" + f.name.replace("_", "-")
        if f.type in (bool, "bool"):
            parser.add_argument(
                flag, action=argparse.BooleanOptionalAction, default=None, help=f.metadata["help"]
            )
        else:
            kind = {"int": int, "float": float}.get(str(f.type), str)
            parser.add_argument(
                flag, type=kind, default=None, help=f"{f.metadata['help']} (default: {f.default})"
            )


def from_args(cls: type, args: argparse.Namespace, yaml_path: str | None = None):
    """Defaults < YAML file < command-line flags."""
    values: dict[str, Any] = {}
    if yaml_path:
        path = Path(yaml_path)
        if not path.exists():
            raise ValueError(f"config file {path} does not exist")
        loaded = yaml.safe_load(path.read_text()) or {}
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(loaded) - known)
        if unknown:
            raise ValueError(f"{path}: unknown keys {unknown}; known keys are {sorted(known)}")
        values.update(loaded)
    for f in fields(cls):
        v = getattr(args, f.name, None)
        if v is not None:
            values[f.name] = v
    config = cls(**values)
    config.validate()
    return config


def save(config, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(dataclasses.asdict(config), sort_keys=False))

"""Typed run configurations. Each field's `help` becomes a command-line flag; a YAML file can
give any of them (`--config run.yaml`) and flags given on the command line win. The resolved
config is validated once and saved next to every result.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import typing
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
    data_kind: str = _f(
        "",
        "qa (question/answer rows, TOFU schema) or text (raw documents, MUSE schema: "
        "builtin-muse, a folder with a raw/ subfolder, muse-bench/MUSE-News); empty: detected "
        "from --data (uld.data.text.is_text_data)",
    )
    max_length: int = _f(256, "text: tokens per training chunk (each document is cut in chunks)")
    epochs: float = _f(4.0, "epochs")
    lr: float = _f(3e-4, "peak learning rate (AdamW, linear warm-up and decay)")
    batch_size: int = _f(8, "batch size")
    lora: bool = _f(False, "train LoRA adapters and merge them back instead of full fine-tuning")
    lora_rank: int = _f(32, "LoRA rank when --lora")
    seed: int = _f(0, "random seed")
    max_steps: int = _f(-1, "stop after this many steps (for smoke tests)")
    bf16: bool = _f(
        False,
        "bf16 mixed precision (default: on a GPU that has bf16; fp32 elsewhere); an error on a "
        "GPU without it",
    )
    fp16: bool = _f(False, "fp16 mixed precision (GPUs only; for GPUs without bf16)")
    gradient_checkpointing: bool = _f(
        False,
        "recompute each layer's activations in the backward pass instead of keeping them: less "
        "memory for full-parameter training, about a third more compute",
    )
    overwrite: bool = _f(
        False,
        "replace an earlier result in --out and discard checkpoints of another run there (files "
        "uld did not write are never deleted)",
    )

    def validate(self) -> None:
        _positive(epochs=self.epochs, lr=self.lr, batch_size=self.batch_size)
        check_precision_flags(self.bf16, self.fp16)
        _steps(self.max_steps)
        _text_flags(self.data_kind, self.max_length)
        if self.lora_rank < 1:
            raise ValueError(f"--lora-rank={self.lora_rank} must be >= 1")
        if not self.out:
            raise ValueError("--out is required: the folder to write the model to")


METHODS_HELP = (
    "uld; a baseline: ga, ga+gd, ga+kl, dpo, dpo+gd, dpo+kl, npo, npo+gd, npo+kl; "
    "offset-ga+kl, offset-dpo+kl, offset-npo+kl (or any offset-<baseline>); on MoE models "
    "uoe+<baseline> (e.g. uoe+ga, uoe+npo+kl); simnpo, wga, satimp, undial, ceu, each alone, "
    "+gd or +kl (open-unlearning's defaults: simnpo+gd, wga+gd, satimp+gd, undial, ceu); rmu"
)


@dataclass
class UnlearnConfig:
    """An unlearning run. ULD defaults follow the paper (TOFU), scaled to the model."""

    method: str = _f("uld", f"unlearning method: {METHODS_HELP}")
    model: str = _f("", "target model folder or hub id (the fine-tuned model to unlearn)")
    forget: str = _f("forget10", "forget split (or a .json/.jsonl file)")
    retain: str = _f("retain90", "retain split (or a .json/.jsonl file)")
    data: str = _f("builtin", "data: builtin, a folder of <split>.json files, or a hub id")
    data_kind: str = _f(
        "",
        "qa (question/answer rows, TOFU schema) or text (raw documents, MUSE schema: "
        "builtin-muse, a folder with a raw/ subfolder, muse-bench/MUSE-News); empty: detected "
        "from --data (uld.data.text.is_text_data)",
    )
    max_length: int = _f(256, "text: tokens per training chunk (each document is cut in chunks)")
    out: str = _f("", "output folder")
    layers: int = _f(0, "ULD/Offset: assistant layers K (0: a quarter of the target's, paper 8/32)")
    lora_rank: int = _f(0, "LoRA rank (0: paper's 32 scaled by hidden size / 4096, >= 8)")
    lora_alpha: float = _f(
        0.0,
        "LoRA alpha (0: ULD's assistant twice the rank, as measured on SmolLM2-135M (the paper: "
        "32/32); other LoRA equal to the rank)",
    )
    lora_dropout: float = _f(0.05, "LoRA dropout")
    lora: bool = _f(False, "baselines: train LoRA adapters on every projection, not all weights")
    beta: float = _f(
        4.0,
        "ULD: weight of the uniform loss on D'_r (paper 6.5; 4 measured on SmolLM2-135M, where "
        "6.5 left the assistant near uniform on D'_f too)",
    )
    alpha: float | None = _f(
        None,
        "ULD: logit-difference weight at inference (paper 0.75); default: chosen after training "
        "on the run's own rows (uld.calibrate.choose_alpha_safely): the largest that leaves the "
        "target's answers to retain questions and general prompts as they were and every "
        "forget answer fluent",
    )
    filter: float = _f(
        1e-2,
        "ULD: relative-top filter; subtract only where p >= filter * p_max or on the "
        "filter * vocab most likely tokens",
    )
    combine: str = _f(
        "mass",
        "ULD: how the target's and the assistant's logits combine on the plausible set S, saved "
        "in uld_config.json: mass (l_t - alpha * l_a rescaled to keep the target's mass on S) or "
        "authors (the ULD authors' raw l_t - alpha * l_a on S, to reproduce the paper; "
        "docs/method.md)",
    )
    retain_weight: float = _f(
        1.0,
        "baselines: weight of the GD / KL retain term; RMU: alpha, the weight of keeping the "
        "retain activations (open-unlearning 1; WMDP's zephyr-7b run 1200)",
    )
    forget_weight: float | None = _f(
        None,
        "weight of the forget term (open-unlearning's gamma); default: the method's, SimNPO "
        "0.125, SatImp 0.1, the others 1",
    )
    npo_beta: float = _f(0.1, "NPO inverse temperature beta")
    anchor: float = _f(1.0, "UOE: weight alpha of the router anchor loss")
    uoe_layer: int = _f(-1, "UOE: the MoE layer to take experts from (-1: the best across layers)")
    uoe_experts: int = _f(1, "UOE: how many top experts to unlearn (the paper: 1)")
    dpo_beta: float = _f(0.1, "DPO inverse temperature beta")
    simnpo_beta: float = _f(4.5, "SimNPO inverse temperature beta (open-unlearning 4.5)")
    simnpo_delta: float = _f(
        0.0, "SimNPO margin delta on the mean token NLL (the paper's gamma is beta * delta)"
    )
    wga_beta: float = _f(1.0, "WGA: token weight p^beta (the paper 1)")
    satimp_beta1: float = _f(5.0, "SatImp: saturation exponent, weight p^beta1 (the paper 5)")
    satimp_beta2: float = _f(1.0, "SatImp: importance exponent, weight (1 - p)^beta2 (the paper 1)")
    undial_beta: float = _f(
        10.0, "UNDIAL: how far the true token's teacher logit is lowered (open-unlearning 10)"
    )
    ceu_ignore_first: int = _f(
        1, "CE-U: answer tokens left out of the loss at the start of each answer (the paper 1)"
    )
    rmu_layer: int = _f(
        -1,
        "RMU: the decoder layer (0-based) whose activations are steered; the MLP output "
        "projections of it and the two layers below it are trained (-1: WMDP's 7 of 32 scaled "
        "to the target's depth)",
    )
    rmu_steer: float = _f(
        2.0,
        "RMU: steering coefficient c, the norm of the random target activation (open-unlearning "
        "2; WMDP's zephyr-7b run 6.5)",
    )
    paraphrase: bool | None = _f(
        None, "add paraphrased forget pairs to the forget set (default: on for ULD, off otherwise)"
    )
    perturbed: bool | None = _f(
        None,
        "add forget questions with perturbed answers to the retain set (default: on for ULD, "
        "off otherwise)",
    )
    distill: bool = _f(
        False,
        "ULD: train the assistant on D'_f toward the target's own next-token distribution "
        "(soft labels) instead of the answer tokens, so it knows each forget row as strongly "
        "as the target does; our variant, not the paper's",
    )
    augment_from_eval: bool = _f(
        False,
        "take the paraphrases and perturbed answers from the evaluation's paraphrased_answer / "
        "perturbed_answer rather than the rows' augment_paraphrased / augment_perturbed (trains "
        "on the strings the truth ratio is scored on: for comparison only, docs/method.md)",
    )
    general: str | None = _f(
        None,
        "add rows the model must keep to the retain set (ULD: to D'_r, where the assistant learns "
        "to know nothing), one source or several joined by commas: builtin (our everyday prompts "
        "answered by the target), knowledge (our well-known-fact prompts, answered by the "
        "target; ULD's choice of alpha checks these, so keep them out of training) or a "
        ".json/.jsonl file of question/answer rows; empty: none; default: builtin for ULD, none "
        "for the others",
    )
    epochs: float = _f(
        0.0,
        "epochs over the forget set (paper 10); 0: from the data (uld.defaults.auto_epochs: at "
        "least 10 epochs, 300 steps and 2 passes over the retain set)",
    )
    lr: float = _f(
        0.0,
        "peak learning rate (0: the method's default: ULD 3e-3 (paper 1e-3, which left the "
        "assistant at 13 nats on D'_f after 10 epochs on SmolLM2-135M), baselines 1e-5, LoRA "
        "1e-4)",
    )
    batch_size: int = _f(8, "batch size (forget items; each is paired with a retain item)")
    seed: int = _f(0, "random seed")
    max_steps: int = _f(-1, "stop after this many steps (for smoke tests)")
    bf16: bool = _f(
        False,
        "bf16 mixed precision (default: on a GPU that has bf16; fp32 elsewhere); an error on a "
        "GPU without it",
    )
    fp16: bool = _f(False, "fp16 mixed precision (GPUs only; for GPUs without bf16)")
    gradient_checkpointing: bool = _f(
        False,
        "recompute each layer's activations in the backward pass instead of keeping them: less "
        "memory for full-parameter training, about a third more compute",
    )
    ema: float = _f(
        0.0,
        "decay of an exponential moving average of the trained weights, updated every step; "
        "the average is what each epoch's evaluation sees and what is saved (e.g. 0.98 averages "
        "over about 50 steps); 0: off, the weights themselves",
    )
    eval_metric: str = _f(
        "",
        "evaluate each epoch and keep the best epoch by this metric: forget_quality (needs "
        "--reference), forget_rouge or model_utility; epoch: evaluate each epoch and keep the "
        "last (a history to time the run by); empty: keep the last epoch, evaluating none",
    )
    eval_every: int = _f(
        1, "with --eval-metric: evaluate every this many epochs (and after the last one)"
    )
    eval_splits: str = _f(
        "forget",
        "what the per-epoch evaluation covers: forget (the forget split), truth (the forget "
        "split without generating answers: teacher-forced figures and F.Q. only, cheapest) or "
        "all (adds M.U.)",
    )
    min_utility: float = _f(
        0.0,
        "with --eval-metric and --eval-splits all: only epochs whose Model Utility is at least "
        "this fraction of the target's (measured once, before training) can be kept, e.g. 0.95; "
        "if none is, the epoch with the highest M.U. is kept. 0: any epoch",
    )
    reference: str = _f("", "retain model folder (or its eval.json): the reference for F.Q.")
    calibrate: str = _f(
        "",
        "ULD: after training, choose alpha on this split of held-out rows (in no training set, "
        "e.g. holdout10): the alpha under which the forget rows' truth ratios look most like "
        "theirs (uld.calibrate; no retain model needed); empty: keep --alpha",
    )
    alpha_by_reference: int = _f(
        0,
        "ULD with --calibrate and --reference: of the N grid alphas (0.1 apart) nearest the "
        "held-out choice, keep the one with the best Forget Quality against the reference, as "
        "--eval-metric forget_quality keeps a baseline's best epoch (5 alphas match 5 epochs); "
        "0: keep the held-out choice",
    )
    check: bool = _f(
        True,
        "after training, print a before/after sample of forget, retain and general answers with "
        "fluency and ROUGE-L (uld.defaults.after_run_check), saved as after_run_check.json",
    )
    strict: bool = _f(
        False,
        "exit non-zero when the after-run check finds retain or general answers moved beyond its "
        "tolerance or degenerate forget answers (the model is saved all the same)",
    )
    overwrite: bool = _f(
        False,
        "replace an earlier result in --out and discard checkpoints of another run there (files "
        "uld did not write are never deleted)",
    )

    def validate(self) -> None:
        _positive(batch_size=self.batch_size)
        check_precision_flags(self.bf16, self.fp16)
        if not (math.isfinite(self.epochs) and self.epochs >= 0):
            raise ValueError(f"--epochs={self.epochs} must be >= 0 (0: from the data)")
        if self.strict and not self.check:
            raise ValueError("--strict fails the run on the after-run check: drop --no-check")
        _steps(self.max_steps)
        _text_flags(self.data_kind, self.max_length)
        if not (math.isfinite(self.lr) and self.lr >= 0):
            raise ValueError(f"--lr={self.lr} must be >= 0 (0 picks the method's default)")
        if self.eval_metric not in ("", "forget_quality", "forget_rouge", "model_utility", "epoch"):
            raise ValueError(
                f"--eval-metric={self.eval_metric!r}: choose forget_quality, forget_rouge, "
                "model_utility, epoch (the last) or leave it empty"
            )
        if self.eval_splits not in ("forget", "truth", "all"):
            raise ValueError(f"--eval-splits={self.eval_splits!r}: choose forget, truth or all")
        if self.eval_metric == "forget_rouge" and self.eval_splits == "truth":
            raise ValueError(
                "--eval-metric forget_rouge needs generated answers, which --eval-splits truth "
                "leaves out; use --eval-splits forget"
            )
        if self.eval_every < 1:
            raise ValueError(f"--eval-every={self.eval_every} must be >= 1 (1: every epoch)")
        if self.eval_metric == "model_utility" and self.eval_splits != "all":
            raise ValueError("--eval-metric model_utility needs --eval-splits all")
        if not (math.isfinite(self.min_utility) and self.min_utility >= 0):
            raise ValueError(f"--min-utility={self.min_utility} must be a fraction >= 0, e.g. 0.95")
        if self.min_utility and not (self.eval_metric and self.eval_splits == "all"):
            raise ValueError(
                "--min-utility compares each epoch's Model Utility with the target's: it needs "
                "--eval-metric (e.g. forget_quality) and --eval-splits all"
            )
        if self.eval_metric == "forget_quality" and not self.reference:
            raise ValueError("--eval-metric forget_quality needs --reference RETAIN_MODEL_FOLDER")
        if self.lora_rank < 0 or self.layers < 0:
            raise ValueError("--lora-rank and --layers must be >= 0 (0 picks the default)")
        for name in ("beta", "lora_alpha", "retain_weight"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v >= 0):
                raise ValueError(f"--{name.replace('_', '-')}={v} must be a finite number >= 0")
        if self.alpha is not None:
            check_alpha(self.alpha)
        _positive(
            npo_beta=self.npo_beta,
            dpo_beta=self.dpo_beta,
            uoe_experts=self.uoe_experts,
            simnpo_beta=self.simnpo_beta,
            rmu_steer=self.rmu_steer,
        )
        if self.forget_weight is not None:
            _positive(forget_weight=self.forget_weight)
        for name in ("simnpo_delta", "wga_beta", "satimp_beta1", "satimp_beta2", "undial_beta"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v >= 0):
                raise ValueError(f"--{name.replace('_', '-')}={v} must be a finite number >= 0")
        if self.ceu_ignore_first < 0:
            raise ValueError(f"--ceu-ignore-first={self.ceu_ignore_first} must be >= 0")
        if self.rmu_layer < -1:
            raise ValueError(
                f"--rmu-layer={self.rmu_layer} must be a layer index >= 0, or -1 for the default"
            )
        if not (math.isfinite(self.anchor) and self.anchor >= 0):
            raise ValueError(f"--anchor={self.anchor} must be a finite number >= 0")
        if not (math.isfinite(self.filter) and 0 < self.filter <= 1):
            raise ValueError(f"--filter={self.filter} must be in (0, 1] (the paper uses 1e-2)")
        if self.combine not in COMBINES:
            raise ValueError(f"--combine={self.combine!r}: choose {' or '.join(COMBINES)}")
        if not 0 <= self.lora_dropout < 1:
            raise ValueError(f"--lora-dropout={self.lora_dropout} must be in [0, 1)")
        if not 0 <= self.ema < 1:
            raise ValueError(f"--ema={self.ema} must be in [0, 1) (0: no averaging)")
        if self.alpha_by_reference < 0:
            raise ValueError(f"--alpha-by-reference={self.alpha_by_reference} must be >= 0")
        if self.alpha_by_reference and not (self.calibrate and self.reference):
            raise ValueError(
                "--alpha-by-reference narrows the alpha that --calibrate chooses, by Forget "
                "Quality: it needs --calibrate HELD_OUT_SPLIT and --reference RETAIN_MODEL_FOLDER"
            )
        if not self.model:
            raise ValueError("--model is required: the fine-tuned target to unlearn")
        if not self.out:
            raise ValueError("--out is required: the folder to write the unlearned model to")


# the evaluation roles, and the three whose (probability, ROUGE-L, truth ratio) make Model Utility
ROLES = ("forget", "retain", "real_authors", "world_facts", "holdout")
UTILITY_ROLES = ("retain", "real_authors", "world_facts")
UTILITY_PARTS = ("prob", "rouge_l", "truth_ratio")


@dataclass
class EvalSplits:
    """Split names per evaluation role ("" skips a role). The defaults are the built-in
    benchmark's; on the hub's `locuslab/TOFU` they are forget10_perturbed, retain_perturbed,
    real_authors_perturbed, world_facts_perturbed and holdout10."""

    forget: str = "forget10"
    retain: str = "retain_perturbed"
    real_authors: str = "real_authors"
    world_facts: str = "world_facts"
    holdout: str = "holdout10"

    @classmethod
    def for_data(cls, data: str, forget: str = "forget10") -> EvalSplits:
        """The default roles for a data source: the hub's TOFU names for locuslab/TOFU."""
        if "tofu" in str(data).lower() and not Path(str(data)).exists():
            pct = forget.removeprefix("forget").removesuffix("_perturbed")
            return cls(
                forget=forget if forget.endswith("_perturbed") else f"{forget}_perturbed",
                real_authors="real_authors_perturbed",
                world_facts="world_facts_perturbed",
                holdout=f"holdout{pct}",
            )
        return cls(forget=forget, holdout="holdout10")


def check_precision_flags(bf16: bool, fp16: bool) -> None:
    if bf16 and fp16:
        raise ValueError("--bf16 and --fp16 are two mixed precisions: give one of them")


def precision(cfg) -> str:
    """A config's training precision for `uld.trainer.train`: bf16, fp16 or auto."""
    return "bf16" if cfg.bf16 else "fp16" if cfg.fp16 else "auto"


def _positive(**values: float) -> None:
    for name, v in values.items():
        if not (math.isfinite(v) and v > 0):
            raise ValueError(f"--{name.replace('_', '-')}={v} must be a positive number")


def _text_flags(data_kind: str, max_length: int) -> None:
    if data_kind not in ("", "qa", "text"):
        raise ValueError(f"--data-kind={data_kind!r}: choose text, qa or leave it empty (detect)")
    if max_length < 2:
        raise ValueError(f"--max-length={max_length} must be >= 2 (a token and its successor)")


def _steps(max_steps: int) -> None:
    if max_steps == 0 or max_steps < -1:
        raise ValueError(f"--max-steps={max_steps} must be >= 1, or -1 for no limit")


MAX_ALPHA = 10.0
# how ULD combines the target's and the assistant's logits (uld.logit_diff.logit_difference)
COMBINES = ("mass", "authors")
# the ULD paper's efficiency comparison: training times relative to ULD's, time to quality
# against NPO+KL's (`uld report`'s defaults for --relative-to and --baseline)
TIME_UNIT_METHOD, TIME_BASELINE_METHOD = "uld", "npo+kl"


def check_alpha(alpha: float, flag: str = "--alpha") -> None:
    """ULD's alpha: the paper's is 0.75 and `uld calibrate` searches 0 to 2; far above that the
    assistant's logits swamp the target's and every answer breaks."""
    if not (math.isfinite(alpha) and 0 <= alpha <= MAX_ALPHA):
        raise ValueError(
            f"{flag}={alpha} must be a number in [0, {MAX_ALPHA:g}] (the paper uses 0.75; "
            "`uld calibrate` chooses one in 0-2)"
        )


def parse_value(kind: Any, raw: Any, where: str) -> Any:
    """`raw` (a command-line string or a YAML value) as a value of the field type `kind`
    (bool, int, float, str, or one of them | None); a ValueError names `where` and the value.
    Flags and YAML files go through this one function, so they are typed and checked alike."""
    args = [a for a in typing.get_args(kind) if a is not type(None)]
    if args:  # X | None
        if raw is None:
            return None
        kind = args[0]
    if kind is bool:
        if isinstance(raw, bool):
            return raw
        raise ValueError(f"{where}: {raw!r} is not true or false (write true or false, unquoted)")
    if kind in (int, float):
        if isinstance(raw, bool):
            raise ValueError(f"{where}: {raw!r} is not a number")
        try:
            value = kind(raw) if isinstance(raw, str) else raw
            if kind is int and isinstance(value, float) and value.is_integer():
                value = int(value)
            if not isinstance(value, int | float) or (kind is int and not isinstance(value, int)):
                raise TypeError
        except (TypeError, ValueError):
            what = "a whole number" if kind is int else "a number"
            raise ValueError(f"{where}: {raw!r} is not {what}") from None
        return kind(value)
    if not isinstance(raw, str):
        raise ValueError(f"{where}: {raw!r} is not text (quote it)")
    return raw


def _flag_type(kind: Any, flag: str):
    def convert(text: str) -> Any:
        try:
            return parse_value(kind, text, flag)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e).split(": ", 1)[1]) from e

    convert.__name__ = getattr(kind, "__name__", "value")  # argparse names it in errors
    return convert


def add_flags(parser: argparse.ArgumentParser, cls: type) -> None:
    """One flag per dataclass field, typed from the field's own type; defaults are None so that
    YAML values can fill the gaps."""
    hints = typing.get_type_hints(cls)
    for f in fields(cls):
        flag = "--" + f.name.replace("_", "-")
        kind = hints[f.name]
        if bool in (kind, *typing.get_args(kind)):
            parser.add_argument(
                flag, action=argparse.BooleanOptionalAction, default=None, help=f.metadata["help"]
            )
        else:
            parser.add_argument(
                flag,
                type=_flag_type(kind, flag),
                default=None,
                help=f"{f.metadata['help']} (default: {f.default})",
            )


def from_args(cls: type, args: argparse.Namespace, yaml_path: str | None = None):
    """Defaults < YAML file < command-line flags. YAML values are typed and checked as flags are
    (`parse_value`); an error names the file and the key."""
    values: dict[str, Any] = {}
    if yaml_path:
        values = read_yaml(cls, yaml_path)
    for f in fields(cls):
        v = getattr(args, f.name, None)
        if v is not None:
            values[f.name] = v
    config = cls(**values)
    config.validate()
    return config


def read_yaml(cls: type, yaml_path: str | Path) -> dict[str, Any]:
    """The settings of a YAML file for the dataclass `cls`, each typed by `parse_value`."""
    path = Path(yaml_path)
    if not path.exists():
        raise ValueError(f"config file {path} does not exist")
    try:
        loaded = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ValueError(f"config file {path} is not valid YAML: {e}") from e
    if not isinstance(loaded, dict):
        raise ValueError(f"config file {path}: expected key: value lines, got {loaded!r}")
    return typed(cls, loaded, str(path))


def typed(cls: type, values: dict[str, Any], source: str) -> dict[str, Any]:
    """`values` (from a YAML file or a plan) typed by the fields of `cls`; unknown keys and
    mistyped values raise a ValueError naming `source` and the key."""
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"{source}: unknown keys {unknown}; known keys are {sorted(known)}")
    hints = typing.get_type_hints(cls)
    return {k: parse_value(hints[k], v, f"{source}, key {k}") for k, v in values.items()}


def save(config, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(dataclasses.asdict(config), sort_keys=False))

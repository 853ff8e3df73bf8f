"""The methods `uld unlearn` runs: one table, `METHODS`, and how each builds what it trains.

Each entry says everything that varies by method: its objective (`uld.losses`), how its
trainable model is built (`build`), whether it is a composite whose small trained model is
combined with the target's logits at inference (ULD, Offset), its default learning rate, whether
its training sets are augmented and D'_r widened by default, and whether it needs a frozen copy
of the target. Nothing else in uld parses method names: adding a method is one objective in
`uld.losses` and one entry here.

Every input is checked before any model is loaded.

On raw text (MUSE schema, `uld.data.text`; `text_config`) every method trains on document chunks
(`uld.data.chunks`): D'_f is the forget chunks, D'_r the retain chunks, with no paraphrases,
perturbed answers or general prompts (they rewrite question/answer rows). Two kinds of method
need question/answer rows and are refused there: DPO (its preferred answer is a refusal of the
forget row's question; a raw document asks nothing) and UOE (its expert attribution and anchor
read answers).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import NamedTuple

import torch
from transformers import AutoConfig, set_seed

from uld.assistant import (
    UnsupportedModelError,
    check_num_layers,
    decoder_layers,
    default_lora_rank,
    default_num_layers,
    lora_config,
    projection_paths,
    trainable_count,
)
from uld.calibrate import check_held_out, check_rows
from uld.config import UnlearnConfig
from uld.data.augment import (
    check_disjoint,
    drop_forget_overlap,
    forget_set,
    refusal_set,
    report_duplicates,
    retain_set,
)
from uld.data.chunks import TextDataset
from uld.data.format import PairedDataset, QADataset
from uld.data.general import general_prompts, knowledge_prompts
from uld.data.load import DataError, load_split
from uld.data.rewrite import augment_without_model
from uld.data.text import check_forget_unseen, is_text_data, load_muse, texts
from uld.evaluate import generate_answers, load_reference
from uld.losses import (
    FORGET_TERMS,
    LATER_FORGET_TERMS,
    REFERENCE_TERMS,
    RETAIN_TERMS,
    Frozen,
    Objective,
    baseline_objective,
    rmu_layer,
    rmu_objective,
    uld_objective,
    uoe_objective,
)
from uld.models import load_model, resolve
from uld.moe import expert_attribution, moe_layers, select_experts, top_experts


class Run(NamedTuple):
    """What a method trains, and with what: everything `uld.runs.train_and_save` needs."""

    target: str  # the target's folder
    model: torch.nn.Module  # the trained model: assistant, offset model or the target itself
    tokenizer: object
    dataset: PairedDataset
    method: Method
    frozen: Frozen | None
    extra: dict  # facts for the saved card
    k: int  # assistant/offset layers; 0 for a baseline on the target itself
    finish: Callable[[], None] | None = None  # undo training-only hooks (UOE)
    # ULD: (forget rows, held-out rows, the reference's forget truth ratios or None)
    calibration: tuple[list[dict], list[dict], list[float] | None] | None = None
    rows: tuple[list[dict], list[dict]] = ([], [])  # (forget, retain) as given: for the checks


@dataclass(frozen=True)
class Method:
    """One row of `METHODS`."""

    name: str
    objective: Objective  # (model, batch, hp, frozen) -> (loss, logs), from uld.losses
    build: Callable[[UnlearnConfig, Method], Run]  # loads and sets up what is trained
    forget_term: str = ""  # ga | npo | dpo | simnpo | wga | satimp | undial | ceu | rmu
    retain_term: str = ""  # gd | kl for the baselines; "uniform" for ULD's D'_r; RMU's
    # "activations" (the frozen model's at the steered layer)
    forget_weight: float = 1.0  # default weight of the forget term (open-unlearning's gamma)
    composite: str = ""  # "uld" or "offset": a small model combined with the target's logits
    lr: float = 1e-5  # default peak learning rate, full fine-tuning
    lora_lr: float = 1e-4  # ... with --lora
    lora_alpha_per_rank: float = 1.0  # LoRA alpha = this x rank unless --lora-alpha
    augment: bool = False  # paraphrased D'_f and perturbed D'_r unless --no-paraphrase ...
    general: str = ""  # D'_r widened with these general prompts unless --general
    has_alpha: bool = False  # ULD's alpha: chosen after training, --calibrate, --distill
    moe: bool = False  # UOE: needs a Mixture-of-Experts target

    @property
    def has_retain_term(self) -> bool:
        """Trains on the retain set: ULD on its D'_r, a baseline through +GD / +KL."""
        return bool(self.retain_term)

    @property
    def needs_reference(self) -> bool:
        """Compares against the frozen original model: NPO, DPO and UNDIAL in their forget
        term, KL and RMU in their retain term; GA, GD and the others do not."""
        return self.forget_term in REFERENCE_TERMS or self.retain_term in ("kl", "activations")

    @property
    def pairs_refusals(self) -> bool:
        """DPO: each forget row is paired with a refusal of the same question."""
        return self.forget_term == "dpo"

    def default_lr(self, lora: bool) -> float:
        return self.lora_lr if lora else self.lr


def method(name: str) -> Method:
    """The `METHODS` entry named `name`, or a clear error listing them."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose one of {', '.join(METHODS)}")
    return METHODS[name]


def check(cfg: UnlearnConfig) -> Method:
    """`cfg`'s method, with the settings that only some methods take checked against it."""
    spec = method(cfg.method)
    if cfg.distill and spec.composite != "uld":
        raise ValueError(f"--distill trains ULD's assistant; {cfg.method} has none")
    if cfg.calibrate and not spec.has_alpha:
        raise ValueError(
            f"--calibrate chooses ULD's alpha; {cfg.method} has none (drop --calibrate)"
        )
    if general_sources(cfg) and not spec.has_retain_term:
        raise ValueError(
            f"--general adds retain rows, but {cfg.method} has no retain term; use a method with "
            "one (uld, or a baseline with +gd or +kl) or drop --general"
        )
    return spec


def general_sources(cfg: UnlearnConfig) -> str:
    """`cfg.general` resolved: the method's default (ULD: the built-in everyday prompts; without
    them its assistant is not flat on general text, and the alpha that keeps general answers is
    near 0), unless given."""
    return cfg.general if cfg.general is not None else method(cfg.method).general


def learning_rate(cfg: UnlearnConfig) -> float:
    """`cfg.lr`, or the method's default when 0."""
    return cfg.lr or method(cfg.method).default_lr(cfg.lora)


def forget_weight(cfg: UnlearnConfig) -> float:
    """`cfg.forget_weight`, or the method's default when not given."""
    return method(cfg.method).forget_weight if cfg.forget_weight is None else cfg.forget_weight


def augmentation(cfg: UnlearnConfig) -> tuple[bool, bool]:
    """(paraphrase, perturbed), resolved: ULD's paper uses both, the baselines neither."""
    on = method(cfg.method).augment
    return (on if cfg.paraphrase is None else cfg.paraphrase), (
        on if cfg.perturbed is None else cfg.perturbed
    )


TEXT_EPOCHS = 10  # MUSE's unlearning runs (muse_bench baselines/scripts/unlearn_bbc.sh)


def text_config(cfg: UnlearnConfig) -> UnlearnConfig:
    """`cfg` as it runs on raw text, or `cfg` itself on QA rows: MUSE's splits for the QA
    defaults (forget10 -> forget, retain90 -> retain1, the retain set MUSE unlearns with), MUSE's
    10 epochs for `--epochs 0` (ULD: from the data, as on QA rows), no QA augmentation and no
    after-run check (both read question/answer rows); a flag or method that needs QA rows is an
    error naming it. ULD's alpha, unless given, is chosen after training as on QA rows, on the
    run's own documents (`uld.defaults.choose_alpha_on_rows`)."""
    if not is_text_data(cfg.data, cfg.data_kind):
        return cfg
    spec = method(cfg.method)
    why = ""
    if spec.pairs_refusals:
        why = (
            f"--method {cfg.method} prefers a refusal of each forget question to its answer; a "
            "raw document asks no question. Use npo, npo+kl, npo+gd, ga+kl, simnpo+gd or uld"
        )
    elif spec.moe:
        why = f"--method {cfg.method} attributes forget answers to experts; use it on QA rows"
    needs_qa = {
        "--paraphrase": cfg.paraphrase,
        "--perturbed": cfg.perturbed,
        "--general": cfg.general,
        "--calibrate": cfg.calibrate,
        "--eval-metric": cfg.eval_metric,
        "--distill": cfg.distill,
        "--augment-from-eval": cfg.augment_from_eval,
        "--strict": cfg.strict,
    }
    given = [flag for flag, value in needs_qa.items() if value]
    if not why and given:
        why = (
            f"{given[0]} works on question/answer rows; drop it on raw text (evaluate the saved "
            "model with uld eval)"
        )
    if why:
        raise ValueError(f"{cfg.data} is raw text (MUSE schema): {why}")
    new = {
        "forget": "forget" if cfg.forget == "forget10" else cfg.forget,
        "retain": "retain1" if cfg.retain == "retain90" else cfg.retain,
        "paraphrase": False,
        "perturbed": False,
        "general": "",
        "check": False,
        # ULD's assistant starts from the target's first layers, 15-20 nats from D'_f: it keeps
        # the data-sized default (`uld.defaults.auto_epochs`, at least 300 steps); MUSE's 10
        # epochs (30 steps on the built-in forget set) left it at 11 nats on D'_f
        "epochs": cfg.epochs or (0.0 if spec.has_alpha else float(TEXT_EPOCHS)),
    }
    print(
        f"[uld] raw text from {cfg.data}: forget {new['forget']}, retain {new['retain']}, chunks "
        f"of <= {cfg.max_length} tokens, "
        + (f"{new['epochs']:g} epochs" if new["epochs"] else "epochs from the data")
        + "; no after-run check (uld eval measures the result)"
    )
    return dataclasses.replace(cfg, **new)


def prepare(cfg: UnlearnConfig) -> Run:
    """Load and set up everything `cfg.method` trains (no training yet)."""
    spec = check(cfg)
    return spec.build(cfg, spec)


def build_assistant(target: str, k: int, rank: int, alpha: float, dropout: float):
    """(peft assistant, tokenizer): the target loaded with its first K layers only, plus LoRA."""
    from peft import get_peft_model

    base, tokenizer = _first_layers(target, k)
    base.config.use_cache = False
    return get_peft_model(base, lora_config(base, k, rank, alpha, dropout)), tokenizer


def _first_layers(target: str, k: int):
    """(model, tokenizer): the target loaded with its first K decoder layers only."""
    from transformers.utils import logging

    verbosity = logging.get_verbosity()
    logging.set_verbosity_error()  # the unused layers K.. are reported as "unexpected" otherwise
    try:
        return load_model(target, num_hidden_layers=k)
    finally:
        logging.set_verbosity(verbosity)


def _training_sets(cfg: UnlearnConfig, target: str) -> tuple[list, list, list, list]:
    """(forget, retain, D_f, D_r) rows: the splits, checked, with the augmentation the method
    and flags ask for (`uld.data.augment`), and `--general` rows added to D_r. On raw text
    (`text_config`): the forget and retain documents, D_f and D_r the same documents."""
    if is_text_data(cfg.data, cfg.data_kind):
        data = load_muse(cfg.data)
        forget, retain = texts(data, cfg.forget), texts(data, cfg.retain)
        check_forget_unseen(forget, f"--forget {cfg.forget}", {f"--retain {cfg.retain}": retain})
        print(
            f"[uld] forget set: {len(forget)} documents ({cfg.forget}); retain set: "
            f"{len(retain)} documents ({cfg.retain})"
        )
        return forget, retain, forget, retain
    forget = load_split(cfg.forget, cfg.data)
    retain = load_split(cfg.retain, cfg.data)
    check_disjoint(forget, retain)
    report_duplicates(forget, f"the forget split {cfg.forget}")
    paraphrase, perturbed = augmentation(cfg)
    if (paraphrase or perturbed) and not cfg.augment_from_eval:
        forget = augmented(forget, retain, cfg.seed)
    d_f = forget_set(forget, paraphrase, cfg.augment_from_eval)
    d_r = retain_set(retain, forget, perturbed, cfg.augment_from_eval)
    n_perturbed = len(d_r) - len(retain)
    sources = general_sources(cfg)
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
    utility on everything, not only the forget set (docs/method.md, "Training length from the
    data": forget01, where 10 epochs see 0.23 passes and M.U. falls to 0.00-0.10, while
    forget10's 10 epochs see 2.0)."""
    return n_f * epochs / max(n_r, 1)


def prepare_uld(cfg: UnlearnConfig, spec: Method) -> Run:
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
        target, k, rank, cfg.lora_alpha or spec.lora_alpha_per_rank * rank, cfg.lora_dropout
    )
    extra = {
        "method": spec.name,
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
    dataset = PairedDataset(
        encode(d_f, tokenizer, cfg.max_length), encode(d_r, tokenizer, cfg.max_length), cfg.seed
    )
    rows = (forget, retain)
    return Run(
        target, assistant, tokenizer, dataset, spec, frozen, extra, k, None, calibration, rows
    )


def calibration_rows(
    cfg: UnlearnConfig, forget: list[dict]
) -> tuple[list[dict], list[dict], list[float] | None]:
    """(forget rows, held-out rows, with --alpha-by-reference the reference's forget truth
    ratios) to choose ULD's alpha on after training, all checked before it."""

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


def prepare_offset(cfg: UnlearnConfig, spec: Method) -> Run:
    """Offset (Huang et al. 2024, delta-unlearning): a baseline's loss on the logits of target +
    offset model, the offset model being the target's first K layers with LoRA (as ULD's
    assistant); at inference the offset's change is added to the target's logits."""
    target = resolve(cfg.model)
    forget, retain, d_f, d_r = _training_sets(cfg, target)
    set_seed(cfg.seed)
    k, rank, n_layers = _assistant_shape(cfg, target)
    model, tokenizer = build_assistant(
        target, k, rank, cfg.lora_alpha or spec.lora_alpha_per_rank * rank, cfg.lora_dropout
    )
    frozen = Frozen(target=load_model(target)[0])
    extra = {"method": cfg.method, "d_f_rows": len(d_f), "d_r_rows": len(d_r), "lora_rank": rank}
    extra |= _report_trainable(
        model,
        f"offset model, {k} of {n_layers} layers, LoRA r={rank}",
        _target_params(model, k, n_layers),
    )
    model.config.use_cache = False
    dataset = _loss_dataset(d_f, d_r, tokenizer, spec, cfg)
    return Run(target, model, tokenizer, dataset, spec, frozen, extra, k, rows=(forget, retain))


def prepare_baseline(cfg: UnlearnConfig, spec: Method) -> Run:
    """A baseline (+GD / +KL) on the target itself, full fine-tuning or LoRA."""
    target = resolve(cfg.model)
    forget, retain, d_f, d_r = _training_sets(cfg, target)
    set_seed(cfg.seed)
    extra: dict = {"method": cfg.method, "d_f_rows": len(d_f), "d_r_rows": len(d_r)}
    model, tokenizer = load_model(target)
    if cfg.lora:  # the reference is the model with its adapters off: no second copy
        from peft import get_peft_model

        rank = cfg.lora_rank or default_lora_rank(model.config.hidden_size)
        alpha = cfg.lora_alpha or spec.lora_alpha_per_rank * rank
        config = lora_config(model, None, rank, alpha, cfg.lora_dropout, experts=True)
        model = get_peft_model(model, config)
        frozen = Frozen()
        extra["lora_rank"] = rank
    else:  # as the target was fine-tuned: the (tied) embeddings stay frozen
        model.get_input_embeddings().weight.requires_grad_(False)
        model.get_output_embeddings().weight.requires_grad_(False)
        frozen = Frozen(ref=load_model(target)[0] if spec.needs_reference else None)
    extra |= _report_trainable(model, f"{cfg.method}, {'LoRA' if cfg.lora else 'full'}")
    model.config.use_cache = False
    dataset = _loss_dataset(d_f, d_r, tokenizer, spec, cfg)
    return Run(target, model, tokenizer, dataset, spec, frozen, extra, 0, rows=(forget, retain))


def check_rmu_layer(layer: int, n_layers: int) -> int:
    """RMU's steered layer for `--rmu-layer` on a target of `n_layers` layers, or a clear error."""
    resolved = rmu_layer(n_layers, layer)
    if not 0 <= resolved < n_layers:
        raise ValueError(
            f"--rmu-layer={layer} is beyond the target's {n_layers} layers; choose one in "
            f"0..{n_layers - 1} (or -1: {rmu_layer(n_layers)})"
        )
    return resolved


def mlp_output(layer: torch.nn.Module, hidden_size: int) -> str:
    """The path, within a decoder layer, of its MLP's output projection (down_proj on Llama,
    Mistral, Qwen2, Gemma, Phi-3): the Linear outside attention that maps back to the hidden
    size."""
    found = [
        n
        for n, m in layer.named_modules()
        if isinstance(m, torch.nn.Linear)
        and m.out_features == hidden_size
        and not any(x in n for x in ("attn", "attention", "lora_", "base_layer"))
    ]
    if len(found) != 1:
        raise UnsupportedModelError(
            f"RMU trains each layer's MLP output projection; {type(layer).__name__} has "
            f"{len(found)} Linear layers outside attention mapping to the hidden size: {found}"
        )
    return found[0]


def prepare_rmu(cfg: UnlearnConfig, spec: Method) -> Run:
    """RMU (Li et al. 2024, WMDP) on the target: the MLP output projections of the steered layer
    and the two below it are trained, as WMDP's rmu/unlearn.py (layers 5-7 of zephyr-7b, param 6:
    mlp.down_proj), fully or with --lora on them. The frozen model is the target's first
    layer + 1 layers (all the objective reads), or with --lora the model with adapters off."""
    target = resolve(cfg.model)
    target_config = AutoConfig.from_pretrained(target)
    layer = check_rmu_layer(cfg.rmu_layer, target_config.num_hidden_layers)
    forget, retain, d_f, d_r = _training_sets(cfg, target)
    set_seed(cfg.seed)
    model, tokenizer = load_model(target)
    trained = list(range(max(0, layer - 2), layer + 1))
    proj = mlp_output(decoder_layers(model)[layer], target_config.hidden_size)
    extra: dict = {"method": cfg.method, "d_f_rows": len(d_f), "d_r_rows": len(d_r)}
    extra |= {"rmu_layer": layer, "rmu_trained_layers": trained, "rmu_projection": proj}
    if cfg.lora:
        from peft import LoraConfig, get_peft_model

        rank = cfg.lora_rank or default_lora_rank(target_config.hidden_size)
        config = LoraConfig(
            r=rank,
            lora_alpha=cfg.lora_alpha or spec.lora_alpha_per_rank * rank,
            lora_dropout=cfg.lora_dropout,
            target_modules=projection_paths(model, {proj.split(".")[-1]}, trained),
            layers_to_transform=trained,
            bias="none",
        )
        model = get_peft_model(model, config)
        frozen = Frozen()
        extra["lora_rank"] = rank
    else:
        model.requires_grad_(False)
        for i in trained:
            decoder_layers(model)[i].get_submodule(proj).weight.requires_grad_(True)
        frozen = Frozen(ref=_first_layers(target, layer + 1)[0])
    what = f"RMU on layer {layer}, {proj} of layers {trained[0]}-{layer}"
    extra |= _report_trainable(model, f"{what}, {'LoRA' if cfg.lora else 'full'}")
    model.config.use_cache = False
    dataset = _loss_dataset(d_f, d_r, tokenizer, spec, cfg)
    return Run(target, model, tokenizer, dataset, spec, frozen, extra, 0, rows=(forget, retain))


def prepare_uoe(cfg: UnlearnConfig, spec: Method) -> Run:
    """UOE on an MoE target: attribute the forget set to experts (UOE Eq. 2), make only the top
    expert(s) and their router trainable, and train with a baseline's loss plus the anchor."""
    target = resolve(cfg.model)
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
    frozen = Frozen(ref=load_model(target)[0] if spec.needs_reference else None)
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
    dataset = _loss_dataset(d_f, d_r, tokenizer, spec, cfg)
    return Run(
        target,
        model,
        tokenizer,
        dataset,
        spec,
        frozen,
        extra,
        0,
        selection.remove,
        rows=(forget, retain),
    )


def encode(rows: list, tokenizer, max_length: int) -> QADataset | TextDataset:
    """Training items: QA rows with answer-only labels, or documents (strings) as chunks of at
    most `max_length` tokens with every token a label."""
    if rows and isinstance(rows[0], str):
        return TextDataset(rows, tokenizer, max_length)
    return QADataset(rows, tokenizer)


def _loss_dataset(d_f, d_r, tokenizer, spec: Method, cfg: UnlearnConfig) -> PairedDataset:
    """Forget items, paired with retain items if the method has a retain term (+gd, +kl) and
    with refusals of the same questions for DPO."""
    return PairedDataset(
        encode(d_f, tokenizer, cfg.max_length),
        encode(d_r, tokenizer, cfg.max_length) if spec.has_retain_term else None,
        seed=cfg.seed,
        idk=QADataset(refusal_set(d_f), tokenizer) if spec.pairs_refusals else None,
    )


def _baselines() -> dict[str, Method]:
    """The ULD paper's nine baselines (GA, DPO, NPO, each alone, +GD or +KL), each also as an
    Offset variant (`offset-<baseline>`) and, on MoE targets, as UOE (`uoe+<baseline>`)."""
    table = {}
    for forget_term in FORGET_TERMS:
        for retain_term in RETAIN_TERMS:
            name = forget_term + (f"+{retain_term}" if retain_term else "")
            terms = {"forget_term": forget_term, "retain_term": retain_term}
            table[name] = Method(
                name,
                partial(baseline_objective, forget_term, retain_term),
                prepare_baseline,
                **terms,
            )
            table[f"offset-{name}"] = Method(
                f"offset-{name}",
                partial(baseline_objective, forget_term, retain_term),
                prepare_offset,
                composite="offset",
                lr=1e-4,
                **terms,
            )
            table[f"uoe+{name}"] = Method(
                f"uoe+{name}",
                partial(uoe_objective, forget_term, retain_term),
                prepare_uoe,
                moe=True,
                **terms,
            )
    return table


# open-unlearning's defaults for its later forget terms (configs/trainer/*.yaml): the weight of
# the forget term (gamma) and the learning rate; UNDIAL's 1e-4 is its paper's (LoRA, Llama-2-7B)
LATER_DEFAULTS = {
    "simnpo": {"forget_weight": 0.125},
    "wga": {},
    "satimp": {"forget_weight": 0.1},
    "undial": {"lr": 1e-4},
    "ceu": {},
}


def _later_methods() -> dict[str, Method]:
    """SimNPO, WGA, SatImp, UNDIAL and CE-U on the target, each alone, +GD or +KL (full
    fine-tuning or --lora, as the baselines), and RMU."""
    table = {}
    for forget_term in LATER_FORGET_TERMS:
        for retain_term in RETAIN_TERMS:
            name = forget_term + (f"+{retain_term}" if retain_term else "")
            table[name] = Method(
                name,
                partial(baseline_objective, forget_term, retain_term),
                prepare_baseline,
                forget_term=forget_term,
                retain_term=retain_term,
                **LATER_DEFAULTS[forget_term],
            )
    table["rmu"] = Method(
        "rmu", rmu_objective, prepare_rmu, forget_term="rmu", retain_term="activations", lr=5e-5
    )
    return table


METHODS: dict[str, Method] = {
    "uld": Method(
        "uld",
        uld_objective,
        prepare_uld,
        retain_term="uniform",
        composite="uld",
        lr=3e-3,  # the paper's 1e-3 left SmolLM2's 8-layer assistant near uniform on D'_f
        lora_lr=3e-3,
        lora_alpha_per_rank=2.0,
        augment=True,
        general="builtin",
        has_alpha=True,
    ),
    **dict(
        sorted(
            _baselines().items(),
            key=lambda kv: (kv[0].startswith("uoe+"), kv[0].startswith("offset-")),
        )
    ),
    **_later_methods(),
}

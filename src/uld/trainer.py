"""One training loop for every method: a `transformers.Trainer` whose loss is the method's
objective (`uld.losses`, chosen by `uld.methods.METHODS`).

Checkpoints, resume, logging, progress bars and multi-GPU (`accelerate launch`) come from the
Trainer. Checkpoints go to a sibling folder `<out>.ckpt` so that the output folder itself only
appears, whole, when training has finished; rerunning the same command resumes from the last
checkpoint there, exactly: the run's settings and data are recorded beside the checkpoints
(`run.json`) and a run with other settings is refused, and everything a step draws (the batch
order, the retain rows paired with it, dropout) is a function of the step, so a run killed at any
point and resumed ends with the same weights, bit for bit, as one never interrupted. A run whose
loss or weights stop being finite is stopped, with its last good checkpoint kept.
"""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.optim.lr_scheduler import LambdaLR
from transformers import Trainer, TrainerCallback, TrainingArguments

from uld import dist
from uld.losses import Frozen, Hyper, Objective, across_processes
from uld.memory import format_memory, run_memory
from uld.outdir import OutputError, write_json

RUN_FILE = "run.json"
CHECKPOINTING = (
    "activation_checkpointing"
    if "activation_checkpointing" in TrainingArguments.__dataclass_fields__
    else "gradient_checkpointing"
)
MAX_CHECKPOINTS = 20


# Why these are refused under DeepSpeed ZeRO-3 (`uld.dist.refuse_zero3`), and what to do instead
ZERO3_EPOCHS = (
    "each epoch's evaluation runs different forward passes on each process's share of the rows, "
    "and the kept epoch's weights would be copied from the main process's shards: leave out "
    "--eval-metric, keeping the last epoch, and evaluate the saved model with `uld eval`"
)
ZERO3_EMA = "it would average each process's shards after every step: leave out --ema"
ZERO3_LORA = (
    "the main process merges the adapters into the model: launch without DeepSpeed, or leave out "
    "--lora"
)


class TrainingDiverged(ValueError):
    """The loss or the weights became NaN or infinite; the message says where and what to do."""


class UnlearnTrainer(Trainer):
    """Trainer whose `compute_loss` is the method's objective on a (paired) batch."""

    def __init__(
        self, *args, objective: Objective, hp: Hyper, frozen: Frozen | None = None, **kwargs
    ):
        super().__init__(*args, **kwargs)
        self.objective, self.hp, self.frozen = objective, hp, frozen or Frozen()
        for m in (self.frozen.ref, self.frozen.target, self.frozen.offset_start):
            if m is not None:
                m.to(self.args.device).eval().requires_grad_(False)
        self._parts: dict[str, list[float]] = {}

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        inner = self.accelerator.unwrap_model(model)
        # (the accelerator puts autocast around the model's forward; objectives call its parts)
        with across_processes(), self.accelerator.autocast():
            if inner is model:
                loss, parts = self.objective(model, inputs, self.hp, self.frozen)
            else:  # DDP / DeepSpeed: through the wrapper's forward, which syncs the gradients
                loss, parts = _through_wrapper(
                    model, inner, lambda: self.objective(inner, inputs, self.hp, self.frozen)
                )
        if not torch.isfinite(loss.detach()).all():
            step = self.state.global_step + 1  # the step being computed
            raise _diverged(self.args, step, f"the loss became {loss.item()}")
        for k, v in parts.items():
            self._parts.setdefault(k, []).append(v)
        return (loss, None) if return_outputs else loss

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        """Linear warm-up and decay, as the Trainer's "linear" schedule, except that the warm-up
        starts above zero: step s (from 0) of w warm-up steps has lr * (s + 1) / (w + 1), so
        the first step already trains (a `--max-steps 1` smoke run changes the weights)."""
        if self.lr_scheduler is None:
            warm, total = self.args.warmup_steps, num_training_steps

            def factor(step: int) -> float:
                if step < warm:
                    return (step + 1) / (warm + 1)
                return max(0.0, (total - step) / max(1, total - warm))

            self.lr_scheduler = LambdaLR(optimizer or self.optimizer, factor)
            self._created_lr_scheduler = True
        return self.lr_scheduler

    def log(self, logs: dict, *args, **kwargs) -> None:
        # (every process logs at the same steps: each part is averaged over the processes,
        # whose values `across_processes` scaled so that their mean is the whole batch's)
        names = sorted(k for k, v in self._parts.items() if v)
        means = [sum(self._parts[k]) / len(self._parts[k]) for k in names]
        if dist.world_size() > 1:
            means = [sum(m) / len(m) for m in zip(*dist.gather(means), strict=True)]
        for k, v in zip(names, means, strict=True):
            logs[k] = round(v, 4)
        self._parts = {}
        super().log(logs, *args, **kwargs)


def _through_wrapper(wrapper, inner: torch.nn.Module, run: Callable):
    """`run()` (an objective on `inner`) called from within `wrapper`'s forward: a
    DistributedDataParallel or DeepSpeed wrapper syncs gradients only for what its forward
    computed, and the objectives call the model's parts (decoder, LM head) themselves."""
    inner.forward = lambda *a, **k: run()
    try:
        return wrapper()
    finally:
        del inner.forward  # the class's forward again


def _diverged(args, step: int, what: str) -> TrainingDiverged:
    """The error for a run whose step `step` (counted from 1) made the loss or weights
    non-finite, naming the checkpoint that is kept."""
    ckpt = Path(args.output_dir)
    kept = sorted(
        (int(c.name.removeprefix("checkpoint-")), c.name)
        for c in ckpt.glob("checkpoint-*")
        if c.name.removeprefix("checkpoint-").isdigit()
    )
    where = (
        f"the last good checkpoint, {kept[-1][1]}, is kept in {ckpt}"
        if kept
        else "no checkpoint had been saved yet"
    )
    return TrainingDiverged(
        f"training diverged at step {step}: {what}. Nothing was saved as the output; {where}. "
        f"Lower --lr (now {args.learning_rate:g}) and rerun with --overwrite"
    )


class FiniteCheck(TrainerCallback):
    """Stops training when a trainable weight is NaN or infinite after an optimizer step (the
    loss is checked in `compute_loss`): such a model would be saved, and generate nothing."""

    def on_step_end(self, args, state, control, model=None, **kwargs):
        for n, p in _trainable(model):
            if not torch.isfinite(p.detach()).all():
                raise _diverged(args, state.global_step, f"weight {n} is no longer finite")


class PairingEpoch(TrainerCallback):
    """Tells a dataset with `set_epoch` (PairedDataset) which epoch is starting, so the retain
    rows it pairs are a function of (epoch, index), also in a resumed run."""

    def __init__(self, dataset):
        self.dataset = dataset

    def on_epoch_begin(self, args, state, control, **kwargs):
        # state.epoch is the loop's epoch here: k.0 after k whole epochs, or k.x when resuming
        # in epoch k
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(int((state.epoch or 0) + 1e-9))


def _rng_states() -> dict:
    import random

    import numpy as np

    states = {"python": random.getstate(), "numpy": np.random.get_state()}
    states["torch"] = torch.get_rng_state()
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def _set_rng_states(states: dict) -> None:
    import random

    import numpy as np

    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])
    if "cuda" in states:
        torch.cuda.set_rng_state_all(states["cuda"])


class WeightAverage(TrainerCallback):
    """An exponential moving average of the trainable weights: after every optimizer step
    `avg <- decay * avg + (1 - decay) * w` (Polyak averaging), starting from the initial weights.

    Adam moves every weight by about the learning rate per step whatever the gradient, so the
    model at any one step is noisy; ULD's truth ratios swing widely between epochs. `applied(m)`
    swaps the average into `m` for a while (evaluation, saving); `finish(m)` leaves it there.
    The average is saved in each checkpoint (`ema.safetensors`) and read back on resume.
    """

    FILE = "ema.safetensors"

    def __init__(self, model: torch.nn.Module, decay: float):
        dist.refuse_zero3({"averaging the weights": ZERO3_EMA})
        self.decay = decay
        self.avg = {n: p.detach().clone() for n, p in _trainable(model)}
        self.resumed: bool | None = None

    def on_step_begin(self, args, state, control, **kwargs):
        if self.resumed is None:  # the first step: a resumed run reads its average so far
            saved = _in_checkpoint(args, state, self.FILE)
            self.resumed = bool(state.global_step) and saved.exists()
            if self.resumed:
                from safetensors.torch import load_file

                for n, v in load_file(str(saved)).items():
                    self.avg[n].copy_(v)

    @torch.no_grad()
    def on_step_end(self, args, state, control, model=None, **kwargs):
        for n, p in _trainable(model):
            self.avg[n].lerp_(p.detach(), 1 - self.decay)

    def on_save(self, args, state, control, **kwargs):
        from safetensors.torch import save_file

        if not state.is_world_process_zero:
            return
        path = _in_checkpoint(args, state, self.FILE)
        tmp = path.with_name(f"{self.FILE}.tmp")  # whole or absent: a resume never reads half of it
        save_file({n: v.contiguous() for n, v in self.avg.items()}, str(tmp))
        tmp.replace(path)

    @contextlib.contextmanager
    def applied(self, model: torch.nn.Module):
        self._swap(model)
        try:
            yield model
        finally:
            self._swap(model)

    @torch.no_grad()
    def finish(self, model: torch.nn.Module) -> None:
        for n, p in _trainable(model):
            p.copy_(self.avg[n])

    @torch.no_grad()
    def _swap(self, model: torch.nn.Module) -> None:
        for n, p in _trainable(model):
            tmp = p.detach().clone()
            p.copy_(self.avg[n])
            self.avg[n].copy_(tmp)


class Stopwatch(TrainerCallback):
    """Wall-clock seconds of a run across resumes: the seconds so far are saved in each
    checkpoint (`stopwatch.json`) and read back when a run resumes from it, so an interrupted
    run's time is the sum of its parts (work after the last checkpoint, redone, counts once).
    Time spent inside `aside()` (the per-epoch evaluations) is summed apart, also across
    resumes, so `training_seconds()` is the time spent training alone."""

    FILE = "stopwatch.json"

    def __init__(self):  # made just before the Trainer: its set-up counts
        self.start, self.before, self.resumed = time.time(), 0.0, None
        self.set_aside = 0.0  # seconds spent in `aside()`, all resumes together

    def on_train_begin(self, args, state, control, **kwargs):
        # the Trainer has restored global_step from the checkpoint it resumes (also one at the
        # last step, where no step follows)
        if state.global_step:
            self._resume(args, state)

    def on_step_begin(self, args, state, control, **kwargs):
        if self.resumed is None:  # the first step, if training began before global_step was set
            self._resume(args, state)

    def _resume(self, args, state) -> None:
        saved = _in_checkpoint(args, state, self.FILE)
        self.resumed = bool(state.global_step) and saved.exists()
        if self.resumed:
            kept = json.loads(saved.read_text())
            self.before, self.set_aside = kept["seconds"], kept.get("aside", 0.0)

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            kept = {"seconds": round(self.seconds(), 3), "aside": round(self.set_aside, 3)}
            write_json(kept, _in_checkpoint(args, state, self.FILE))

    def seconds(self) -> float:
        """Wall time so far, evaluations included."""
        return self.before + time.time() - self.start

    def training_seconds(self) -> float:
        """Wall time so far less the time spent in `aside()`."""
        return self.seconds() - self.set_aside

    @contextlib.contextmanager
    def aside(self):
        """Time spent in this block is not training time."""
        start = time.time()
        try:
            yield
        finally:
            self.set_aside += time.time() - start


def _in_checkpoint(args, state, name: str) -> Path:
    """`name` in the checkpoint of the current step: where `on_save` writes it, and where a
    resumed run's first step finds it."""
    return Path(args.output_dir) / f"checkpoint-{state.global_step}" / name


def _trainable(model: torch.nn.Module):
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]


class EpochEval(TrainerCallback):
    """Runs `evaluate(model) -> dict` after each epoch (or every `every` epochs and after the
    last one); keeps the best epoch by `metric`: its trainable weights go to the folder `best`
    (`save_trainable`; `load_trainable` puts them back after training) whenever an epoch beats
    the best so far, and `on_best(model, epoch, scores)` is called then if given. The
    history (one dict per epoch) is in `self.history`; with `state`, it is also written to that
    JSON file after every epoch and read back at the start, so a resumed run still knows which
    epoch was best (and does not overwrite the kept weights with a worse epoch). With `average`
    (a WeightAverage), each epoch's averaged weights are evaluated and kept instead.

    Each epoch's dict holds its scores, `epoch`, `step` (optimizer steps so far) and, with the
    run's Stopwatch in `watch` (`train` sets it), `train_seconds`: the run's wall time to the end
    of that epoch less the time of every evaluation (which the watch sets aside), across resumes.

    `floor` = (key, least): only epochs with scores[key] >= least are candidates (say, Model
    Utility no lower than 0.95 of the target's); while none is, the epoch with the highest
    scores[key] is kept, and any epoch that reaches the floor replaces it.
    """

    def __init__(
        self,
        evaluate: Callable[[torch.nn.Module], dict],
        metric: str,
        best: str | Path,
        mode: str = "max",
        state: str | Path | None = None,
        average: WeightAverage | None = None,
        every: int = 1,
        floor: tuple[str, float] | None = None,
        on_best: Callable[[torch.nn.Module, int, dict], None] | None = None,
    ):
        dist.refuse_zero3({"evaluating each epoch to keep one": ZERO3_EPOCHS})
        self.evaluate, self.metric, self.best_dir, self.mode = evaluate, metric, Path(best), mode
        self.on_best = on_best
        self.average, self.every, self.floor = average, every, floor
        self.state = Path(state) if state else None
        self.history: list[dict] = []
        self.watch: Stopwatch | None = None  # the run's, set by `train`
        self.best: float | None = None
        self.best_epoch: int | None = None
        if self.state and self.state.exists():
            kept = json.loads(self.state.read_text())
            self.history, self.best, self.best_epoch = kept["history"], kept["best"], kept["epoch"]

    def on_epoch_end(self, args, state, control, model=None, **kwargs):
        epoch = round(state.epoch or 0)
        if epoch % self.every and epoch < math.ceil(args.num_train_epochs):
            return control
        timing: dict = {"step": state.global_step}
        if self.watch is not None:
            timing["train_seconds"] = round(self.watch.training_seconds(), 2)
        aside = self.watch.aside() if self.watch is not None else contextlib.nullcontext()
        weights = self.average.applied(model) if self.average else contextlib.nullcontext()
        with aside, weights:
            self._epoch_end(state, model, timing)
        return control

    def _epoch_end(self, state, model, timing: dict) -> None:
        model.eval()
        rng = _rng_states()  # evaluating must not change what training draws next
        try:
            with torch.no_grad():
                scores = self.evaluate(model)
        finally:
            _set_rng_states(rng)
        model.train()
        epoch = round(state.epoch or 0)
        scores = {"epoch": epoch, **timing, **scores}
        kept = self.kept()
        # an epoch evaluated before an interruption but not checkpointed is evaluated again
        self.history = [h for h in self.history if h["epoch"] != epoch] + [scores]
        print(f"[uld] epoch {epoch}: " + ", ".join(f"{k}={v:.4g}" for k, v in scores.items()))
        if not self.meets_floor(scores):
            key, least = self.floor
            print(f"[uld] epoch {epoch}: {key} below {least:.4g}, not a candidate for best")
        # every process evaluates the same weights; the main one writes
        main = state.is_world_process_zero
        if kept is None or self._rank(scores) > self._rank(kept):
            self.best, self.best_epoch = scores[self.metric], epoch
            if main:
                save_trainable(model, self.best_dir)
            if self.on_best is not None and main:
                self.on_best(model, epoch, scores)
        if self.state and main:
            write_json(
                {"history": self.history, "best": self.best, "epoch": self.best_epoch}, self.state
            )

    def kept(self) -> dict | None:
        """The scores of the epoch kept so far (None before the first evaluation)."""
        return next((h for h in self.history if h["epoch"] == self.best_epoch), None)

    def meets_floor(self, scores: dict) -> bool:
        if self.floor is None:
            return True
        key, least = self.floor
        return scores.get(key) is not None and scores[key] >= least

    def _rank(self, scores: dict) -> tuple[int, float]:
        """Higher is better: epochs on or above the floor by the metric, then the rest by the
        floor's key."""
        if self.meets_floor(scores):
            value = scores[self.metric]
            return (1, value if self.mode == "max" else -value)
        v = scores.get(self.floor[0])
        return (0, -math.inf if v is None else v)


def whole_weights(trainer: Trainer) -> dict | None:
    """The trained model's state dict, whole, to save: under DeepSpeed ZeRO-3 (`uld.dist.zero3`)
    each process holds a shard of every weight, and accelerate's `Accelerator.get_state_dict`
    gathers them, in 16 bits, on the main process (the others get an empty dict); it is a
    collective, so every process must call this. Otherwise None: the model in memory is whole."""
    if not dist.zero3():
        return None
    return trainer.accelerator.get_state_dict(trainer.model_wrapped)


def save_trainable(model: torch.nn.Module, folder: Path) -> None:
    """The trainable weights of `model` (a peft model's adapter, or the parameters that require
    grad) into `folder`."""
    if hasattr(model, "peft_config"):
        model.save_pretrained(folder)
        return
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    state = {n: p.detach().contiguous() for n, p in _trainable(model)}
    save_file(state, str(folder / "model.safetensors"))


def load_trainable(model: torch.nn.Module, folder: Path) -> None:
    """Put the weights `save_trainable` wrote into `folder` back into `model`."""
    from safetensors.torch import load_file

    if (folder / "adapter_model.safetensors").exists():
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(model, load_file(str(folder / "adapter_model.safetensors")))
        return
    state = load_file(str(folder / "model.safetensors"))
    missing = set(dict(model.named_parameters())) - set(state)
    model.load_state_dict(state, strict=False)
    if missing - {n for n, p in model.named_parameters() if not p.requires_grad}:
        raise RuntimeError(f"best-epoch weights lack {sorted(missing)[:3]}")


def checkpoint_dir(out: str | Path) -> Path:
    out = Path(out)
    return out.parent / f"{out.name}.ckpt"


def last_checkpoint(out: str | Path, set_aside: bool = False) -> Path | None:
    """The newest checkpoint of the run at `out` that was saved whole, or None.

    The Trainer writes `trainer_state.json` last, so a checkpoint without it (or with it cut
    short) is one whose saving was interrupted: a full disk, a killed process. Resuming from it
    would fail; the previous checkpoint is still there (the Trainer deletes it only after the
    new one is saved), so resume from that. With `set_aside`, such partial checkpoints are
    renamed `incomplete-checkpoint-N`, out of the Trainer's sight, and said so.
    """
    ckpt = checkpoint_dir(out)
    found = sorted(
        (int(step), c)
        for c in ckpt.glob("checkpoint-*")
        if c.is_dir() and (step := c.name.removeprefix("checkpoint-")).isdigit()
    )
    complete = None
    for _, c in found:
        try:
            json.loads((c / "trainer_state.json").read_text())
            complete = c
        except (OSError, ValueError):
            if set_aside:
                with contextlib.suppress(FileNotFoundError):  # another process moved it first
                    c.rename(c.with_name("incomplete-" + c.name))
                print(f"[uld] {c} was not saved whole (no readable trainer_state.json); set aside")
    return complete


def claim_checkpoints(out: str | Path, settings: dict, overwrite: bool = False) -> None:
    """Record `settings` (what defines the run: model, data fingerprint, method,
    hyperparameters) in `<out>.ckpt/run.json`, or check them against the record there: a
    checkpoint of another run is never resumed. With `overwrite`, another run's checkpoints are
    removed instead (only a folder that uld's record or checkpoints mark as uld's)."""
    ckpt = checkpoint_dir(out)
    record = ckpt / RUN_FILE
    settings = json.loads(json.dumps(settings, default=str))  # as it reads back from the file
    remove = False
    if ckpt.exists() and any(ckpt.iterdir()):
        try:
            saved = json.loads(record.read_text())
        except (OSError, ValueError):
            saved = None
        if saved != settings:
            ours = record.exists() or any(ckpt.glob("checkpoint-*"))
            if not (overwrite and ours):
                raise OutputError(_mismatch(ckpt, saved, settings, ours))
            remove = True
    dist.barrier()  # every process has read the record before the main one changes it
    if dist.is_main():
        if remove:
            shutil.rmtree(ckpt)
            print(f"[uld] --overwrite: removed the checkpoints of another run in {ckpt}")
        write_json(settings, record)
    dist.barrier()


def _mismatch(ckpt: Path, saved: dict | None, settings: dict, ours: bool) -> str:
    if not ours:
        return (
            f"{ckpt} is where uld keeps this run's checkpoints, but it holds files uld did not "
            "write; move them away or choose another --out"
        )
    if saved is None:
        what = "no record of its settings"
    else:
        keys = sorted(k for k in set(saved) | set(settings) if saved.get(k) != settings.get(k))
        what = "; ".join(
            f"{k} {_short(saved.get(k))} there, {_short(settings.get(k))} now" for k in keys[:6]
        )
    return (
        f"{ckpt} holds checkpoints of a different run ({what}), which uld will not resume: pass "
        "--overwrite to discard them and start this run afresh, or choose another --out"
    )


def _short(v) -> str:
    s = json.dumps(v, default=str)
    return s if len(s) <= 40 else s[:37] + "..."


def train(
    model: torch.nn.Module,
    dataset,
    collator,
    out: str | Path,
    objective: Objective,
    hp: Hyper | None = None,
    frozen: Frozen | None = None,
    epochs: float = 5,
    lr: float = 1e-4,
    batch_size: int = 8,
    grad_accum: int = 1,
    seed: int = 0,
    weight_decay: float = 0.01,
    callbacks: list[TrainerCallback] | None = None,
    max_steps: int = -1,
    settings: dict | None = None,
    overwrite: bool = False,
    precision: str = "auto",
    gradient_checkpointing: bool = False,
) -> UnlearnTrainer:
    """Train `model` in place with `objective`; resumes from `<out>.ckpt` if its recorded
    `settings` are these (`claim_checkpoints`). The returned trainer's `stopwatch.seconds()` is
    the run's wall time over all its resumes.

    `batch_size` is the batch of one optimizer step over all processes (`uld.dist`): each of W
    processes takes batch_size / W rows of it, so a run on W processes takes the same steps as
    on one. `precision`: "auto" (bf16 mixed precision on a GPU that has bf16, else fp32), "bf16",
    "fp16" or "fp32" (`check_precision`). `gradient_checkpointing`: recompute each layer's
    activations in the backward pass instead of keeping them (less memory, about a third more
    compute)."""
    ckpt = checkpoint_dir(out)
    world = dist.world_size()
    if batch_size % world:
        raise ValueError(
            f"--batch-size {batch_size} is the batch over all {world} processes and must split "
            f"evenly among them: choose a multiple of {world}"
        )
    mixed = check_precision(precision)
    claim_checkpoints(out, settings or {}, overwrite)
    held = frozen or Frozen()
    mem = run_memory(model, [held.ref, held.target, held.offset_start])
    print(f"[uld] expected training memory per process: {format_memory(mem)}")
    steps_per_epoch = math.ceil(len(dataset) / (batch_size * grad_accum))
    total = max_steps if max_steps > 0 else math.ceil(steps_per_epoch * epochs)
    # a checkpoint every epoch, or every `every` epochs when there are many: at most about
    # MAX_CHECKPOINTS per run (a small forget set trains for hundreds of 1-2 step epochs, and
    # each checkpoint writes the weights and the optimizer's state)
    every = max(1, int(epochs // MAX_CHECKPOINTS))
    args = TrainingArguments(
        output_dir=str(ckpt),
        per_device_train_batch_size=batch_size // world,
        gradient_accumulation_steps=grad_accum,
        num_train_epochs=epochs,
        max_steps=max_steps,
        learning_rate=lr,
        weight_decay=weight_decay,
        warmup_steps=max(1, total // 10),
        lr_scheduler_type="linear",
        logging_steps=max(1, min(10, steps_per_epoch)),
        save_strategy="epoch" if every == 1 else "steps",
        save_steps=every * steps_per_epoch,
        save_total_limit=1,
        report_to="none",
        seed=seed,
        data_seed=seed,
        use_cpu=not torch.cuda.is_available(),
        bf16=mixed == "bf16",
        fp16=mixed == "fp16",
        **{  # (transformers >= 5.20 calls it activation checkpointing)
            CHECKPOINTING: gradient_checkpointing,
            f"{CHECKPOINTING}_kwargs": {"use_reentrant": False} if gradient_checkpointing else None,
        },
        ddp_backend=None if torch.cuda.is_available() or world == 1 else "gloo",
        remove_unused_columns=False,
        dataloader_num_workers=0,
        disable_tqdm=False,
    )
    trainer = UnlearnTrainer(
        model=model,
        args=args,
        train_dataset=dataset,
        data_collator=collator,
        objective=objective,
        hp=hp or Hyper(),
        frozen=frozen,
        callbacks=[watch := Stopwatch(), FiniteCheck(), PairingEpoch(dataset), *(callbacks or [])],
    )
    trainer.stopwatch = watch
    for callback in callbacks or []:
        if isinstance(callback, EpochEval):  # its history times the training between epochs
            callback.watch = watch
    if dist.is_main():  # sets incomplete checkpoints aside before the others look
        last_checkpoint(out, set_aside=True)
    dist.barrier()
    resume = last_checkpoint(out)
    if resume:
        print(f"[uld] resuming from the last checkpoint, {resume}")
    trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    return trainer


PRECISIONS = ("auto", "bf16", "fp16", "fp32")


def check_precision(precision: str) -> str:
    """The mixed precision `precision` resolves to here ("bf16", "fp16" or "" for none), or a
    clear error where this machine cannot run it: "auto" is bf16 on a GPU that has it, else
    fp32; bf16 needs a GPU with bf16 (Ampere or newer) or a CPU (torch runs bf16 there, slowly);
    fp16 needs a GPU."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
    cuda = torch.cuda.is_available()
    if precision == "auto":
        return "bf16" if cuda and torch.cuda.is_bf16_supported() else ""
    if precision == "bf16" and cuda and not torch.cuda.is_bf16_supported():
        name = torch.cuda.get_device_name()
        raise ValueError(
            f"--bf16: this GPU ({name}) has no bfloat16 (it needs compute capability 8.0, "
            "Ampere, or newer); use --fp16 instead"
        )
    if precision == "fp16" and not cuda:
        raise ValueError(
            "--fp16 mixed precision needs a GPU (no CUDA device here); use --bf16 on a CPU, or "
            "leave both out for fp32"
        )
    return "" if precision == "fp32" else precision


def remove_checkpoints(out: str | Path) -> None:
    shutil.rmtree(checkpoint_dir(out), ignore_errors=True)

"""Continuous batching: one decode worker that runs every request in flight as one batch.

    batcher = Batcher(model, tokenizer)      # a plain model or a ULDModel
    batcher.start()
    batcher.submit(Job(prompt_ids, max_tokens=64, emit=print))   # from any thread
    batcher.close()

The worker thread owns the model. Each step it feeds every active request's last token through
one forward pass with one shared, left-padded KV cache. A new request is prefilled alone (exactly
as `uld.logit_diff.decode` would run it) and its cache is spliced into the running batch at the
next step boundary; a finished or cancelled request's rows are cut out, and the padding columns
no row needs any more are trimmed. Positions come from the attention mask, so padding never
shifts a row: each request's logits are those it gets decoded alone, up to float rounding in
the batched matmuls (its greedy tokens are tested equal, tests/test_serve.py).

A ULDModel's cache holds the doubled batch in its first K layers (rows [0, B) the target's,
[B, 2B) the assistant's; see `uld.logit_diff`) and B rows in the rest; every splice and cut
works on each layer's row blocks. Per request, ULD's alpha and filter may differ from the
model's own: the pass returns the target's and the assistant's logits and those rows are
combined again with their own settings.

Models whose cache is not a plain full-attention `DynamicLayer` per layer (sliding windows,
linear attention) are served one request at a time, still through the same loop.
"""

from __future__ import annotations

import inspect
import queue
import random
import threading
import traceback
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from transformers import DynamicCache, LogitsProcessorList
from transformers.cache_utils import DynamicLayer
from transformers.generation.logits_process import TemperatureLogitsWarper, TopPLogitsWarper

from uld.assistant import base_lm
from uld.logit_diff import CACHE_ARG, ULDModel, logit_difference


@dataclass
class Event:
    """What the worker reports for a job: new text; at the end also `finish` ("stop" at EOS or
    a stop string, "length" at max_tokens) or `error`. `tokens`: tokens generated so far."""

    text: str = ""
    finish: str | None = None
    error: str | None = None
    tokens: int = 0


@dataclass
class Job:
    """One request. `emit` is called from the worker thread with each `Event`.
    `alpha`/`filter`: ULD settings for this request (None: the model's own)."""

    prompt: list[int]
    max_tokens: int
    emit: Callable[[Event], None]
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    alpha: float | None = None
    filter: float | None = None
    cancelled: bool = False  # set by the client's side; the worker drops the job's rows
    tokens: list[int] = field(default_factory=list)
    sent: int = 0  # characters of the answer already emitted
    generator: torch.Generator | None = None
    warpers: LogitsProcessorList | None = None

    def cancel(self) -> None:
        self.cancelled = True


class Batcher:
    """The decode worker (see the module docstring). `max_batch`: most requests decoded
    together; the rest wait in arrival order."""

    def __init__(self, model, tokenizer, max_batch: int = 32):
        if max_batch < 1:
            raise ValueError(f"max_batch={max_batch} must be >= 1")
        self.model, self.tokenizer, self.max_batch = model, tokenizer, max_batch
        self.uld = isinstance(model, ULDModel)
        net = base_lm(model.target if self.uld else model)
        self.config = net.config
        self.device = next(model.parameters()).device
        gen_cfg = getattr(net, "generation_config", None)
        eos = getattr(gen_cfg, "eos_token_id", None) or self.config.eos_token_id  # as `decode`
        self.eos = set(eos if isinstance(eos, list) else [eos])
        self.batchable: bool | None = None  # known after the first prefill
        self.peak = 0  # the most requests decoded together so far
        if self.uld:
            self._last = lambda ids: {
                "keep": _last_column(ids),
                "return_both": True,
                "decoding": True,
            }
        elif "logits_to_keep" in inspect.signature(net.forward).parameters:
            self._last = lambda ids: {"logits_to_keep": 1}
        else:
            self._last = lambda ids: {}
        self.tokenizer_lock = threading.Lock()  # fast tokenizers must not be used concurrently
        self.pending: queue.Queue[Job] = queue.Queue()
        self.jobs: list[Job] = []
        self.cache: DynamicCache | None = None
        self.mask: torch.Tensor | None = None  # [B, cache length]
        self._closing = threading.Event()
        self._submitting = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="uld-decode", daemon=True)

    # --- the client's side --------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def submit(self, job: Job) -> None:
        with self._submitting:
            if self._closing.is_set():
                raise RuntimeError("the server is shutting down")
            self.pending.put(job)

    def close(self, timeout: float = 30.0) -> None:
        """Stop the worker; jobs still running or waiting get an error event."""
        self._closing.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    @property
    def active(self) -> int:
        return len(self.jobs)

    @property
    def waiting(self) -> int:
        return self.pending.qsize()

    # --- the worker ---------------------------------------------------------------------------
    def _run(self) -> None:
        with torch.inference_mode():
            while not self._closing.is_set():
                try:
                    self._admit()
                    if self.jobs:
                        self._step()
                except Exception as e:  # a failed pass ends the jobs in it, not the server
                    traceback.print_exc()
                    self._fail(self.jobs, f"decoding failed: {type(e).__name__}: {e}")
        with self._submitting:  # nothing joins the queue after this
            waiting = []
            while not self.pending.empty():
                waiting.append(self.pending.get_nowait())
        self._fail(self.jobs + waiting, "the server is shutting down")

    def _admit(self) -> None:
        """Prefill waiting jobs alone and splice them into the batch, up to max_batch."""
        if not self.jobs:
            try:
                job = self.pending.get(timeout=0.1)
            except queue.Empty:
                return
            self._join(job)
        while len(self.jobs) < (self.max_batch if self.batchable else 1):
            try:
                job = self.pending.get_nowait()
            except queue.Empty:
                return
            self._join(job)

    def _join(self, job: Job) -> None:
        if job.cancelled:
            return
        try:
            self._prefill(job)
        except Exception as e:  # this request fails; the batch runs on
            traceback.print_exc()
            job.emit(Event(error=f"decoding failed: {type(e).__name__}: {e}"))

    def _prefill(self, job: Job) -> None:
        seed = job.seed if job.seed is not None else random.getrandbits(63)
        job.generator = torch.Generator(device=self.device).manual_seed(seed)
        job.warpers = LogitsProcessorList()
        if job.temperature not in (0.0, 1.0):
            job.warpers.append(TemperatureLogitsWarper(job.temperature))
        if job.temperature and job.top_p < 1.0:
            job.warpers.append(TopPLogitsWarper(job.top_p))
        ids = torch.tensor([job.prompt], device=self.device)
        mask = torch.ones_like(ids)
        cache = DynamicCache(config=self.config)
        logits = self._forward([job], ids, mask, cache)
        if self.batchable is None:
            self.batchable = all(type(layer) is DynamicLayer for layer in cache.layers)
        if self._advance(job, logits[0]):
            return
        if not self.jobs:
            self.jobs, self.cache, self.mask = [job], cache, mask
            self.peak = max(self.peak, 1)
            return
        _splice(self.cache, len(self.jobs), cache)
        width = max(self.mask.shape[1], mask.shape[1])
        self.mask = torch.cat([_pad_left(self.mask, width), _pad_left(mask, width)])
        self.jobs.append(job)
        self.peak = max(self.peak, len(self.jobs))

    def _step(self) -> None:
        self._keep([i for i, job in enumerate(self.jobs) if not job.cancelled])
        if not self.jobs:
            return
        ids = torch.tensor([[job.tokens[-1]] for job in self.jobs], device=self.device)
        self.mask = torch.cat([self.mask, torch.ones_like(ids)], dim=1)
        logits = self._forward(self.jobs, ids, self.mask, self.cache)
        done = [self._advance(job, row) for job, row in zip(self.jobs, logits, strict=True)]
        self._keep([i for i, d in enumerate(done) if not d])

    def _forward(self, jobs: list[Job], ids, mask, cache) -> torch.Tensor:
        """Next-token logits [B, V] (float32) for `ids` [B, T] after `cache`, each row with its
        job's ULD settings."""
        position_ids = (mask.cumsum(-1) - 1).clamp(min=0)[:, -ids.shape[1] :]
        kw = {CACHE_ARG: cache, "use_cache": True, **self._last(ids)}
        own = [job.alpha is None and job.filter is None for job in jobs]
        if not self.uld or all(own):
            out = self.model(input_ids=ids, attention_mask=mask, position_ids=position_ids, **kw)
            return out.logits if out.logits.dim() == 2 else out.logits[:, -1, :].float()
        model = self.model
        if model.mode == "offset":  # l_o - l_o0 from a pass at alpha 1, then each row's alpha
            with _alpha(model, 1.0):
                out = model(input_ids=ids, attention_mask=mask, position_ids=position_ids, **kw)
            l_t = out.parts[0].float()
            alphas = [model.alpha if job.alpha is None else job.alpha for job in jobs]
            return l_t + torch.tensor(alphas, device=l_t.device)[:, None] * (out.logits - l_t)
        out = model(input_ids=ids, attention_mask=mask, position_ids=position_ids, **kw)
        logits, (l_t, l_a) = out.logits.clone(), out.parts
        for i, job in enumerate(jobs):
            if not own[i]:
                alpha = model.alpha if job.alpha is None else job.alpha
                filter = model.filter if job.filter is None else job.filter
                logits[i] = logit_difference(
                    l_t[i], l_a[i], alpha, filter, model.combine, decoding=True
                )
        return logits

    def _advance(self, job: Job, logits: torch.Tensor) -> bool:
        """Choose the job's next token from its logits [V], emit the text that is now certain;
        True when the job is finished."""
        if job.temperature == 0:
            token = int(logits.argmax())
        else:  # as `decode` samples: the warpers, then one draw from the job's own generator
            probs = torch.softmax(job.warpers(None, logits[None].float()), dim=-1)
            token = int(torch.multinomial(probs, 1, generator=job.generator))
        job.tokens.append(token)
        finish = (
            "stop" if token in self.eos else "length" if len(job.tokens) >= job.max_tokens else None
        )
        with self.tokenizer_lock:
            text = self.tokenizer.decode(job.tokens, skip_special_tokens=True)
        cuts = [i for s in job.stop if (i := text.find(s)) >= 0]
        if cuts:
            text, finish = text[: min(cuts)], "stop"
        if finish:
            job.emit(Event(text[job.sent :], finish=finish, tokens=len(job.tokens)))
            return True
        # Hold back what could still become a stop string, and a trailing incomplete character.
        safe = len(text) - max((len(s) - 1 for s in job.stop), default=0)
        while safe > job.sent and text[safe - 1] == "\ufffd":
            safe -= 1
        if safe > job.sent:
            job.emit(Event(text[job.sent : safe], tokens=len(job.tokens)))
            job.sent = safe
        return False

    def _keep(self, rows: list[int]) -> None:
        """Keep only these rows of the batch; trim padding columns no row needs any more."""
        if len(rows) == len(self.jobs):
            return
        if not rows:
            self.jobs, self.cache, self.mask = [], None, None
            return
        idx = torch.tensor(rows, device=self.device)
        mask = self.mask[idx]
        start = int(mask.any(dim=0).int().argmax())  # the first column some row attends to
        for layer in _layers(self.cache):
            blocks = layer.keys.shape[0] // len(self.jobs)
            sel = torch.cat([idx + b * len(self.jobs) for b in range(blocks)])
            layer.keys = layer.keys[sel, :, start:]
            layer.values = layer.values[sel, :, start:]
        self.jobs = [self.jobs[i] for i in rows]
        self.mask = mask[:, start:]

    def _fail(self, jobs: list[Job], message: str) -> None:
        """End these jobs with an error; the batch starts afresh (waiting jobs stay queued)."""
        self.jobs, self.cache, self.mask = [], None, None
        for job in jobs:
            job.emit(Event(error=message, tokens=len(job.tokens)))


def _last_column(ids: torch.Tensor) -> torch.Tensor:
    keep = torch.zeros_like(ids, dtype=torch.bool)
    keep[:, -1] = True
    return keep


@contextmanager
def _alpha(model: ULDModel, alpha: float):
    old = model.alpha
    model.alpha = alpha
    try:
        yield
    finally:
        model.alpha = old


def _layers(cache: DynamicCache) -> list[DynamicLayer]:
    return [layer for layer in cache.layers if layer.is_initialized]


def _pad_left(x: torch.Tensor, width: int, dim: int = -1) -> torch.Tensor:
    """x with zeros prepended along `dim` (the last, or -2 for a KV tensor) up to `width`."""
    n = width - x.shape[dim]
    if n == 0:
        return x
    return F.pad(x, (0, 0, n, 0) if dim == -2 else (n, 0))


def _splice(cache: DynamicCache, B: int, new: DynamicCache) -> None:
    """Append `new`'s rows to `cache` (B requests), layer by layer: each layer's tensors
    [blocks * B, H, T, D] are split into their row blocks (the target's and, in a ULD model's
    first K layers, the assistant's), left-padded to a common length and joined block by
    block, so the rows stay [target rows..., assistant rows...]."""
    for layer, add in zip(_layers(cache), _layers(new), strict=True):
        blocks = layer.keys.shape[0] // B
        b = add.keys.shape[0] // blocks
        width = max(layer.keys.shape[-2], add.keys.shape[-2])
        for name in ("keys", "values"):
            old, extra = (
                _pad_left(getattr(layer, name), width, -2),
                _pad_left(getattr(add, name), width, -2),
            )
            joined = torch.cat(
                [old.unflatten(0, (blocks, B)), extra.unflatten(0, (blocks, b))], dim=1
            )
            setattr(layer, name, joined.flatten(0, 1))

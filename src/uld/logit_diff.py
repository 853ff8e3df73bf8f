"""The ULD model: the target's logits minus alpha times the assistant's (ULD paper, Eq. 2),
applied only on tokens the target finds plausible: S = {v : p_t(v) >= filter * max p_t} together
with the target's floor(filter * V) most likely tokens (V the vocabulary size):

    l_f(v) = l_t(v) - alpha * l_a(v) + c    for v in S
    l_f(v) = l_t(v)                         elsewhere
    c = logsumexp_S(l_t) - logsumexp_S(l_t - alpha * l_a)

The constant c keeps the probability mass the target puts on S: the logit difference reorders the
plausible tokens among themselves and leaves every other token's probability exactly the target's.
Without it (adding -alpha * log_softmax(l_a), always >= 0, on S only) the plausible set gains up to
alpha * log V nats as a block, so every implausible token - the wrong facts of a perturbed answer,
say - becomes e^(alpha * log V) times less likely, which moves the truth ratio for reasons unrelated
to forgetting (measured: docs/method.md, "The combination keeps the target's mass on S"). c also
makes the result independent of the assistant's arbitrary logit offset, and alpha = 0 returns the
target's logits bit for bit. The filter is DoLa's relative-top filter (Li et al. 2023) with the ULD
code's floor on its size (`min_tokens_to_keep = relative_top * V` in the authors'
`relative_top_filter`; 320 tokens for Llama-2 at the paper's 1e-2). Without that floor a target sure
of a memorised answer has S = {that token} at every fact token, the subtraction cannot move it, and
ULD leaves the forget set's truth ratios where they were (measured: docs/method.md, "The plausible
set's floor"). Outside S the assistant term is zero, as in the ULD code's "lowprob-0" variant.

combine="authors" is the ULD authors' own arithmetic (UCSB-NLP-Chang/ULD, commit 858608c,
`uld/model/contrastllm.py` `forward` and `gen_util.py` `greedy_search`): the raw logits
l_t + w * l_a with w = -alpha and the assistant's logits zeroed outside S, so
l_f = l_t - alpha * l_a on S and l_t elsewhere, with no c; when decoding, tokens outside S get
-1e3, as their generation sets them (`decoding=True`). It reproduces the paper's runs; "mass"
(above) is the default.

One pass serves both models. The assistant's LoRA adapters are injected into the target's first K
layers, so the batch is doubled: rows [0, B) are the target's, rows [B, 2B) the assistant's and
only they get the LoRA delta. After layer K-1 the assistant's hidden states are set aside and the
remaining layers see the target's rows only; one LM-head matmul then serves both. The assistant
therefore adds only its LoRA weights to memory, and at batch 1 (memory-bound) decoding costs
little more than the target alone.
"""

from __future__ import annotations

import inspect
import json
import math
import os
import sys
import time
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import torch
from torch import nn
from transformers import DynamicCache, LogitsProcessorList
from transformers.generation.logits_process import (
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)
from transformers.modeling_outputs import CausalLMOutputWithPast

from uld.assistant import (
    base_lm,
    check_num_layers,
    decoder_layers,
    decoder_of,
    final_norm,
    projection_paths,
    weights_fingerprint,
)
from uld.config import COMBINES
from uld.models import load_model
from uld.outdir import check_out, output_dir

# The KV cache's keyword: newer transformers (5.24 here) call it `cache`, and the old name
# `past_key_values` warns and goes away in 5.40; older versions know only `past_key_values`.
CACHE_ARG = "cache" if "cache" in CausalLMOutputWithPast.__dataclass_fields__ else "past_key_values"

ULD_CONFIG = "uld_config.json"
ADAPTER = "default"


def check_alpha(alpha: float) -> None:
    if not (math.isfinite(alpha) and alpha >= 0):
        raise ValueError(
            f"alpha={alpha} must be a finite number >= 0 (the paper uses 0.75 on TOFU)"
        )


AUTHORS_OUTSIDE = -1e3  # the authors' logit for tokens outside S when generating (gen_util.py)


def check_combine(combine: str) -> None:
    if combine not in COMBINES:
        raise ValueError(
            f"combine={combine!r}: choose mass (uld's: the target's mass on S kept) or authors "
            "(the ULD authors' raw l_t - alpha * l_a on S)"
        )


def check_filter(filter: float) -> None:
    if not (math.isfinite(filter) and 0 < filter <= 1):
        raise ValueError(f"filter={filter} must be in (0, 1] (the paper uses 1e-2)")


def plausible_set(logp_t: torch.Tensor, filter: float) -> torch.Tensor:
    """S as a mask: p_t >= filter * max p_t, or among the floor(filter * V) most likely tokens.
    logp_t [..., V] (the target's log-probabilities, or its logits: the test is the same up to a
    shift per row) -> bool [..., V]"""
    k = max(1, int(filter * logp_t.shape[-1]))  # S's floor: the k most likely tokens
    kth = torch.topk(logp_t, k, dim=-1).values[..., -1:]
    return logp_t >= torch.minimum(kth, logp_t.amax(dim=-1, keepdim=True) + math.log(filter))


def logit_difference(
    l_t: torch.Tensor,
    l_a: torch.Tensor,
    alpha: float,
    filter: float,
    combine: str = "mass",
    decoding: bool = False,
) -> torch.Tensor:
    """ULD's combined logits. l_t, l_a [..., V] -> [..., V] (float32).

    combine "mass": l_t - alpha * l_a + c on S, l_t elsewhere (the target's mass on S kept);
    "authors": the ULD authors' l_t + w * l_a with w = -alpha and l_a zeroed outside S, and with
    `decoding` every token outside S at -1e3 (their generation). alpha 0: l_t in both."""
    l_t = l_t.float()
    if alpha == 0:
        return l_t
    plausible = plausible_set(l_t, filter)  # shift-invariant: logits give log-probabilities' S
    diff = l_t - alpha * l_a.float()
    if combine == "authors":
        return torch.where(plausible, diff, AUTHORS_OUTSIDE if decoding else l_t)
    check_combine(combine)
    c = _logsumexp_on(l_t, plausible) - _logsumexp_on(diff, plausible)
    return torch.where(plausible, diff + c, l_t)


def _logsumexp_on(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """log sum_{mask} exp(x) over the last dimension, keepdim. Outside the mask nothing is
    exponentiated: exp of the far-negative logits there would be wasted work, and on the CPU
    results below float32's normal range take a slow path (49k such exps: ~0.9 ms against 10 us
    for ordinary values on an Intel Xeon), which made this the largest part of ULD's extra cost
    per decoded token."""
    m = x.masked_fill(~mask, -math.inf).amax(dim=-1, keepdim=True)
    inside = torch.exp(torch.where(mask, x - m, 0.0)) * mask
    return m + torch.log(inside.sum(dim=-1, keepdim=True))


def offset_logits(
    l_t: torch.Tensor, l_o: torch.Tensor, l_o0: torch.Tensor, alpha: float = 1.0
) -> torch.Tensor:
    """Offset unlearning (Huang et al. 2024, "Offset Unlearning for Large Language Models",
    Eq. 2): the target's logits plus the change of a small offset model, l_t + alpha * (l_o -
    l_o0), where l_o0 is the offset model before training. All [..., V] -> [..., V] float32."""
    return l_t.float() + alpha * (l_o.float() - l_o0.float())


def _slice_rows(x, n: int, full: int):
    """x[:n] for a tensor (or tuple of tensors) whose first dimension is the doubled batch."""
    if isinstance(x, torch.Tensor) and x.dim() > 0 and x.shape[0] == full:
        return x[:n]
    if isinstance(x, tuple) and x and all(isinstance(t, torch.Tensor) for t in x):
        return tuple(_slice_rows(t, n, full) for t in x)
    return x


class ULDModel(nn.Module):
    """target - alpha * assistant, sharing the target's weights.

    `assistant`: a saved ULD folder (adapter + uld_config.json) or a trained peft assistant
    (`uld.methods.build_assistant`). Its LoRA weights are injected into `target`'s first K layers.
    mode "offset": the same pass serves an Offset model (`offset_logits`): the assistant is the
    trained offset model and the target's own rows after layer K-1 are the offset model before
    training (the first K layers without LoRA), so l_o0 costs one more row block of the head.
    `combine`: how ULD's logits combine (`logit_difference`: "mass", uld's, or "authors").
    """

    def __init__(
        self,
        target: nn.Module,
        assistant,
        alpha: float = 0.75,
        filter: float = 1e-2,
        mode: str = "uld",
        combine: str = "mass",
    ):
        super().__init__()
        check_alpha(alpha)
        check_filter(filter)
        check_combine(combine)
        if mode not in ("uld", "offset"):
            raise ValueError(f"mode={mode!r}: choose uld or offset")
        if mode == "offset" and combine != "mass":
            raise ValueError(f"combine={combine!r} is for ULD models; Offset adds l_o - l_o0")
        self.target, self.alpha, self.filter, self.mode = target, alpha, filter, mode
        self.combine = combine
        config, state = _adapter_parts(assistant)
        self.k = max(config.layers_to_transform) + 1
        n = target.config.num_hidden_layers
        check_num_layers(self.k, n)
        from peft import inject_adapter_in_model

        config = exact_targets(config, target)
        inject_adapter_in_model(config, target, adapter_name=ADAPTER)
        self.load_lora(state)
        for p in target.parameters():
            p.requires_grad_(False)
        self.layers = decoder_layers(target)
        self.lora = [m for m in target.modules() if hasattr(m, "lora_B") and ADAPTER in m.lora_B]
        self._split: int | None = None  # B while a doubled batch runs
        self._captured: torch.Tensor | None = None
        self._captured_start: torch.Tensor | None = None
        self._adapters_on = True
        self._lora_parts = {
            m: (m.lora_A[ADAPTER].weight, m.lora_B[ADAPTER].weight, m.scaling[ADAPTER])
            for m in self.lora
        }
        for m in self.lora:  # peft's forward would apply the delta to every row
            m.forward = partial(self._lora_forward, m)
        self.layers[self.k - 1].register_forward_hook(self._capture)
        for layer in self.layers[self.k :]:
            layer.register_forward_pre_hook(self._drop_assistant_rows, with_kwargs=True)

    def load_lora(self, state: dict[str, torch.Tensor]) -> None:
        """Copy LoRA weights (peft's saved naming) into the injected adapter."""
        if not isinstance(state, dict):  # a peft assistant
            state = _adapter_parts(state)[1]
        own = dict(self.target.named_parameters())
        for key, value in state.items():
            name = _peft_key_to_module_key(key)
            if name not in own:
                raise ValueError(f"adapter weight {key} has no place in the target ({name})")
            with torch.no_grad():
                own[name].copy_(value.to(own[name].dtype))

    # --- hooks ---------------------------------------------------------------------------
    def _lora_forward(self, m, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        """A LoRA-wrapped projection of the shared layers: W x for every row, plus the LoRA delta
        B A x * scale for the assistant's rows only, the second half of the batch (also when an
        MoE block has flattened [2B, T] to 2B*T token rows: the halves stay the same).

        Called 7 times per layer per decoded token, so kept lean: the adapter's weights and scale
        are looked up once (`_lora_parts`; the same tensors, so later weight updates show)."""
        if self._split is None or not self._adapters_on:
            return m.base_layer(x, *args, **kwargs)
        a, b, scale = self._lora_parts[m]
        rows = x.reshape(-1, x.shape[-1])
        y = _linear(m.base_layer, rows)
        half = rows.shape[0] // 2
        if a.dtype == rows.dtype == y.dtype:  # one fused B (A x) * scale + y on the half
            y[half:].addmm_(rows[half:] @ a.T, b.T, alpha=scale)
        else:
            y[half:] += ((rows[half:].to(a.dtype) @ a.T) @ b.T * scale).to(y.dtype)
        return y.reshape(*x.shape[:-1], y.shape[-1])

    def _capture(self, module, args, out):
        if self._split is not None:
            h = out[0] if isinstance(out, tuple) else out
            self._captured = h[self._split :]
            if self.mode == "offset":
                self._captured_start = h[: self._split]

    def _drop_assistant_rows(self, module, args, kwargs):
        if self._split is None:
            return None
        n, full = self._split, 2 * self._split
        args = tuple(_slice_rows(a, n, full) for a in args)
        kwargs = {k: _slice_rows(v, n, full) for k, v in kwargs.items()}
        return args, kwargs

    @contextmanager
    def target_only(self):
        """The plain target: LoRA layers bypassed entirely (bit-exact target outputs)."""
        for m in self.lora:
            m.enable_adapters(False)
        self._adapters_on = False
        try:
            yield
        finally:
            self._adapters_on = True
            for m in self.lora:
                m.enable_adapters(True)

    # --- forward ---------------------------------------------------------------------------
    @property
    def config(self):
        return self.target.config

    @property
    def device(self) -> torch.device:
        return next(self.target.parameters()).device

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        cache=None,
        use_cache: bool = False,
        return_both: bool = False,
        keep: torch.Tensor | None = None,
        past_key_values=None,
        decoding: bool = False,
    ):
        """Combined logits [B, T, V] (float32); with `return_both`, also (l_t, l_a).

        `keep` [B, T] (bool): apply the LM head only there and return logits [N, V] for the N kept
        positions (evaluation needs answer positions only; the head is most of the cost).
        `decoding`: the logits choose the next token (`logit_difference`; only the authors'
        combination treats that differently).
        `cache` (or its older name `past_key_values`): the KV cache. Returns an object with
        `.logits` and `.cache` (also as `.past_key_values`) like an HF output.
        """
        kv = {CACHE_ARG: cache if cache is not None else past_key_values, "use_cache": use_cache}
        if self.alpha == 0 and not return_both:  # the target alone, bit for bit
            with self.target_only():
                out = self.target(
                    input_ids=input_ids,
                    attention_mask=attention_mask,
                    position_ids=position_ids,
                    **kv,
                )
            logits = out.logits.float()
            return _Output(logits if keep is None else logits[keep], getattr(out, CACHE_ARG))
        B = input_ids.shape[0]
        double = lambda x: None if x is None else torch.cat([x, x], dim=0)  # noqa: E731
        self._split = B
        try:
            out = decoder_of(self.target)(
                input_ids=double(input_ids),
                attention_mask=double(attention_mask),
                position_ids=double(position_ids),
                **kv,
            )
            norm = final_norm(self.target)
            hs = [out.last_hidden_state, norm(self._captured)]
            if self.mode == "offset":
                hs.append(norm(self._captured_start))
            if keep is not None:
                hs = [h[keep] for h in hs]
        finally:
            self._split = self._captured = self._captured_start = None
        logits = _linear(self.target.get_output_embeddings(), torch.cat(hs, dim=0)).float()
        cap = getattr(self.config, "final_logit_softcapping", None)
        if cap:
            logits = torch.tanh(logits / cap) * cap
        n = hs[0].shape[0]  # B, or the number of kept positions
        l_t, l_a = logits[:n], logits[n : 2 * n]
        if self.mode == "offset":
            combined = offset_logits(l_t, l_a, logits[2 * n :], self.alpha)
        else:
            combined = logit_difference(l_t, l_a, self.alpha, self.filter, self.combine, decoding)
        result = _Output(combined, getattr(out, CACHE_ARG))
        if return_both:
            result.parts = (l_t, l_a)
        return result

    # --- generation -----------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, input_ids: torch.Tensor, attention_mask=None, **kwargs) -> torch.Tensor:
        """Like transformers' generate for decoder-only models (see `decode`), `streamer=` (a
        `TextStreamer` or `TextIteratorStreamer`) and `stopping_criteria=` included. A streamer
        is ended also when decoding fails, so a thread iterating over it is not left waiting."""
        try:
            return decode(self, input_ids, attention_mask, **kwargs)
        except BaseException:
            if kwargs.get("streamer") is not None:
                kwargs["streamer"].end()
            raise

    # --- persistence ----------------------------------------------------------------------
    def save_pretrained(
        self,
        out: str | os.PathLike,
        target_path: str,
        card: dict | None = None,
        overwrite: bool = False,
    ):
        """Write only the LoRA weights, the adapter config and a uld_config.json naming the
        target, through `uld.outdir` (an existing result is replaced only with `overwrite`)."""
        from peft import get_peft_model_state_dict
        from safetensors.torch import save_file

        check_out(out, overwrite, inputs=[target_path])
        state = get_peft_model_state_dict(self.target, adapter_name=ADAPTER)
        state = {k: v.detach().contiguous().cpu() for k, v in state.items()}
        with output_dir(out, "uld (ULDModel.save_pretrained)", overwrite) as tmp:
            self.target.peft_config[ADAPTER].save_pretrained(tmp)
            save_file(state, str(tmp / "adapter_model.safetensors"))
            card = {"mode": self.mode, "combine": self.combine, **(card or {})}
            write_uld_config(tmp, self.target, target_path, self.k, self.alpha, self.filter, card)
        return Path(out)

    @classmethod
    def from_pretrained(
        cls,
        path: str | os.PathLike,
        alpha: float | None = None,
        filter: float | None = None,
        target: str | None = None,
        device: str | None = None,
        combine: str | None = None,
    ) -> tuple[ULDModel, object]:
        """Load target + adapter from a saved ULD folder. Returns (model, tokenizer).
        `alpha`, `filter`, `combine` override the folder's (combine "mass" where it names none).

        The folder's uld_config.json names the target that is loaded (`target` overrides it):
        trust a ULD folder as you would any model folder. The target is printed before it is
        loaded, and its weights must match the fingerprint saved at training."""
        cfg = read_uld_config(path)
        target_path = target or cfg["target"]
        print(f"[uld] {path}: a ULD model on the target {target_path}", file=sys.stderr)
        net, tokenizer = load_model(target_path, device=device)
        fingerprint = weights_fingerprint(net)
        if fingerprint != cfg["target_fingerprint"]:
            raise ValueError(
                f"the adapter in {path} was trained on a different target (fingerprint "
                f"{cfg['target_fingerprint']}, {target_path} has {fingerprint}): the target was "
                "retrained or replaced since. Load it with the target it was trained on (--target "
                "PATH), or unlearn again from the new target"
            )
        model = cls(
            net,
            path,
            alpha=cfg["alpha"] if alpha is None else alpha,
            filter=cfg["filter"] if filter is None else filter,
            mode=cfg.get("mode", "uld"),
            combine=cfg.get("combine", "mass") if combine is None else combine,
        )
        return model.eval(), tokenizer


# (out, in, rows, dtype) -> True where W @ h^T beat F.linear when first measured in this process
_TRANSPOSED_FASTER: dict[tuple, bool] = {}


def _seconds(f, repeats: int = 3) -> float:
    f()  # warm-up
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        f()
        best = min(best, time.perf_counter() - start)
    return best


def _transposed_faster(weight: torch.Tensor, rows: torch.Tensor) -> bool:
    """Whether W @ h^T beats F.linear's h @ W^T for this weight and row count, measured once
    per shape at first use. CPU BLAS libraries differ at a few rows: with one AMD EPYC build,
    F.linear at 2 rows cost twice 1 row (5x on the 49k-row LM head) while W @ h^T did not; with
    MKL on an Intel Xeon it is the reverse (W @ h^T about twice F.linear's time at 2 rows:
    benchmarks/decode_parts.py). Both give the same values up to float rounding."""
    key = (*weight.shape, rows.shape[0], weight.dtype)
    faster = _TRANSPOSED_FASTER.get(key)
    if faster is None:
        with torch.no_grad():
            transposed = _seconds(lambda: weight @ rows.T)
            plain = _seconds(lambda: nn.functional.linear(rows, weight))
        faster = _TRANSPOSED_FASTER[key] = transposed < plain
    return faster


def _linear(layer: nn.Module, h: torch.Tensor) -> torch.Tensor:
    """layer(h) for an nn.Linear, h [..., d], computed the faster way for a few rows on the CPU
    (decoding a doubled batch: `_transposed_faster`). From ~32 rows on F.linear is as good."""
    n = h.numel() // h.shape[-1]
    if (
        n == 1
        or n > 32
        or h.device.type != "cpu"
        or not isinstance(layer, nn.Linear)
        or torch.is_grad_enabled()
        or not _transposed_faster(layer.weight, h.reshape(n, -1))
    ):
        return layer(h)
    out = (layer.weight @ h.reshape(n, -1).T).T
    if layer.bias is not None:
        out = out + layer.bias
    return out.reshape(*h.shape[:-1], -1)


class _Output:
    def __init__(self, logits, cache):
        self.logits, self.cache = logits, cache

    @property
    def past_key_values(self):  # the name transformers used before 5.24
        return self.cache


def write_uld_config(folder, target, target_path, k, alpha, filter, card=None) -> None:
    if Path(target_path).exists():  # a local folder: relative to this one, so both can move
        target_path = os.path.relpath(Path(target_path).resolve(), Path(folder).resolve())
    cfg = {
        "format": "uld-1",
        "target": str(target_path),
        "target_fingerprint": weights_fingerprint(target),
        "assistant_layers": k,
        "alpha": alpha,
        "filter": filter,
        **(card or {}),
    }
    Path(folder, ULD_CONFIG).write_text(json.dumps(cfg, indent=2, default=str) + "\n")


def read_uld_config(path) -> dict:
    file = Path(path, ULD_CONFIG)
    if not file.exists():
        raise ValueError(f"{path} is not a saved ULD model (no {ULD_CONFIG})")
    cfg = json.loads(file.read_text())
    target = Path(cfg["target"])
    if not target.is_absolute() and (Path(path) / target).exists():
        cfg["target"] = str((Path(path) / target).resolve())
    return cfg


def is_uld_folder(path) -> bool:
    return Path(path, ULD_CONFIG).exists()


def _adapter_parts(assistant) -> tuple:
    """(LoraConfig, LoRA state dict in peft's saved naming) from a folder or a peft model."""
    if isinstance(assistant, str | os.PathLike):
        from peft import LoraConfig
        from safetensors.torch import load_file

        folder = Path(assistant)
        if not (folder / "adapter_config.json").exists():
            raise ValueError(f"{folder} holds no adapter (adapter_config.json missing)")
        return LoraConfig.from_pretrained(str(folder)), load_file(
            str(folder / "adapter_model.safetensors")
        )
    from peft import get_peft_model_state_dict

    config = assistant.peft_config[ADAPTER]
    return config, {k: v.detach() for k, v in get_peft_model_state_dict(assistant).items()}


def exact_targets(config, target: nn.Module):
    """`config` with its `target_modules` as full module paths in `target`: adapters saved with
    leaf names (q_proj, down_proj, ...) would get LoRA on an MoE's fused expert tensors too under
    peft >= 0.22 (`uld.assistant.projection_paths`)."""
    if not config.target_modules or isinstance(config.target_modules, str):
        return config  # none, or a pattern: left to peft
    names = set(config.target_modules)
    if any("." in n for n in names):
        return config  # paths already
    import copy

    config = copy.deepcopy(config)
    config.target_modules = projection_paths(target, names, config.layers_to_transform)
    return config


def _peft_key_to_module_key(key: str) -> str:
    """'base_model.model.model.layers.0.q_proj.lora_A.weight'
    -> 'model.layers.0.q_proj.lora_A.default.weight'."""
    key = key.removeprefix("base_model.model.")
    head, leaf = key.rsplit(".", 1)
    return f"{head}.{ADAPTER}.{leaf}"


# --- decoding ---------------------------------------------------------------------------------


def _last_column(ids: torch.Tensor) -> torch.Tensor:
    keep = torch.zeros_like(ids, dtype=torch.bool)
    keep[:, -1] = True
    return keep


def decode(
    model,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    max_new_tokens: int = 64,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_p: float = 1.0,
    top_k: int = 0,
    repetition_penalty: float = 1.0,
    eos_token_id: int | list[int] | None = None,
    pad_token_id: int | None = None,
    generator: torch.Generator | None = None,
    streamer=None,
    stopping_criteria=None,
) -> torch.Tensor:
    """Greedy or sampled decoding with a KV cache for any model whose forward takes
    (input_ids, attention_mask, position_ids, cache or past_key_values (`CACHE_ARG`), use_cache)
    and returns `.logits`.

    input_ids [B, T] left-padded. Returns [B, T + n] (prompt + new tokens; rows that stopped at
    EOS are padded with `pad_token_id`), as transformers' generate does.

    `streamer` (transformers' `TextStreamer`, `TextIteratorStreamer` or anything with `put` and
    `end`) is fed as transformers' generate feeds it: `put(input_ids)`, then `put` of each step's
    tokens [B], then `end()`. `stopping_criteria` (a transformers `StoppingCriteriaList` or any
    callable (sequences, scores) -> bool or bool [B]): rows for which it is true stop.
    """
    config = base_lm(model.target if isinstance(model, ULDModel) else model).config
    gen_cfg = getattr(getattr(model, "target", model), "generation_config", None)
    if eos_token_id is None:
        eos_token_id = getattr(gen_cfg, "eos_token_id", None) or config.eos_token_id
    eos = torch.tensor(eos_token_id if isinstance(eos_token_id, list) else [eos_token_id])
    eos = eos.to(input_ids.device)
    pad = pad_token_id if pad_token_id is not None else int(eos[0])
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    processors = LogitsProcessorList()
    if repetition_penalty != 1.0:
        processors.append(RepetitionPenaltyLogitsProcessor(repetition_penalty))
    if do_sample:
        if temperature != 1.0:
            processors.append(TemperatureLogitsWarper(temperature))
        if top_k:
            processors.append(TopKLogitsWarper(top_k))
        if top_p < 1.0:
            processors.append(TopPLogitsWarper(top_p))
    cache = DynamicCache(config=config)
    sequences, mask = input_ids, attention_mask
    done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
    step_ids = input_ids
    if streamer is not None:
        streamer.put(input_ids.cpu())
    # Only the last position's logits are needed: on the prompt (prefill) that saves the LM head
    # on every other position, which on a small model is a large part of the pass.
    if isinstance(model, ULDModel):
        last = lambda ids: {"keep": _last_column(ids), "decoding": True}  # noqa: E731
    elif "logits_to_keep" in inspect.signature(base_lm(model).forward).parameters:
        last = lambda ids: {"logits_to_keep": 1}  # noqa: E731
    else:
        last = lambda ids: {}  # noqa: E731
    for _ in range(max_new_tokens):
        position_ids = (mask.cumsum(-1) - 1).clamp(min=0)[:, -step_ids.shape[1] :]
        out = model(
            input_ids=step_ids,
            attention_mask=mask,
            position_ids=position_ids,
            **{CACHE_ARG: cache},
            use_cache=True,
            **last(step_ids),
        )
        logits = out.logits if out.logits.dim() == 2 else out.logits[:, -1, :]
        scores = processors(sequences, logits.float())
        if do_sample:
            probs = torch.softmax(scores, dim=-1)
            nxt = torch.multinomial(probs, 1, generator=generator).squeeze(1)
        else:
            nxt = scores.argmax(dim=-1)
        nxt = torch.where(done, torch.full_like(nxt, pad), nxt)
        sequences = torch.cat([sequences, nxt[:, None]], dim=1)
        mask = torch.cat([mask, (~done).long()[:, None]], dim=1)
        done = done | torch.isin(nxt, eos)
        if streamer is not None:
            streamer.put(nxt.cpu())
        if stopping_criteria is not None:
            done = done | torch.as_tensor(stopping_criteria(sequences, scores), device=done.device)
        step_ids = nxt[:, None]
        if done.all():
            break
    if streamer is not None:
        streamer.end()
    return sequences


def load_any(
    path: str | None,
    alpha: float | None = None,
    filter: float | None = None,
    target: str | None = None,
    combine: str | None = None,
):
    """(model, tokenizer) for any model folder: a ULD or Offset folder -> a ULDModel (on
    `target` if given, else the target its uld_config.json names; `combine` overrides its
    combination); anything else (a plain model folder, a hub id, None for the embedded default)
    -> the plain model, in eval mode."""
    if path and is_uld_folder(path):
        return ULDModel.from_pretrained(
            path, alpha=alpha, filter=filter, target=target, combine=combine
        )
    for flag, value in (("--target", target), ("--combine", combine)):
        if value:
            raise ValueError(f"{flag} is for ULD model folders; {path or 'default'} is not one")
    model, tok = load_model(path)
    return model.eval(), tok

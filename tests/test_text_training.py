"""Training on raw text (MUSE schema) end to end on a tiny model: `uld finetune` on documents,
`uld unlearn` with ULD and with baselines on forget/retain chunks, the methods that need QA rows
refused."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from uld.calibrate import SAFE_ALPHAS
from uld.cli import main
from uld.config import UnlearnConfig
from uld.data.chunks import TextDataset
from uld.data.text import load_muse, texts
from uld.logit_diff import load_any
from uld.methods import prepare, text_config
from uld.models import load_model, read_card


def _changed(a: torch.nn.Module, b: torch.nn.Module) -> list[str]:
    return [
        n
        for (n, p), q in zip(a.named_parameters(), b.parameters(), strict=True)
        if not torch.equal(p, q)
    ]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("muse") / "data"
    assert main(["data", "export", "--kind", "muse", "--size", "4", "--out", str(out)]) == 0
    return str(out)


@pytest.fixture(scope="module")
def text_target(tiny_plain_model, corpus, tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("text") / "target"
    argv = ["finetune", "--model", tiny_plain_model, "--data", corpus, "--split", "full"]
    argv += ["--out", str(out), "--max-length", "64", "--epochs", "1", "--batch-size", "8"]
    assert main([*argv, "--lr", "1e-2"]) == 0
    return str(out)


def test_finetune_on_text_trains_on_every_chunk(tiny_plain_model, corpus, text_target):
    card = read_card(text_target)
    data = load_muse(corpus)
    _, tok = load_model(tiny_plain_model)
    chunks = TextDataset(texts(data, "full"), tok, 64)
    assert card["data_kind"] == "text" and card["rows"] == 12 and card["max_length"] == 64
    assert card["chunks"] == len(chunks) > 12  # documents longer than 64 tokens are cut
    changed = _changed(load_model(tiny_plain_model)[0], load_model(text_target)[0])
    assert changed and all("embed_tokens" not in n for n in changed)


METHODS = ["uld", "npo+kl", "ga+kl", "npo", "offset-npo+kl", "simnpo+gd", "wga", "satimp+gd"]
METHODS += ["undial", "ceu+kl", "rmu", "npo+kl --lora"]


@pytest.mark.parametrize("method", METHODS)
def test_unlearn_on_text(method, corpus, text_target, tmp_path):
    out = tmp_path / "out"
    method, *flags = method.split()
    argv = ["unlearn", "--method", method, "--model", text_target, "--data", corpus, *flags]
    argv += ["--out", str(out), "--max-length", "64", "--epochs", "1", "--batch-size", "4"]
    if method in ("uld", "offset-npo+kl"):
        argv += ["--layers", "2", "--lora-rank", "4"]
    if method != "uld":
        argv += ["--lr", "1e-2"]
    assert main(argv) == 0
    target, _ = load_model(text_target)
    if method == "offset-npo+kl":
        weights = load_file(out / "adapter_model.safetensors")
        assert any(w.abs().sum() > 0 for n, w in weights.items() if "lora_B" in n)
    elif method == "uld":
        uld_cfg = json.loads((out / "uld_config.json").read_text())
        assert uld_cfg["assistant_layers"] == 2
        # alpha chosen on the run's own documents: every grid alpha scored on the retain text
        choice = uld_cfg["alpha_choice"]
        assert uld_cfg["alpha"] == choice["alpha"] in (0.0, *SAFE_ALPHAS)
        assert [g["alpha"] for g in choice["grid"]] == list(SAFE_ALPHAS)
        assert all(0 <= g["keep_agreement"] <= 1 for g in choice["grid"])
        weights = load_file(out / "adapter_model.safetensors")
        lora_b = [w for n, w in weights.items() if "lora_B" in n]
        assert lora_b and all(w.abs().sum() > 0 for w in lora_b)  # trained: B starts at zero
        load_any(str(out))  # loads as a ULD model on its target
        assert not (out / "after_run_check.json").exists()
    else:
        after, _ = load_model(out)
        changed = _changed(target, after)
        assert changed and all("embed_tokens" not in n for n in changed)


def test_uld_calibrate_on_text_rechooses_alpha_under_the_authors_arithmetic(
    corpus, text_target, tmp_path, capsys
):
    """`uld calibrate --retain` on raw text: the retain rule on the documents, here with the
    other combination; --write saves both. Held-out rows do not exist on text: refused."""
    out = tmp_path / "uld"
    argv = ["unlearn", "--method", "uld", "--model", text_target, "--data", corpus, "--out"]
    argv += [str(out), "--max-length", "64", "--epochs", "1", "--layers", "2", "--lora-rank", "4"]
    assert main(argv) == 0
    before = json.loads((out / "uld_config.json").read_text())
    assert before["combine"] == "mass"
    capsys.readouterr()
    argv = ["calibrate", "--model", str(out), "--data", corpus, "--forget", "forget"]
    assert main([*argv, "--retain", "retain1", "--combine", "authors", "--write"]) == 0
    assert f"(the model's was {before['alpha']:g})" in capsys.readouterr().out
    after = json.loads((out / "uld_config.json").read_text())
    choice = after["alpha_choice"]
    assert after["combine"] == "authors" and after["alpha"] == choice["alpha"]
    assert choice["alpha_before"] == before["alpha"] and choice["retain"] == "retain1"
    assert [g["alpha"] for g in choice["grid"]] == list(SAFE_ALPHAS)
    assert load_any(str(out))[0].combine == "authors"  # loads with the saved combination
    assert main(argv) == 2  # no --retain: refused, naming the fix
    err = capsys.readouterr().err
    assert "raw text" in err and "--retain" in err
    assert json.loads((out / "uld_config.json").read_text()) == after  # untouched


def test_text_config_maps_muse_splits_and_pairs_chunks(corpus, text_target):
    cfg = text_config(UnlearnConfig(method="npo+gd", model=text_target, data=corpus, out="x"))
    assert (cfg.forget, cfg.retain, cfg.epochs, cfg.check) == ("forget", "retain1", 10.0, False)
    uld = text_config(UnlearnConfig(method="uld", model=text_target, data=corpus, out="x"))
    assert uld.epochs == 0.0  # ULD: epochs from the data (at least 300 steps), as on QA rows
    cfg = UnlearnConfig(
        method="uld", model=text_target, data=corpus, out="x", layers=2, max_length=64
    )
    run = prepare(text_config(cfg))
    data = load_muse(corpus)
    assert run.rows == (data.forget, data.retain1)
    forget = TextDataset(data.forget, run.tokenizer, 64)
    assert run.dataset.forget.items == forget.items  # D'_f: the forget chunks, nothing added
    assert len(run.dataset.retain) == len(TextDataset(data.retain1, run.tokenizer, 64))
    item = run.dataset[0]
    assert item["forget"]["labels"] == item["forget"]["input_ids"]
    assert item["retain"]["labels"] == item["retain"]["input_ids"]


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--method", "dpo+kl"], "prefers a refusal of each forget question"),
        (["--method", "uoe+npo"], "attributes forget answers to experts"),
        (["--method", "uld", "--calibrate", "holdout"], "--calibrate works on question/answer"),
        (["--method", "npo", "--eval-metric", "forget_rouge"], "--eval-metric works on"),
        (["--method", "npo+kl", "--forget", "retain1"], "forget item 0 is also item 0"),
    ],
)
def test_text_refusals(extra, message, corpus, text_target, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["unlearn", "--model", text_target, "--data", corpus, "--out", str(out), *extra]
    assert main(argv) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()

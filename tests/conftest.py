"""Tiny Llama-style models and tokenizers, built here from a config; nothing is downloaded.

The tokenizer is a small BPE trained on the built-in benchmark's text, with a ChatML chat
template like SmolLM2's (`tiny_model`) or without one (`tiny_plain_model`), so both prompt
formats run through the real code paths.
"""

from __future__ import annotations

import os

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from tokenizers import decoders as tk_decoders
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from uld.data.synthetic import builtin_splits
from uld.logit_diff import ULDModel
from uld.methods import build_assistant
from uld.models import load_model


def _share_the_cores() -> None:
    """Under pytest-xdist (`make test` runs `-n auto`), each worker and the commands it starts
    get an equal share of the cores: torch's default of one thread per core in every worker
    oversubscribes them, and every test slows several-fold."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1 and "OMP_NUM_THREADS" not in os.environ:
        threads = str(max(1, (os.cpu_count() or 1) // workers))
        os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = threads
        torch.set_num_threads(int(threads))


_share_the_cores()

CHATML = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content']"
    " + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\n' }}{% endif %}"
)


@pytest.fixture(scope="session", autouse=True)
def _uld_home(tmp_path_factory):
    """Every test (and every CLI it runs) caches under a fresh ULD_HOME, not the user's."""
    with pytest.MonkeyPatch.context() as m:
        m.setenv("ULD_HOME", str(tmp_path_factory.mktemp("uld_home")))
        yield


def _corpus() -> list[str]:
    rows = [r for rows in builtin_splits(n_authors=20).values() for r in rows]
    text = [r[k] for r in rows for k in ("question", "answer", "paraphrased_answer")]
    return text + ["You are a helpful assistant.", "Question: Answer:", "system user assistant"]


def make_tokenizer(chat: bool) -> PreTrainedTokenizerFast:
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tk = Tokenizer(models.BPE(unk_token=None))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = tk_decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tk.train_from_iterator(_corpus(), trainer)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tk,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>" if chat else "<|endoftext|>",
        pad_token="<|endoftext|>",
    )
    if chat:
        tok.chat_template = CHATML
    return tok


def make_model(tok, layers: int = 4, seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    return LlamaForCausalLM(config).eval()


def _save(tmp_path_factory, name: str, chat: bool, seed: int = 0) -> str:
    path = tmp_path_factory.mktemp(name)
    tok = make_tokenizer(chat)
    make_model(tok, seed=seed).save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> str:
    """Folder of a 4-layer Llama with a ChatML tokenizer."""
    return _save(tmp_path_factory, "tiny", chat=True)


@pytest.fixture(scope="session")
def other_tiny_model(tmp_path_factory) -> str:
    """Same architecture, different weights (for 'adapter of another target' errors)."""
    return _save(tmp_path_factory, "tiny_other", chat=True, seed=1)


@pytest.fixture(scope="session")
def tiny_plain_model(tmp_path_factory) -> str:
    """Folder of a 4-layer Llama whose tokenizer has no chat template."""
    return _save(tmp_path_factory, "tiny_plain", chat=False)


@pytest.fixture()
def trained_assistant(tiny_model):
    """(assistant, tokenizer): a 2-layer assistant of `tiny_model` with random LoRA weights."""
    from uld.methods import build_assistant

    assistant, tok = build_assistant(tiny_model, k=2, rank=4, alpha=8, dropout=0.0)
    with torch.no_grad():  # make the adapter non-trivial
        for n, p in assistant.named_parameters():
            if "lora_" in n:
                p.normal_(0, 0.3)
    return assistant, tok


def untied_target(tiny_model: str, out) -> str:
    """`tiny_model` saved to `out` with an untied random LM head: the tied random model answers
    every question with newlines; this one with varied tokens, invalid UTF-8 pieces among them."""
    model, tok = load_model(tiny_model)
    model.config.tie_word_embeddings = False
    torch.manual_seed(1)
    model.lm_head.weight = torch.nn.Parameter(torch.randn_like(model.lm_head.weight) * 0.5)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return str(out)


def random_uld(target: str, out, std: float = 0.3, alpha: float = 0.75) -> str:
    """A ULD model on `target` saved to `out`: a 2-layer assistant with random LoRA weights."""
    assistant, _ = build_assistant(target, k=2, rank=4, alpha=8, dropout=0.0)
    torch.manual_seed(0)
    with torch.no_grad():
        for n, p in assistant.named_parameters():
            if "lora_" in n:
                p.normal_(0, std)
    ULDModel(load_model(target)[0], assistant, alpha=alpha).save_pretrained(out, target_path=target)
    return str(out)

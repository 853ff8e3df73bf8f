"""Prompt formatting, tokenisation with answer-only labels, and collation.

Labels cover the answer tokens plus the end-of-turn/EOS token only; the prompt is masked with
-100, as in TOFU. Chat models get their chat template with a short system prompt (SmolLM2's
template otherwise inserts a ~20-token default one, which costs compute on every row); models
without a template get `Question: ...\\nAnswer:`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence

import torch
from torch.utils.data import Dataset

SYSTEM_PROMPT = "You are a helpful assistant."
IGNORE = -100


def prompt_text(tokenizer, question: str) -> str:
    """The text the model sees before its answer."""
    if getattr(tokenizer, "chat_template", None):
        messages = [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": question},
        ]
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return f"Question: {question}\nAnswer:"


def prompt_ids(tokenizer, question: str) -> list[int]:
    chat = bool(getattr(tokenizer, "chat_template", None))
    # A chat template holds its special tokens; a plain prompt gets BOS if the model uses one.
    return tokenizer(prompt_text(tokenizer, question), add_special_tokens=not chat).input_ids


def encode_qa(
    tokenizer, question: str, answer: str, max_length: int | None = 512
) -> dict[str, list]:
    """input_ids = prompt + answer + EOS; labels = -100 on the prompt, the ids elsewhere."""
    chat = bool(getattr(tokenizer, "chat_template", None))
    p = prompt_ids(tokenizer, question)
    a = tokenizer(answer if chat else " " + answer, add_special_tokens=False).input_ids
    a = a + [tokenizer.eos_token_id]
    ids = (p + a)[:max_length]  # max_length None: the whole row
    labels = ([IGNORE] * len(p) + a)[:max_length]
    return {"input_ids": ids, "labels": labels}


def pad(
    items: Sequence[dict[str, list]], pad_id: int, side: str = "right"
) -> dict[str, torch.Tensor]:
    """Pad `input_ids` (and `labels` if present) to one length; returns [B, T] tensors."""
    T = max(len(x["input_ids"]) for x in items)
    out: dict[str, list] = {"input_ids": [], "attention_mask": []}
    has_labels = "labels" in items[0]
    if has_labels:
        out["labels"] = []
    for x in items:
        n = T - len(x["input_ids"])
        fill = (
            (lambda seq, v, n=n: seq + [v] * n)
            if side == "right"
            else (lambda seq, v, n=n: [v] * n + seq)
        )
        out["input_ids"].append(fill(list(x["input_ids"]), pad_id))
        out["attention_mask"].append(fill([1] * len(x["input_ids"]), 0))
        if has_labels:
            out["labels"].append(fill(list(x["labels"]), IGNORE))
    return {k: torch.tensor(v, dtype=torch.long) for k, v in out.items()}


class ItemsDataset(Dataset):
    """Training items ({input_ids, labels} token lists) held in `self.items`."""

    items: list[dict[str, list]]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, list]:
        return self.items[i]

    def fingerprint(self) -> str:
        """A hash of every token and label: equal exactly when the training items are."""
        return _digest(self.items)


class QADataset(ItemsDataset):
    """Rows tokenised once, up front. A row longer than `max_length` tokens is cut there, with
    a warning naming how many were."""

    def __init__(self, rows: Sequence[dict], tokenizer, max_length: int = 512):
        items = [encode_qa(tokenizer, r["question"], r["answer"], None) for r in rows]
        long = [i for i, x in enumerate(items) if len(x["input_ids"]) > max_length]
        if long:
            print(
                f"[uld] warning: {len(long)} of {len(rows)} rows are longer than {max_length} "
                f"tokens (e.g. row {long[0]}, {len(items[long[0]]['input_ids'])} tokens) and are "
                "cut there; the tokens past it are not trained on"
            )
        self.items = [{k: v[:max_length] for k, v in x.items()} for x in items]


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


class PairedDataset(Dataset):
    """Each forget item paired with a retain item (and, for DPO, with its refusal item `idk`);
    one epoch is one pass over the forget set.

    Retain items are dealt in a seeded random order and the deal carries on across epochs, so
    every retain row is used even when the retain set is larger than the forget set: in epoch e,
    forget item i is paired with retain item `order[(e * len(forget) + i) % len(retain)]`. The
    pairing is a function of (epoch, index), not of how many items were fetched before, so a
    resumed run pairs exactly as an uninterrupted one (the Trainer sets the epoch, `set_epoch`).
    """

    def __init__(
        self,
        forget: QADataset,
        retain: QADataset | None,
        seed: int = 0,
        idk: QADataset | None = None,
    ):
        if idk is not None and len(idk) != len(forget):
            raise ValueError(f"idk has {len(idk)} items for {len(forget)} forget items")
        self.forget, self.retain, self.idk = forget, retain, idk
        n = len(retain) if retain is not None else 0
        self.order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.forget)

    def __getitem__(self, i: int) -> dict[str, dict]:
        item = {"forget": self.forget[i]}
        if self.idk is not None:  # DPO: the same question with a refusal as the answer
            item["idk"] = self.idk[i]
        if self.retain is not None:
            dealt = self.epoch * len(self.forget) + i
            item["retain"] = self.retain[self.order[dealt % len(self.order)]]
        return item

    def fingerprint(self) -> str:
        parts = [self.forget, self.retain, self.idk]
        return _digest([p.fingerprint() if p is not None else None for p in parts] + [self.order])


class Collator:
    """Right-pads a batch of QADataset items, or of PairedDataset items field by field."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, batch: list[dict]) -> dict:
        if "input_ids" in batch[0]:
            return pad(batch, self.pad_id)
        return {k: pad([b[k] for b in batch], self.pad_id) for k in batch[0]}

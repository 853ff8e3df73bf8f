"""Raw text as training items: documents tokenised and cut into chunks, every token a label.

MUSE fine-tunes and unlearns on raw text with the next-token loss on every token of fixed-length
chunks (muse_bench `baselines/baselines/dataset.py`, `DefaultDataset`: the split's tokens cut
into `max_len` pieces, `labels = input_ids`). uld cuts each document on its own, so no chunk
spans two documents: a document's tokens (as the tokenizer encodes the text by default, so with
BOS where the model has one, as MUSE's prompts are encoded at evaluation) plus EOS are cut into
consecutive pieces of at most `max_length` tokens; a last piece of one token (nothing to
predict) is dropped. Items have the QA items' shape (`input_ids`, `labels`), so `Collator`,
`PairedDataset` and every objective take them unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

from uld.data.format import ItemsDataset

MAX_LENGTH = 256  # tokens per chunk: a built-in article (290-360 tokens) is two chunks


def chunk_ids(ids: list[int], max_length: int) -> list[list[int]]:
    """`ids` cut into consecutive pieces of at most `max_length`; a last piece of 1 is dropped."""
    if max_length < 2:
        raise ValueError(f"max_length={max_length} must be >= 2 (a token and its successor)")
    pieces = [ids[i : i + max_length] for i in range(0, len(ids), max_length)]
    return [p for p in pieces if len(p) >= 2]


def encode_document(tokenizer, text: str) -> list[int]:
    """The document's tokens, with the tokenizer's default special tokens, ending with EOS."""
    ids = tokenizer(text).input_ids
    if tokenizer.eos_token_id is not None and (not ids or ids[-1] != tokenizer.eos_token_id):
        ids = ids + [tokenizer.eos_token_id]
    return ids


class TextDataset(ItemsDataset):
    """Documents as chunks of at most `max_length` tokens, each item {input_ids, labels} with
    labels equal to input_ids (the whole text is trained on). `doc` holds each chunk's
    document index."""

    def __init__(self, documents: Sequence[str], tokenizer, max_length: int = MAX_LENGTH):
        self.items: list[dict[str, list]] = []
        self.doc: list[int] = []
        for d, text in enumerate(documents):
            for piece in chunk_ids(encode_document(tokenizer, text), max_length):
                self.items.append({"input_ids": piece, "labels": list(piece)})
                self.doc.append(d)

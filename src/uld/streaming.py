"""Streaming answers through transformers' streamer interface.

A ULD model streams as any transformers model does: `ULDModel.generate` (and `uld.logit_diff.
decode`, for any model) takes `streamer=`, calls its `put` with the prompt, then with each
step's new tokens, and its `end()` once decoding stops, as transformers' `generate` does:

    from threading import Thread
    from transformers import TextIteratorStreamer
    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    Thread(target=model.generate, kwargs=dict(input_ids=ids, max_new_tokens=64,
                                              streamer=streamer)).start()
    for text in streamer:
        print(text, end="", flush=True)

`AnswerStreamer` is the one `uld chat` prints with.
"""

from __future__ import annotations

import sys

from transformers import TextStreamer


class AnswerStreamer(TextStreamer):
    """Prints an answer as it is decoded (batch size 1), the prompt skipped: `prefix`, then the
    text, then a newline at the end. What it prints after `prefix` is exactly the answer
    `uld.evaluate.generate_answers` returns, stripped: leading whitespace is dropped and
    trailing whitespace held back until more text follows it. `answer` holds the last one."""

    def __init__(self, tokenizer, prefix: str = "", file=None):
        super().__init__(tokenizer, skip_prompt=True, skip_special_tokens=True)
        self.prefix, self.file = prefix, file
        self.answer, self._held, self._open = "", "", False

    def put(self, value) -> None:
        if not self._open:  # the prompt: the answer begins
            self._open, self.answer, self._held = True, "", ""
            self._write(self.prefix)
        super().put(value)

    def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
        text = self._held + text
        if not self.answer:
            text = text.lstrip()
        body = text.rstrip()
        self._held = text[len(body) :]
        if body:
            self.answer += body
            self._write(body)
        if stream_end:
            self._write("\n")
            self._open, self._held = False, ""

    def _write(self, text: str) -> None:
        file = self.file or sys.stdout
        file.write(text)
        file.flush()

"""Streaming through transformers' streamer interface: `decode` and `ULDModel.generate` feed a
streamer exactly as transformers' generate does, the streamed text is the non-streamed greedy
answer (plain and ULD tiny models), `uld chat` prints it as it comes, and `uld serve`'s stream
carries the same text and token count as a `TextIteratorStreamer` on the same model."""

from __future__ import annotations

import io
import socket
import threading
import time
from contextlib import contextmanager

import pytest
import torch
from conftest import random_uld, untied_target
from transformers import StoppingCriteriaList, TextIteratorStreamer
from transformers.generation.stopping_criteria import MaxLengthCriteria

from uld.cli import main
from uld.data.format import prompt_ids
from uld.evaluate import generate_answers
from uld.logit_diff import ULDModel, decode
from uld.models import load_model
from uld.openai_api import Message, chat_ids
from uld.runs import load_any
from uld.serve import create_app
from uld.streaming import AnswerStreamer

QUESTIONS = ["Where was Ilse born?", "Which award did Teodora Vasilescu win?", "Why?"]
N = 24  # new tokens per answer


@pytest.fixture(scope="module")
def target(tiny_model, tmp_path_factory) -> str:
    return untied_target(tiny_model, tmp_path_factory.mktemp("stream") / "target")


@pytest.fixture(scope="module")
def uld_folder(target, tmp_path_factory) -> str:
    return random_uld(target, tmp_path_factory.mktemp("stream") / "uld", std=0.3, alpha=0.75)


@pytest.fixture(params=["plain", "uld"])
def folder(request, target, uld_folder) -> str:
    return target if request.param == "plain" else uld_folder


class Recorder:
    """A streamer that records what it is fed."""

    def __init__(self):
        self.puts, self.ends = [], 0

    def put(self, value):
        self.puts.append(value.clone())

    def end(self):
        self.ends += 1


class Tee:
    """One streamer that passes everything on to several."""

    def __init__(self, *streamers):
        self.streamers = streamers

    def put(self, value):
        for s in self.streamers:
            s.put(value)

    def end(self):
        for s in self.streamers:
            s.end()


def test_decode_feeds_a_streamer_as_transformers_generate_does(target):
    model, tok = load_model(target)
    ids = torch.tensor([prompt_ids(tok, QUESTIONS[0])])
    theirs, ours = Recorder(), Recorder()
    hf = model.generate(ids, max_new_tokens=N, do_sample=False, streamer=theirs)
    seq = decode(model, ids, max_new_tokens=N, streamer=ours)
    assert torch.equal(hf, seq)
    assert len(ours.puts) == N + 1 and ours.ends == theirs.ends == 1
    assert [p.shape for p in ours.puts] == [p.shape for p in theirs.puts]
    assert all(torch.equal(a, b) for a, b in zip(ours.puts, theirs.puts, strict=True))
    assert torch.equal(torch.cat(ours.puts[1:]), seq[0, ids.shape[1] :])


def test_streamed_text_is_the_greedy_answer(folder):
    """In a thread, as users stream any transformers model: a ULD model through its own
    generate, a plain one through `decode` (what `uld chat` runs)."""
    model, tok = load_any(folder)
    run = model.generate if isinstance(model, ULDModel) else lambda **kw: decode(model, **kw)
    answers = generate_answers(model, tok, QUESTIONS, 1, N, progress=False)
    for question, answer in zip(QUESTIONS, answers, strict=True):
        ids = torch.tensor([prompt_ids(tok, question)])
        streamer = TextIteratorStreamer(tok, skip_prompt=True, skip_special_tokens=True, timeout=60)
        kwargs = dict(input_ids=ids, max_new_tokens=N, streamer=streamer)
        thread = threading.Thread(target=run, kwargs=kwargs)
        thread.start()
        pieces = list(streamer)
        thread.join()
        new = decode(model, ids, max_new_tokens=N)[0, ids.shape[1] :]
        assert "".join(pieces) == tok.decode(new, skip_special_tokens=True)
        assert "".join(pieces).strip() == answer
    assert len(pieces) > 1  # it came in pieces, not as one string at the end


def test_a_failed_decode_still_ends_the_streamer(uld_folder):
    model, tok = load_any(uld_folder)

    def fail(sequences, scores):
        raise RuntimeError("boom")

    streamer = TextIteratorStreamer(tok, skip_prompt=True, timeout=60)
    ids = torch.tensor([prompt_ids(tok, QUESTIONS[0])])
    errors = []

    def run():
        try:
            model.generate(input_ids=ids, streamer=streamer, stopping_criteria=fail)
        except RuntimeError as e:
            errors.append(str(e))

    thread = threading.Thread(target=run)
    thread.start()
    text = "".join(streamer)  # ended, not left waiting for the 60 s timeout
    thread.join()
    assert text == tok.decode(decode(model, ids, max_new_tokens=1)[0, -1:])  # the one token made
    assert errors == ["boom"]


def test_stopping_criteria_stop_rows(uld_folder):
    model, tok = load_any(uld_folder)
    ids = torch.tensor([prompt_ids(tok, QUESTIONS[1])])
    stop = StoppingCriteriaList([MaxLengthCriteria(max_length=ids.shape[1] + 5)])
    seq = model.generate(input_ids=ids, max_new_tokens=N, stopping_criteria=stop)
    assert torch.equal(seq, decode(model, ids, max_new_tokens=5))
    # a per-row answer: the first row stops after 2 tokens and is padded, the second goes on
    two = torch.cat([ids, ids])
    per_row = lambda seqs, scores: torch.tensor([seqs.shape[1] >= ids.shape[1] + 2, False])  # noqa: E731
    pad = tok.pad_token_id
    seq = decode(model, two, max_new_tokens=6, stopping_criteria=per_row, pad_token_id=pad)
    full = decode(model, ids, max_new_tokens=6)
    assert torch.equal(seq[1], full[0])
    assert torch.equal(seq[0, : ids.shape[1] + 2], full[0, : ids.shape[1] + 2])
    assert (seq[0, ids.shape[1] + 2 :] == pad).all() and not (
        full[0, ids.shape[1] + 2 :] == pad
    ).all()


class Writes(io.StringIO):
    def __init__(self):
        super().__init__()
        self.calls = 0

    def write(self, text):
        self.calls += 1
        return super().write(text)


def test_chat_prints_each_answer_as_it_is_decoded(folder, monkeypatch):
    model, tok = load_any(folder)
    answers = generate_answers(model, tok, QUESTIONS, 1, N, progress=False)
    monkeypatch.setattr("sys.stdin", io.StringIO("\n".join(QUESTIONS) + "\n\nignored\n"))
    out = Writes()
    monkeypatch.setattr("sys.stdout", out)
    assert main(["chat", "--model", folder, "--max-new-tokens", str(N)]) == 0
    header = "uld chat: one question per line; an empty line or Ctrl-D ends.\n"
    assert out.getvalue() == header + "".join(f"A: {a}\n" for a in answers)
    assert out.calls > 2 + 3 * len(QUESTIONS)  # the answers' text came in several writes


def test_answer_streamer_strips_as_generate_answers_does():
    """Leading whitespace dropped, trailing whitespace held until text follows it."""
    out = io.StringIO()
    s = AnswerStreamer(tokenizer=None, prefix="A: ", file=out)
    s._open = True
    for piece in ["\n ", " two", " words \n", "\n", "three ", "\n"]:
        s.on_finalized_text(piece)
    s.on_finalized_text("  ", stream_end=True)
    assert out.getvalue() == "two words \n\nthree\n"
    assert s.answer == "two words \n\nthree"


@contextmanager
def running(folder: str):
    model, tok = load_any(folder)
    uvicorn = pytest.importorskip("uvicorn")
    app = create_app(model, tok, "tiny")
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/v1", model, tok
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def test_the_server_streams_what_a_text_iterator_streamer_gets(folder):
    """`uld serve` streams through its own continuous-batching loop; its chunks join to the text
    a `TextIteratorStreamer` gets from the same model, and it counts the same tokens."""
    openai = pytest.importorskip("openai")
    with running(folder) as (url, model, tok):
        client = openai.OpenAI(base_url=url, api_key="none", max_retries=0, timeout=60)
        for question in QUESTIONS:
            ids = chat_ids(tok, [Message(role="user", content=question)])
            streamer = TextIteratorStreamer(tok, skip_prompt=True, skip_special_tokens=True)
            counter = Recorder()
            decode(model, torch.tensor([ids]), max_new_tokens=N, streamer=Tee(streamer, counter))
            expected = "".join(streamer)
            chunks = list(
                client.chat.completions.create(
                    model="tiny",
                    messages=[{"role": "user", "content": question}],
                    max_tokens=N,
                    temperature=0,
                    stream=True,
                    stream_options={"include_usage": True},
                )
            )
            text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
            assert text == expected
            assert chunks[-1].usage.completion_tokens == len(counter.puts) - 1  # less the prompt


def test_the_docs_streaming_example_runs_as_written(uld_folder, capsys):
    """docs/serve.md's example, on the tiny ULD model: it prints the greedy answer."""
    import re
    from pathlib import Path

    docs = (Path(__file__).resolve().parents[1] / "docs" / "serve.md").read_text()
    section = docs[docs.index("## Streaming in your own code") :]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert '"runs/uld"' in code and "streamer=streamer" in code
    exec(
        code.replace('"runs/uld"', repr(uld_folder)).replace(
            "max_new_tokens=64", f"max_new_tokens={N}"
        ),
        {},
    )
    model, tok = load_any(uld_folder)
    answer = generate_answers(
        model, tok, ["Where was Yasmin Farahvand born?"], 1, N, progress=False
    )
    assert answer[0] and capsys.readouterr().out.strip() == answer[0]

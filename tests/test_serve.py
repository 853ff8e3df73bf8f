"""`uld serve`: a real uvicorn server on a free port, asked through the official `openai` client
(and raw HTTP for what a client library would not send), on tiny models built from a config.

Every greedy answer is checked against `uld generate`'s (`generate_answers`, one question
alone) token for token: the text, and the count of tokens generated."""

from __future__ import annotations

import http.client
import json
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import pytest
import torch
from conftest import random_uld, untied_target

from uld.batching import Batcher, Job
from uld.data.format import prompt_ids, prompt_text
from uld.evaluate import generate_answers
from uld.logit_diff import ULDModel, decode
from uld.models import load_model
from uld.runs import load_any
from uld.serve import create_app

openai = pytest.importorskip("openai")
uvicorn = pytest.importorskip("uvicorn")

KEY = "secret-key"
CAP = 600
QUESTIONS = [
    "Where was Ilse born?",
    "What is the profession of the author's father?",
    "Which award did Teodora Vasilescu win?",
    "When was the first book published?",
    "Who are the parents of the author born in Lagos?",
    "What genre does Yasmin Farahvand write in?",
    "Name a book by the author.",
    "Why?",
]


@pytest.fixture(scope="module")
def target(tiny_model, tmp_path_factory) -> str:
    return untied_target(tiny_model, tmp_path_factory.mktemp("serve") / "target")


@pytest.fixture(scope="module")
def uld_folder(target, tmp_path_factory) -> str:
    return random_uld(target, tmp_path_factory.mktemp("serve") / "uld", std=0.3, alpha=0.75)


@contextmanager
def running(folder: str, **kwargs):
    """(base url, app) of a server for `folder` on a free port, in a thread."""
    model, tok = load_any(folder)
    app = create_app(model, tok, "tiny", **kwargs)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}", app
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@pytest.fixture(scope="module")
def plain(target):
    with running(target, api_key=KEY, max_tokens_cap=CAP, max_body=32_000) as s:
        yield s


@pytest.fixture(scope="module")
def uld(uld_folder):
    with running(uld_folder, max_tokens_cap=CAP) as s:
        yield s


def client(url: str, key: str = KEY):
    return openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=30)


def alone(folder: str, question: str, max_tokens: int, **settings) -> tuple[str, int]:
    """`uld generate`'s answer to one question, and how many tokens it generated."""
    model, tok = load_any(folder, **settings)
    answer = generate_answers(model, tok, [question], 1, max_tokens, progress=False)[0]
    ids = prompt_ids(tok, question)
    seq = decode(model, torch.tensor([ids]), max_new_tokens=max_tokens, pad_token_id=0)
    return answer, seq.shape[1] - len(ids)


def chat(c, question: str, max_tokens: int, stream: bool = False, **kw) -> tuple[str, int, str]:
    """(answer, completion tokens, finish reason) from the chat endpoint."""
    messages = [{"role": "user", "content": question}]
    args = dict(model="tiny", messages=messages, max_tokens=max_tokens, temperature=0, **kw)
    if not stream:
        r = c.chat.completions.create(**args)
        return r.choices[0].message.content, r.usage.completion_tokens, r.choices[0].finish_reason
    chunks = list(
        c.chat.completions.create(**args, stream=True, stream_options={"include_usage": True})
    )
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    finish = [ch.choices[0].finish_reason for ch in chunks if ch.choices][-1]
    return text, chunks[-1].usage.completion_tokens, finish


def post(url: str, path: str, body, headers: dict | None = None, method: str = "POST"):
    """(status, JSON) of a raw request; `body` bytes are sent as they are."""
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    hdrs = {"Content-Type": "application/json", "Authorization": f"Bearer {KEY}", **(headers or {})}
    conn.request(method, path, body=data if method == "POST" else None, headers=hdrs)
    r = conn.getresponse()
    out = r.status, json.loads(r.read() or b"null")
    conn.close()
    return out


@pytest.mark.parametrize("which", ["plain", "uld"])
def test_answers_equal_uld_generate_token_for_token(which, request, target, uld_folder):
    url, app = request.getfixturevalue(which)
    folder = target if which == "plain" else uld_folder
    tok = load_any(folder)[1]
    c = client(url)
    for question, n in [(QUESTIONS[0], 12), (QUESTIONS[1], 20)]:
        answer, tokens = alone(folder, question, n)
        for stream in (False, True):
            text, used, finish = chat(c, question, n, stream)
            assert (text.strip(), used) == (answer, tokens)
            assert finish == ("length" if tokens == n else "stop")
        prompt = prompt_text(tok, question)
        r = c.completions.create(model="tiny", prompt=prompt, max_tokens=n, temperature=0)
        assert (r.choices[0].text.strip(), r.usage.completion_tokens) == (answer, tokens)
        streamed = c.completions.create(
            model="tiny", prompt=prompt, max_tokens=n, temperature=0, stream=True
        )
        assert "".join(ch.choices[0].text for ch in streamed) == r.choices[0].text


def test_uld_settings_per_request(uld, uld_folder, target):
    c = client(uld[0])
    q, answers = QUESTIONS[2], set()
    for settings, folder in [
        ({"alpha": 0.0}, target),  # alpha 0: the target's answer
        ({"alpha": 0.75}, uld_folder),  # the model's own alpha
        ({"alpha": 2.0, "filter": 0.05}, None),
    ]:
        expected = alone(folder or uld_folder, q, 16, **({} if folder else settings))
        text, used, _ = chat(c, q, 16, extra_body={"uld": settings})
        assert (text.strip(), used) == expected, settings
        answers.add(text)
    assert len(answers) == 3  # the settings matter on this model
    models = c.models.list().data
    assert [m.id for m in models] == ["tiny"] and models[0].uld["alpha"] == 0.75


@pytest.mark.parametrize("which", ["plain", "uld"])
def test_concurrent_clients_get_what_they_get_one_at_a_time(which, request):
    """8 clients at once, with different lengths, half of them streaming and (ULD) a third
    with their own alpha: requests join and leave the running batch at step boundaries."""
    url, app = request.getfixturevalue(which)
    c = client(url)

    def ask(i: int):
        extra = {"uld": {"alpha": 1.5}} if which == "uld" and i % 3 == 0 else None
        return chat(c, QUESTIONS[i], 6 + 5 * i, stream=i % 2 == 1, extra_body=extra)

    one_at_a_time = [ask(i) for i in range(8)]
    app.state.batcher.peak = 0
    with ThreadPoolExecutor(8) as pool:
        together = list(pool.map(ask, range(8)))
    assert together == one_at_a_time
    assert app.state.batcher.peak > 1  # they were decoded together


def test_seeded_sampling_and_stop_strings(plain, target):
    url, _ = plain
    c = client(url)
    model, tok = load_any(target)
    ids = prompt_ids(tok, QUESTIONS[3])
    gen = torch.Generator().manual_seed(7)
    seq = decode(
        model,
        torch.tensor([ids]),
        max_new_tokens=16,
        do_sample=True,
        temperature=0.9,
        top_p=0.8,
        generator=gen,
    )
    sampled = tok.decode(seq[0, len(ids) :], skip_special_tokens=True)
    messages = [{"role": "user", "content": QUESTIONS[3]}]
    args = dict(model="tiny", messages=messages, max_tokens=16, temperature=0.9, top_p=0.8, seed=7)
    assert c.chat.completions.create(**args).choices[0].message.content == sampled

    seq = decode(model, torch.tensor([ids]), max_new_tokens=24)
    greedy = tok.decode(seq[0, len(ids) :], skip_special_tokens=True)
    stop = greedy[6:9]
    for stream in (False, True):
        text, _, finish = chat(c, QUESTIONS[3], 24, stream, stop=["@@@@", stop])
        assert (text, finish) == (greedy[: greedy.find(stop)], "stop")


def test_offset_model_alpha_per_request(target, uld_folder):
    """An Offset model (the same pass, `offset_logits`) through the decode worker alone: two
    requests decoded together, one at the model's alpha and one at its own, each gets the
    tokens its alpha gives decoded alone."""
    model = ULDModel(load_model(target)[0], uld_folder, alpha=1.0, mode="offset").eval()
    tok = load_any(target)[1]
    batcher = Batcher(model, tok)
    batcher.start()
    try:
        jobs, done = [], threading.Semaphore(0)  # released as each job finishes
        for q, alpha in [(QUESTIONS[0], None), (QUESTIONS[1], 3.0)]:
            emit = lambda e: e.finish and done.release()  # noqa: E731
            jobs.append(Job(prompt_ids(tok, q), 12, emit, temperature=0, alpha=alpha))
            batcher.submit(jobs[-1])
        assert done.acquire(timeout=30) and done.acquire(timeout=30)
    finally:
        batcher.close()
    for job, alpha in zip(jobs, [1.0, 3.0], strict=True):
        model.alpha = alpha
        alone = decode(model, torch.tensor([job.prompt]), max_new_tokens=12)
        assert job.tokens == alone[0, len(job.prompt) :].tolist()
    assert jobs[0].tokens != jobs[1].tokens


def test_api_key(plain):
    url, _ = plain
    with pytest.raises(openai.AuthenticationError):
        client(url, key="wrong").models.list()
    status, body = post(url, "/v1/models", b"", headers={"Authorization": ""}, method="GET")
    assert status == 401 and body["error"]["code"] == "invalid_api_key"
    assert post(url, "/health", b"", headers={"Authorization": ""}, method="GET")[0] == 200
    assert client(url).models.list().data[0].id == "tiny"


def _chat(**change) -> dict:
    body = {"model": "tiny", "messages": [{"role": "user", "content": "Hi?"}], "max_tokens": 4}
    return {k: v for k, v in {**body, **change}.items() if v is not None}


BAD = [
    (b'{"model": "tiny", "messages": [', 400, None),  # malformed JSON
    (b"[1, 2]", 400, None),
    (_chat(model="gpt-4"), 404, "model"),
    (_chat(n=2), 400, "n"),
    (_chat(max_tokens=CAP + 1), 400, "max_tokens"),
    (_chat(max_tokens=0), 400, "max_tokens"),
    (_chat(max_tokens="many"), 400, "max_tokens"),
    (_chat(temperature=3), 400, "temperature"),
    (_chat(top_p=0), 400, "top_p"),
    (_chat(logprobs=True), 400, "logprobs"),
    (_chat(tools=[{"type": "function"}]), 400, "tools"),
    (_chat(presence_penalty=1.0), 400, "presence_penalty"),
    (_chat(stop=["a", "b", "c", "d", "e"]), 400, "stop"),
    (_chat(guidance="x"), 400, "guidance"),
    (_chat(uld={"alpha": 0.5}), 400, "uld"),  # the plain model
    (_chat(messages=[]), 400, "messages"),
    (_chat(messages=[{"role": "assistant", "content": "Hi"}]), 400, "messages"),
    (
        _chat(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]),
        400,
        None,
    ),
    (_chat(messages=[{"role": "user", "content": "Where " * 1100}]), 400, "messages"),  # > context
    (
        _chat(messages=[{"role": "user", "content": "Where " * 200}], max_tokens=CAP),
        400,
        "max_tokens",
    ),
    (_chat(messages=[{"role": "user", "content": "x" * 40_000}]), 413, None),  # > max_body
]


def test_bad_requests_get_a_4xx_and_the_server_goes_on(plain):
    url, _ = plain
    good = client(url)
    for body, status, param in BAD:
        got, answer = post(url, "/v1/chat/completions", body)
        assert got == status, (body, answer)
        assert set(answer["error"]) == {"message", "type", "param", "code"}
        assert answer["error"]["message"] and (
            param is None or answer["error"]["param"].startswith(param)
        )
        assert good.chat.completions.create(**_chat(temperature=0)).choices[0].message.content
    completions = [
        ({"model": "tiny", "prompt": ["a", "b"]}, "prompt"),
        ({"model": "tiny", "prompt": "a", "echo": True}, "echo"),
        ({"model": "tiny", "prompt": [10**6]}, "prompt"),
        ({"model": "tiny", "prompt": ""}, "prompt"),
    ]
    for body, param in completions:
        got, answer = post(url, "/v1/completions", body)
        assert (got, answer["error"]["param"]) == (400, param)
    assert post(url, "/v1/nothing", {})[0] == 404
    with pytest.raises(openai.BadRequestError, match="n=3"):
        good.chat.completions.create(**_chat(n=3))


def test_a_client_that_disconnects_mid_stream_frees_its_slot(plain, target):
    url, app = plain
    model, tok = load_any(target)

    def never_stops(question: str) -> bool:
        ids = prompt_ids(tok, question)
        return decode(model, torch.tensor([ids]), max_new_tokens=CAP).shape[1] == len(ids) + CAP

    question = next(q for q in QUESTIONS if never_stops(q))
    jobs = []
    submit = app.state.batcher.submit
    app.state.batcher.submit = lambda job: (jobs.append(job), submit(job))[1]
    try:
        host, port = url.removeprefix("http://").split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=30)
        body = _chat(messages=[{"role": "user", "content": question}], max_tokens=CAP, stream=True)
        conn.request(
            "POST", "/v1/chat/completions", json.dumps(body), {"Authorization": f"Bearer {KEY}"}
        )
        r = conn.getresponse()
        lines = [r.readline() for _ in range(4)]  # the role chunk, then the first text
        assert r.status == 200 and b'"content": "' in lines[2]
        conn.sock.shutdown(socket.SHUT_RDWR)
        conn.close()
        (job,) = jobs
        for _ in range(200):
            if job.cancelled and app.state.batcher.active == 0:
                break
            time.sleep(0.02)
    finally:
        app.state.batcher.submit = submit
    assert job.cancelled and len(job.tokens) < CAP
    assert post(url, "/health", b"", method="GET") == (
        200,
        {"status": "ok", "model": "tiny", "active": 0, "waiting": 0},
    )
    assert client(url).chat.completions.create(**_chat(temperature=0)).choices[0].message.content


def test_uld_serve_command_and_graceful_sigterm(target):
    """`uld serve` in its own process: SIGTERM while an answer streams lets it finish, then the
    process ends."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "uld.cli", "serve", "--model", target, "--port", str(port)]
    proc = subprocess.Popen(
        cmd + ["--api-key", KEY, "--name", "tiny"], stderr=subprocess.PIPE, text=True
    )
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(600):
            try:
                post(url, "/health", b"", method="GET")
                break
            except OSError:
                time.sleep(0.05)
        c = client(url)
        stream = c.chat.completions.create(**_chat(temperature=0, max_tokens=400), stream=True)
        first = next(iter(stream))
        proc.send_signal(signal.SIGTERM)
        rest = list(stream)
        assert first.choices[0].delta.role == "assistant"
        assert rest[-1].choices[0].finish_reason in ("stop", "length")
        assert proc.wait(30) == -signal.SIGTERM  # uvicorn's exit: the signal, once it is done
    finally:
        proc.kill()
        proc.wait()

"""The OpenAI-compatible server: `uld serve --model DIR` (docs/serve.md).

    app = create_app(model, tokenizer, "runs/uld")       # a FastAPI app, for any ASGI server
    serve("runs/uld", port=8000, api_key="secret")       # load any model folder, run uvicorn

Endpoints: POST /v1/chat/completions, POST /v1/completions (both with `stream: true` as
server-sent events in OpenAI's chunk format, ending with `data: [DONE]`), GET /v1/models,
GET /health. One model in memory; the requests in flight are decoded together by
`uld.batching.Batcher`, joining and leaving the batch at step boundaries. A ULD model's alpha
and filter can be set per request with the extra body field `"uld": {"alpha": .., "filter": ..}`.
Requests and replies are `uld.openai_api`'s; every refusal is an OpenAI-style JSON error with a
4xx status, and the server goes on serving.
"""

# No `from __future__ import annotations`: FastAPI reads the handlers' annotations (Request,
# imported inside create_app since fastapi is an optional dependency) as objects.
import asyncio
import hmac
import json
import sys
import time
import uuid
from contextlib import asynccontextmanager, suppress

from uld.batching import Batcher, Event, Job
from uld.evaluate import context_length
from uld.extras import require
from uld.logit_diff import ULDModel
from uld.openai_api import (
    APIError,
    ChatRequest,
    CompletionRequest,
    chat_ids,
    choice,
    completion_ids,
    limits,
    parse_request,
    usage,
)
from uld.runs import load_any

MAX_BODY = 1 << 20  # bytes of a request body


def create_app(
    model,
    tokenizer,
    name: str,
    api_key: str | None = None,
    max_tokens_cap: int = 1024,
    max_batch: int = 32,
    max_body: int = MAX_BODY,
):
    """A FastAPI app serving `model` (plain or ULDModel) as the model `name`. Its decode worker
    (`app.state.batcher`) starts and stops with the app's lifespan."""
    require("fastapi", "serve", "uld serve")
    from fastapi import APIRouter, Depends, FastAPI, Request
    from fastapi.responses import JSONResponse, StreamingResponse
    from starlette.exceptions import HTTPException

    batcher = Batcher(model, tokenizer, max_batch=max_batch)
    context = context_length(model)
    mode = model.mode if isinstance(model, ULDModel) else None
    created = int(time.time())

    @asynccontextmanager
    async def lifespan(app):
        batcher.start()
        yield
        batcher.close()  # after uvicorn's graceful shutdown: the requests in flight are done

    app = FastAPI(title=f"uld serve: {name}", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.batcher = batcher

    @app.exception_handler(APIError)
    async def api_error(request, e: APIError):
        return JSONResponse(e.body(), status_code=e.status)

    @app.exception_handler(HTTPException)  # unknown paths and methods
    async def http_error(request, e: HTTPException):
        return JSONResponse(APIError(e.status_code, str(e.detail)).body(), e.status_code)

    async def check_key(request: Request) -> None:
        given = request.headers.get("authorization", "")
        if api_key is not None and not hmac.compare_digest(
            given.encode(), f"Bearer {api_key}".encode()
        ):
            message = "missing or wrong API key (send Authorization: Bearer KEY)"
            raise APIError(401, message, code="invalid_api_key")

    async def read(request: Request, cls):
        too_large = APIError(413, f"the body is over {max_body} bytes", code="request_too_large")
        if int(request.headers.get("content-length") or 0) > max_body:
            raise too_large
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > max_body:
                raise too_large
        return parse_request(body, cls, name, mode)

    class Stream(StreamingResponse):
        """A streamed answer whose job is cancelled however the stream ends: a client that
        disconnects frees its batch slot."""

        def __init__(self, job: Job, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.job = job

        async def __call__(self, scope, receive, send):
            try:
                await super().__call__(scope, receive, send)
            finally:
                self.job.cancel()  # a no-op once it is done

    async def complete(request: Request, req, prompt: list[int], chat: bool):
        max_tokens, stop = limits(req, len(prompt), context, max_tokens_cap)
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[Event] = asyncio.Queue()

        def emit(event: Event) -> None:  # called on the decode thread
            with suppress(RuntimeError):  # a closed loop: nobody is listening any more
                loop.call_soon_threadsafe(events.put_nowait, event)

        settings = req.uld.model_dump() if req.uld else {}
        job = Job(prompt, max_tokens, emit, req.temperature, req.top_p, req.seed, stop, **settings)
        try:
            batcher.submit(job)
        except RuntimeError as e:
            raise APIError(503, str(e), code="shutting_down") from None
        head = {
            "id": f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}",
            "object": "chat.completion" if chat else "text_completion",
            "created": int(time.time()),
            "model": name,
        }
        if not req.stream:
            return await collect(request, job, events, head, chat)
        if chat:
            head["object"] = "chat.completion.chunk"
        include_usage = bool(req.stream_options and req.stream_options.include_usage)

        def sse(data: dict) -> str:
            return f"data: {json.dumps(data)}\n\n"

        async def chunks():
            if chat:
                opening = choice(chat, "", stream=True)
                opening["delta"]["role"] = "assistant"
                yield sse({**head, "choices": [opening]})
            while True:
                event = await events.get()
                if event.error:
                    yield sse(APIError(500, event.error, code="decode_failed").body())
                    break
                if event.text:
                    yield sse({**head, "choices": [choice(chat, event.text, stream=True)]})
                if event.finish:
                    end = choice(chat, None, event.finish, stream=True)
                    yield sse({**head, "choices": [end]})
                    if include_usage:
                        yield sse(
                            {**head, "choices": [], "usage": usage(len(prompt), event.tokens)}
                        )
                    break
            yield "data: [DONE]\n\n"

        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        return Stream(job, chunks(), media_type="text/event-stream", headers=headers)

    async def collect(request: Request, job: Job, events: asyncio.Queue, head: dict, chat: bool):
        """The whole answer as one reply; a client that disconnects meanwhile cancels it."""
        parts = []
        try:
            while True:
                try:
                    event = await asyncio.wait_for(events.get(), timeout=1.0)
                except TimeoutError:
                    if await request.is_disconnected():
                        return JSONResponse({}, status_code=499)  # nobody reads it
                    continue
                if event.error:
                    raise APIError(500, event.error, code="decode_failed")
                parts.append(event.text)
                if event.finish:
                    break
        finally:
            job.cancel()
        reply = choice(chat, "".join(parts), event.finish)
        return {**head, "choices": [reply], "usage": usage(len(job.prompt), event.tokens)}

    v1 = APIRouter(prefix="/v1", dependencies=[Depends(check_key)])

    @v1.post("/chat/completions")
    async def chat_completions(request: Request):
        req = await read(request, ChatRequest)
        with batcher.tokenizer_lock:
            prompt = chat_ids(tokenizer, req.messages)
        return await complete(request, req, prompt, chat=True)

    @v1.post("/completions")
    async def completions(request: Request):
        req = await read(request, CompletionRequest)
        with batcher.tokenizer_lock:
            prompt = completion_ids(tokenizer, req.prompt)
        return await complete(request, req, prompt, chat=False)

    @v1.get("/models")
    async def models():
        card = {"id": name, "object": "model", "created": created, "owned_by": "uld"}
        if mode is not None:
            card["uld"] = {"mode": mode, "alpha": model.alpha, "filter": model.filter}
            if mode == "uld":
                card["uld"]["combine"] = model.combine
        return {"object": "list", "data": [card]}

    app.include_router(v1)

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": name, "active": batcher.active, "waiting": batcher.waiting}

    return app


def serve(
    model_path: str | None,
    host: str = "127.0.0.1",
    port: int = 8000,
    api_key: str | None = None,
    max_tokens_cap: int = 1024,
    max_batch: int = 32,
    name: str | None = None,
    alpha: float | None = None,
    filter: float | None = None,
    target: str | None = None,
    combine: str | None = None,
) -> None:
    """Load any model folder (`uld.runs.load_any`; `alpha`, `filter`, `target`, `combine` as
    there) and serve it with uvicorn until SIGINT or SIGTERM; shutdown is graceful: the requests
    in flight finish first. `name`: the model name clients ask for (default `model_path`)."""
    for module in ("fastapi", "uvicorn"):  # before the model is loaded
        require(module, "serve", "uld serve")
    import uvicorn

    if max_tokens_cap < 1 or max_batch < 1:
        raise ValueError(f"max_tokens_cap={max_tokens_cap} and max_batch={max_batch}: both >= 1")
    model, tokenizer = load_any(model_path, alpha, filter, target, combine)
    name = name or model_path or "default"
    app = create_app(model, tokenizer, name, api_key, max_tokens_cap, max_batch)
    if host not in ("127.0.0.1", "localhost", "::1") and api_key is None:
        print(f"[uld] warning: {host} without --api-key: anyone who reaches it can use it")
    print(f"[uld] serving {name!r} at http://{host}:{port}/v1", file=sys.stderr)
    uvicorn.run(app, host=host, port=port, log_level="info")

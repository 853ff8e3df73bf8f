"""The OpenAI API as `uld serve` speaks it: request models (pydantic), their checks, the prompt
a request becomes, and the JSON of replies and stream chunks.

Every refusal is an `APIError`, sent as OpenAI's JSON error {"error": {"message", "type",
"param", "code"}} with its HTTP status. What the server does not do (n > 1, logprobs, tools,
penalties, ...) is refused by name; a field OpenAI does not have either is refused too.
"""

from __future__ import annotations

import json
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from uld.config import MAX_ALPHA
from uld.data.format import SYSTEM_PROMPT

# --- requests --------------------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ULDSettings(_Strict):
    """The extra body field `uld`: this request's ULD settings (unset: the model's own)."""

    alpha: float | None = Field(None, ge=0, le=MAX_ALPHA)
    filter: float | None = Field(None, gt=0, le=1)


class StreamOptions(_Strict):
    include_usage: bool = False


class _Request(_Strict):
    model: str
    max_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(1.0, ge=0, le=2)  # OpenAI's default; 0 is greedy
    top_p: float = Field(1.0, gt=0, le=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    n: int = 1
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None
    uld: ULDSettings | None = None
    # OpenAI's fields this server has no use for: accepted only at their neutral values
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: dict | None = None


class TextPart(_Strict):
    type: Literal["text"]
    text: str


class Message(_Strict):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]
    name: str | None = None

    def text(self) -> str:
        return (
            self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)
        )


class ChatRequest(_Request):
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool | None = None
    top_logprobs: int | None = None
    tools: list | None = None
    tool_choice: str | dict | None = None
    response_format: dict | None = None


class CompletionRequest(_Request):
    prompt: str | list[str] | list[int] | list[list[int]]
    logprobs: int | None = None
    echo: bool | None = None
    best_of: int | None = None
    suffix: str | None = None


# --- errors ----------------------------------------------------------------------------------


class APIError(Exception):
    def __init__(
        self, status: int, message: str, param: str | None = None, code: str | None = None
    ):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code

    def body(self) -> dict:
        kind = "invalid_request_error" if self.status < 500 else "server_error"
        return {
            "error": {"message": self.message, "type": kind, "param": self.param, "code": self.code}
        }


def check_supported(req: _Request) -> None:
    """Refuse what this server does not do, naming the field."""
    unsupported = {
        "n": req.n != 1,
        "presence_penalty": bool(req.presence_penalty),
        "frequency_penalty": bool(req.frequency_penalty),
        "logit_bias": bool(req.logit_bias),
        "logprobs": bool(getattr(req, "logprobs", None)),
        "top_logprobs": bool(getattr(req, "top_logprobs", None)),
        "tools": bool(getattr(req, "tools", None)),
        "tool_choice": getattr(req, "tool_choice", None) not in (None, "none"),
        "response_format": (getattr(req, "response_format", None) or {"type": "text"})
        != {"type": "text"},
        "echo": bool(getattr(req, "echo", None)),
        "best_of": getattr(req, "best_of", None) not in (None, 1),
        "suffix": bool(getattr(req, "suffix", None)),
    }
    for param, bad in unsupported.items():
        if bad:
            value = json.dumps(getattr(req, param), default=str)
            hint = " (this server returns one choice per request)" if param == "n" else ""
            raise APIError(400, f"{param}={value} is not supported by this server{hint}", param)


# --- prompts ---------------------------------------------------------------------------------


def chat_ids(tokenizer, messages: list[Message]) -> list[int]:
    """The prompt for a conversation, in uld's own format (`uld.data.format.prompt_ids`): the
    chat template with uld's system prompt unless the conversation brings one; without a
    template, "Question: ...\\nAnswer:" turns. One user message gives exactly `prompt_ids`."""
    if messages[-1].role != "user":
        raise APIError(400, "the last message must be the user's", "messages")
    turns = [
        {"role": "system" if m.role == "developer" else m.role, "content": m.text()}
        for m in messages
    ]
    if getattr(tokenizer, "chat_template", None):
        if turns[0]["role"] != "system":
            turns.insert(0, {"role": "system", "content": SYSTEM_PROMPT})
        text = tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=True)
        return tokenizer(text, add_special_tokens=False).input_ids
    form = {"system": "{}\n", "user": "Question: {}\nAnswer:", "assistant": " {}\n"}
    return tokenizer("".join(form[t["role"]].format(t["content"]) for t in turns)).input_ids


def completion_ids(tokenizer, prompt) -> list[int]:
    if isinstance(prompt, list) and prompt and isinstance(prompt[0], list | str):
        if len(prompt) != 1:
            raise APIError(400, f"{len(prompt)} prompts: send one per request", "prompt")
        prompt = prompt[0]
    ids = tokenizer(prompt).input_ids if isinstance(prompt, str) else list(prompt)
    if not ids:
        raise APIError(400, "the prompt is empty", "prompt")
    if not all(0 <= i < len(tokenizer) for i in ids):
        raise APIError(400, f"the prompt holds token ids outside [0, {len(tokenizer)})", "prompt")
    return ids


def parse_request(body: bytes, cls: type[_Request], name: str, mode: str | None) -> _Request:
    """The request in `body` (JSON), checked: valid for `cls`, asking for the model `name`,
    nothing this server does not do. `mode`: the served model's ULD mode ("uld", "offset"), or
    None for a plain model (which takes no `uld` field)."""
    try:
        req = cls.model_validate_json(body)
    except ValidationError as e:
        err = e.errors()[0]
        param = ".".join(str(p) for p in err["loc"]) or None
        if err["type"] == "json_invalid":
            raise APIError(400, f"the body is not valid JSON: {err['msg']}") from None
        if err["type"] == "extra_forbidden":
            raise APIError(400, f"{param!r} is not supported by this server", param) from None
        raise APIError(400, f"{param or 'body'}: {err['msg']}", param) from None
    if req.model != name:
        message = f"the model {req.model!r} does not exist; this server serves {name!r}"
        raise APIError(404, message, "model", "model_not_found")
    check_supported(req)
    if req.uld is not None and mode is None:
        raise APIError(400, f"{name} is a plain model: 'uld' settings are for ULD models", "uld")
    if req.uld is not None and req.uld.filter is not None and mode == "offset":
        raise APIError(400, f"{name} is an Offset model: it has alpha but no filter", "uld.filter")
    return req


def limits(req: _Request, prompt: int, context: int | None, cap: int) -> tuple[int, list[str]]:
    """(max tokens, stop strings) of a request whose prompt is `prompt` tokens long, for a
    model whose context holds `context` positions, on a server whose max_tokens cap is `cap`.
    Unset, max_tokens is what fits: the cap or the rest of the context."""
    asked = getattr(req, "max_completion_tokens", None) or req.max_tokens
    if asked is not None and asked > cap:
        raise APIError(400, f"max_tokens={asked} is above this server's cap of {cap}", "max_tokens")
    room = context - prompt if context else cap
    if room < 1:
        raise APIError(
            400,
            f"the prompt is {prompt} tokens and the model's context holds {context}: shorten it",
            "messages" if isinstance(req, ChatRequest) else "prompt",
            "context_length_exceeded",
        )
    if asked is not None and asked > room:
        raise APIError(
            400,
            f"the prompt ({prompt} tokens) and max_tokens={asked} do not fit in the model's "
            f"context of {context}: ask for at most {room}",
            "max_tokens",
            "context_length_exceeded",
        )
    stop = [req.stop] if isinstance(req.stop, str) else list(req.stop or [])
    if len(stop) > 4 or not all(stop):
        raise APIError(400, "stop: up to 4 non-empty strings", "stop")
    return asked or min(cap, room), stop


# --- replies ---------------------------------------------------------------------------------


def usage(prompt: int, completion: int) -> dict:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def choice(chat: bool, text: str | None, finish: str | None = None, stream: bool = False) -> dict:
    """One entry of `choices`: a completion's text, a chat reply's message, or (`stream`) a
    chat chunk's delta (`text` None: the closing chunk's empty delta)."""
    if not chat:
        return {"index": 0, "text": text or "", "logprobs": None, "finish_reason": finish}
    if stream:
        key, body = "delta", ({} if text is None else {"content": text})
    else:
        key, body = "message", {"role": "assistant", "content": text}
    return {"index": 0, key: body, "logprobs": None, "finish_reason": finish}

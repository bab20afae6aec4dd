"""OpenAI's wire format ↔ the chat task's typed requests and results (no web framework here).

Bodies are read as OpenAI documents them (`messages` with string content or `text` / `image_url`
parts, `max_tokens` / `max_completion_tokens`, `stop`, `seed`, `n`, `response_format`, …) and turned
into a ChatRequest / CompletionRequest, so the checks of modules/chat/params.py apply to API calls
exactly as to the Chat tab. Every refusal names its parameter the way OpenAI's API does
(`messages[0].content[1].image_url.url`).
"""
from __future__ import annotations

import re
import time
from typing import Any

from modules.chat.params import ChatRequest, CompletionRequest, from_pydantic
from modules.errors import AtelierError, InvalidRequest, ModelLoadError, NotFound

ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}
UNSUPPORTED = {  # parameter -> why it is refused rather than silently ignored
    "tools": "tool calls are not supported", "tool_choice": "tool calls are not supported",
    "functions": "function calls are not supported", "function_call": "function calls are not supported",
    "logprobs": "log probabilities are not returned", "top_logprobs": "log probabilities are not returned",
    "logit_bias": "logit_bias is not supported", "audio": "audio output is not supported",
    "prediction": "predicted outputs are not supported", "suffix": "suffix (insertion) is not supported",
    "echo": "echo is not supported", "best_of": "best_of is not supported",
}
_PENALTIES = ("frequency_penalty", "presence_penalty")


class OpenAIError(AtelierError):
    """A refusal of the API layer itself, with OpenAI's `type` and `code`."""

    def __init__(self, message: str, param: str | None, status: int = 400, code: str | None = None):
        super().__init__(message, param)
        self.status = status
        self.code = code


def error_body(exc: AtelierError) -> tuple[int, dict]:
    """(HTTP status, {"error": {"message", "type", "param", "code"}}) for any AtelierError."""
    status = 400 if exc.status == 422 else exc.status
    if isinstance(exc, ModelLoadError):
        status = 500  # the model on disk is broken: not something the client sent
    kind = "invalid_request_error" if 400 <= status < 500 else "server_error"
    code = getattr(exc, "code", None)
    if code is None and isinstance(exc, NotFound) and exc.field in ("model", "llm name", "vlm name"):
        code = "model_not_found"
    param = _param_name(exc.field)
    if param in ("llm name", "vlm name"):
        param = "model"
    return status, {"error": {"message": exc.message, "type": kind, "param": param, "code": code}}


def _param_name(field: str | None) -> str | None:
    """messages.0.content.1 → messages[0].content[1]."""
    if not field:
        return None
    name = re.sub(r"\.(\d+)(?=\.|$)", r"[\1]", field)
    return re.sub(r"(content\[\d+\])\.image$", r"\1.image_url.url", name)  # the chat types' image is OpenAI's url


# -- requests ----------------------------------------------------------------------------------
def chat_request(body: dict) -> tuple[ChatRequest, dict]:
    """The ChatRequest and the API-only options ({"stream", "include_usage"})."""
    _refuse_unsupported(body)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("messages must be a non-empty list of {role, content}", "messages")
    fields = _sampling(body, max_default=None)
    fields["messages"] = [_message(m, i) for i, m in enumerate(messages)]
    rf = body.get("response_format")
    if rf is not None:
        fields["response_format"] = _response_format(rf)
    return _build(ChatRequest, fields, body), _stream_options(body)


def completion_request(body: dict) -> tuple[CompletionRequest, dict]:
    _refuse_unsupported(body)
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise InvalidRequest("prompt must be a string (one prompt per request)", "prompt")
    fields = _sampling(body, max_default=None)
    fields["prompt"] = prompt
    return _build(CompletionRequest, fields, body), _stream_options(body)


def _refuse_unsupported(body: dict) -> None:
    if not isinstance(body.get("model"), str) or not body["model"].strip():
        raise InvalidRequest("model is required: one of the ids GET /v1/models lists", "model")
    for name, why in UNSUPPORTED.items():
        value = body.get(name)
        if value not in (None, False, [], {}, 0) or (name == "best_of" and value not in (None, 1)):
            raise InvalidRequest(f"{why} by this server; leave {name} out", name)
    n = body.get("n")
    if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n != 1):
        raise InvalidRequest("only n=1 is supported (one choice per request)", "n")
    for name in _PENALTIES:
        value = body.get(name)
        if value is None:
            continue
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not -2.0 <= value <= 2.0:
            raise InvalidRequest(f"{name} must be a number between -2 and 2", name)
        if value != 0:
            raise InvalidRequest(f"{name} is not supported (use repetition_penalty); send 0 or leave it out", name)


def _sampling(body: dict, max_default: int | None) -> dict:
    fields: dict[str, Any] = {"model": body["model"].strip()}
    for name in ("temperature", "top_p", "top_k", "min_p", "repetition_penalty", "seed", "adapter"):  # + extra_body
        if body.get(name) is not None:
            fields[name] = body[name]
    if fields.get("top_p") == 0:  # OpenAI allows 0: only the most likely token
        fields.pop("top_p")
        fields["temperature"] = 0.0
    which = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
    if body.get(which) is not None:
        fields["max_new_tokens"] = body[which]
    elif max_default is not None:
        fields["max_new_tokens"] = max_default
    stop = body.get("stop")
    if stop is not None:
        if isinstance(stop, str):
            stop = [stop]
        if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
            raise InvalidRequest("stop must be a string or a list of strings", "stop")
        fields["stop"] = stop
    if isinstance(body.get("user"), str) and body["user"]:
        fields["cache_key"] = "user:" + body["user"][:150]  # one prefix cache per end user
    return fields


def _message(m: Any, i: int) -> dict:
    where = f"messages[{i}]"
    if not isinstance(m, dict):
        raise InvalidRequest("each message must be an object {role, content}", where)
    role = m.get("role")
    if role in ("tool", "function"):
        raise InvalidRequest(f"role {role!r} is not supported (no tool calls); use system, user or assistant",
                             where + ".role")
    if role not in ROLES:
        raise InvalidRequest(f"role must be one of system, developer, user, assistant; got {role!r}", where + ".role")
    content = m.get("content")
    if isinstance(content, str):
        return {"role": ROLES[role], "content": content}
    if not isinstance(content, list) or not content:
        raise InvalidRequest("content must be a string or a non-empty list of parts", where + ".content")
    return {"role": ROLES[role], "content": [_part(p, f"{where}.content[{j}]") for j, p in enumerate(content)]}


def _part(p: Any, where: str) -> dict:
    if not isinstance(p, dict):
        raise InvalidRequest("a content part must be an object with a type", where)
    kind = p.get("type")
    if kind in ("text", "input_text"):
        if not isinstance(p.get("text"), str):
            raise InvalidRequest("a text part needs a text string", where + ".text")
        return {"type": "text", "text": p["text"]}
    if kind == "image_url":
        url = p.get("image_url")
        url = url.get("url") if isinstance(url, dict) else url
        if not isinstance(url, str) or not url.startswith("data:"):
            raise InvalidRequest("image_url.url must be a data: URL (data:image/png;base64,…); this server does not "
                                 "fetch images from the web", where + ".image_url.url")
        return {"type": "image", "image": url}
    raise InvalidRequest(f"content part type must be text or image_url; got {kind!r}", where + ".type")


def _response_format(rf: Any) -> dict:
    if not isinstance(rf, dict) or rf.get("type") not in ("text", "json_object", "json_schema"):
        raise InvalidRequest("response_format.type must be text, json_object or json_schema", "response_format.type")
    if rf["type"] != "json_schema":
        return {"type": rf["type"]}
    spec = rf.get("json_schema")
    if not isinstance(spec, dict) or not isinstance(spec.get("schema"), dict):
        raise InvalidRequest("response_format.json_schema.schema must be a JSON schema object",
                             "response_format.json_schema.schema")
    return {"type": "json_schema", "json_schema": spec["schema"]}


def _stream_options(body: dict) -> dict:
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise InvalidRequest("stream must be true or false", "stream")
    opts = body.get("stream_options") or {}
    if not isinstance(opts, dict):
        raise InvalidRequest("stream_options must be an object", "stream_options")
    return {"stream": stream, "include_usage": bool(opts.get("include_usage")) and stream}


def _build(cls, fields: dict, body: dict):
    from pydantic import ValidationError

    try:
        return cls.model_validate(fields)
    except ValidationError as exc:
        err = from_pydantic(exc)
        field = err.field or "body"
        if field == "max_new_tokens":
            field = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
        elif field.startswith("response_format.json_schema"):
            field = "response_format.json_schema.schema"
        raise InvalidRequest(err.message, field) from None


# -- responses ------------------------------------------------------------------------------------
def usage(result) -> dict:
    u = result.usage
    return {"prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens,
            "total_tokens": u.total_tokens, "prompt_tokens_details": {"cached_tokens": u.cached_tokens}}


def timings(job, result) -> dict:
    """Atelier's own measurements (OpenAI clients ignore the field; llama.cpp's server sends one too)."""
    ended = job.finished_at or time.time()
    return {"time_to_first_token_s": result.time_to_first_token, "tokens_per_second": result.tokens_per_second,
            "generation_s": round(result.seconds, 4), "job_s": round(ended - job.created_at, 4),
            "queued_s": round((job.started_at or job.created_at) - job.created_at, 4),
            "dropped_messages": result.dropped_messages, "context_length": result.context_length,
            "seed": result.seed, "interrupted": result.interrupted}


def chat_response(job, result) -> dict:
    return {"id": f"chatcmpl-{job.id}", "object": "chat.completion", "created": int(job.created_at),
            "model": result.model, "system_fingerprint": None,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": result.text, "refusal": None},
                         "logprobs": None, "finish_reason": result.finish_reason}],
            "usage": usage(result), "timings": timings(job, result)}


def chat_chunk(job, model: str, delta: dict, finish_reason: str | None = None, with_usage: bool = False) -> dict:
    chunk = {"id": f"chatcmpl-{job.id}", "object": "chat.completion.chunk", "created": int(job.created_at),
             "model": model, "system_fingerprint": None,
             "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]}
    if with_usage:
        chunk["usage"] = None
    return chunk


def usage_chunk(job, result, kind: str) -> dict:
    obj = "chat.completion.chunk" if kind == "chat" else "text_completion"
    prefix = "chatcmpl" if kind == "chat" else "cmpl"
    return {"id": f"{prefix}-{job.id}", "object": obj, "created": int(job.created_at), "model": result.model,
            "choices": [], "usage": usage(result)}


def completion_response(job, result) -> dict:
    return {"id": f"cmpl-{job.id}", "object": "text_completion", "created": int(job.created_at),
            "model": result.model, "system_fingerprint": None,
            "choices": [{"index": 0, "text": result.text, "logprobs": None, "finish_reason": result.finish_reason}],
            "usage": usage(result), "timings": timings(job, result)}


def completion_chunk(job, model: str, text: str, finish_reason: str | None = None) -> dict:
    return {"id": f"cmpl-{job.id}", "object": "text_completion", "created": int(job.created_at), "model": model,
            "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason}]}


def model_card(entry) -> dict:
    try:
        created = int(entry.path.stat().st_mtime)
    except OSError:
        created = int(time.time())
    return {"id": entry.name, "object": "model", "created": created, "owned_by": "atelier",
            "kind": entry.kind, "context_length": entry.metadata.get("context_length"),
            "accepts_images": bool(entry.metadata.get("accepts_images"))}

"""OpenAI-compatible /v1 on the studio's port: models, chat completions, completions.

Thin like every router: JSON → ChatRequest / CompletionRequest (openai_wire.py) → a job on the
"chat" queue → its result, or its stream read with a cursor and sent as server-sent events ending
with `data: [DONE]`. The router never touches a model. A client that disconnects mid-stream
interrupts its job. Errors are OpenAI's shape, {"error": {"message", "type", "param", "code"}}.
"""
from __future__ import annotations

import json

from modules.errors import AtelierError
from modules.jobs import JobState
from starlette.requests import Request  # at module level: FastAPI resolves endpoint annotations by name
from webui.api import openai_wire as wire
from webui.api.common import Waiter, ensure_ready, read_json_object

STREAM_POLL_S = 15.0  # an SSE comment at least this often keeps proxies from closing an idle stream
START_WAIT_S = 600.0  # a stream's headers wait for the prompt to be accepted (so a refusal is a real 4xx)


def router(studio):
    from fastapi import APIRouter
    from fastapi.concurrency import run_in_threadpool
    from fastapi.responses import JSONResponse
    from starlette.responses import StreamingResponse

    from modules.chat import choose

    r = APIRouter(prefix="/v1", tags=["openai"])
    waiter = Waiter()

    def refusal(exc: AtelierError) -> JSONResponse:
        status, body = wire.error_body(exc)
        return JSONResponse(body, status_code=status)

    @r.get("/models")
    async def models():
        """The language models in models/LLM and models/VLM, as OpenAI lists models."""
        try:
            entries = await run_in_threadpool(choose.chat_models, studio.registry)
        except AtelierError as exc:
            return refusal(exc)
        return {"object": "list", "data": [wire.model_card(e) for e in entries]}

    @r.get("/models/{model_id:path}")
    async def one_model(model_id: str):
        try:
            entry = await run_in_threadpool(choose.find, studio.registry, studio.models, model_id, None)
        except AtelierError as exc:
            return refusal(exc)
        return wire.model_card(entry)

    async def answer(request: Request, kind: str, parse, respond, chunk):
        try:
            body = await read_json_object(request)
            req, opts = await run_in_threadpool(parse, body)  # data: URLs are decoded here: off the loop
            await ensure_ready(studio, waiter)
            job = studio.submit(kind, req)  # the model exists, images fit the model, the schema compiles
            try:
                if not opts["stream"]:
                    await waiter.job(job)
                else:
                    started = await waiter.run(_first_piece, job)
            except BaseException:  # the client went away while its job waited or ran: stop it
                studio.jobs.interrupt(job.id)
                raise
            if not opts["stream"]:
                job.raise_for_error()
                if job.result is None:  # stopped while it waited in the queue
                    raise wire.OpenAIError("the request was interrupted before it started", None, 409)
                return respond(job, job.result)
            if job.state == JobState.FAILED and not started:
                job.raise_for_error()  # refused before any token (the prompt does not fit): a real 4xx
        except AtelierError as exc:
            return refusal(exc)
        return StreamingResponse(_events(studio, waiter, job, opts, chunk, str(req.model)),
                                 media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    @r.post("/chat/completions")
    async def chat_completions(request: Request):
        """OpenAI's chat completions (stream or not); see docs/api.md for the parameters."""
        return await answer(request, "chat", wire.chat_request, wire.chat_response, "chat")

    @r.post("/completions")
    async def completions(request: Request):
        """OpenAI's (legacy) completions: a plain prompt, no chat template."""
        return await answer(request, "completion", wire.completion_request, wire.completion_response, "completion")

    @r.api_route("/{rest:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"], include_in_schema=False)
    def unknown(rest: str):
        return refusal(wire.OpenAIError(f"no endpoint /v1/{rest[:100]} for this method; this server has "
                                        "/v1/models, /v1/chat/completions and /v1/completions", None, 404,
                                        "unknown_url"))

    return r


def _first_piece(job) -> bool:
    """Wait until the job has accepted its prompt (its first stream piece) or ended; True once started."""
    pieces, _cursor, _ended = job.read_stream(0, START_WAIT_S)
    return bool(pieces)


def _sse(obj) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"


async def _events(studio, waiter: Waiter, job, opts: dict, chunk: str, model: str):
    """The job's stream as OpenAI chunks; a disconnect (the generator closed early) interrupts the job."""
    done = False
    try:
        name = model
        if chunk == "chat":
            yield _sse(wire.chat_chunk(job, name, {"role": "assistant", "content": ""},
                                       with_usage=opts["include_usage"]))
        cursor = 0
        while True:
            pieces, cursor, ended = await waiter.run(job.read_stream, cursor, STREAM_POLL_S)
            for piece in pieces:
                if "prompt" in piece:
                    name = piece["prompt"].get("model", name)
                text = piece.get("text")
                if text:
                    yield _sse(wire.chat_chunk(job, name, {"content": text}, with_usage=opts["include_usage"])
                               if chunk == "chat" else wire.completion_chunk(job, name, text))
            if ended:
                break
            if not pieces:
                yield ": waiting\n\n"
        if job.state == JobState.FAILED:
            err = AtelierError(job.error or "the job failed", job.error_field)
            err.status = job.error_status
            yield _sse(wire.error_body(err)[1])
        elif job.result is not None:
            result = job.result
            last = (wire.chat_chunk(job, result.model, {}, result.finish_reason, with_usage=opts["include_usage"])
                    if chunk == "chat" else wire.completion_chunk(job, result.model, "", result.finish_reason))
            yield _sse({**last, "timings": wire.timings(job, result)})
            if opts["include_usage"]:
                yield _sse(wire.usage_chunk(job, result, chunk))
        yield "data: [DONE]\n\n"
        done = True
    finally:
        if not done and not job.state.finished:
            studio.jobs.interrupt(job.id)  # the client went away: stop generating for nobody

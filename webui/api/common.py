"""Plumbing shared by the REST routers: strict JSON bodies, waiting for jobs off the event
loop, readiness, and image encoding. No model or device is touched here."""
from __future__ import annotations

import json
from typing import Any

from modules.errors import AtelierError, InvalidRequest, ServiceUnavailable, validation_problems

MAX_BODY_BYTES = 600 * 1024 * 1024  # 8 init images of 64 MiB in base64, with room to spare
WAITER_THREADS = 2048  # each waiting request parks one idle thread here, never in the shared pool
REQUEST_PARTS = ("body", "query", "path")  # FastAPI's first location part: where, not which field


class BodyTooLarge(AtelierError):
    status = 413


def _reject_constant(name: str):
    # json.loads accepts NaN and Infinity by default; no client means them.
    raise ValueError(f"{name} is not a number JSON allows")


def parse_json_object(raw: bytes) -> dict:
    """A request body → dict, or InvalidRequest naming `body`."""
    if len(raw) > MAX_BODY_BYTES:
        raise BodyTooLarge(f"the request body is larger than {MAX_BODY_BYTES // 2**20} MiB", "body")
    if not raw.strip():
        raise InvalidRequest("the request body is empty; send a JSON object", "body")
    try:
        data = json.loads(raw, parse_constant=_reject_constant)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise InvalidRequest(f"the request body is not valid JSON ({str(exc)[:120]})", "body") from None
    if not isinstance(data, dict):
        raise InvalidRequest(f"the request body must be a JSON object, not {type(data).__name__}", "body")
    return data


async def read_json_object(request) -> dict:
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > MAX_BODY_BYTES:
        raise BodyTooLarge(f"the request body is larger than {MAX_BODY_BYTES // 2**20} MiB", "body")
    return parse_json_object(await request.body())


class Waiter:
    """Runs blocking waits (a job finishing, a model loading) on threads of its own.

    FastAPI's sync endpoints share one pool of 40 threads; 40 requests blocked in
    job.wait() there would leave none for /progress and /interrupt. Waiting here keeps
    that pool free however many requests queue up.
    """

    def __init__(self, threads: int = WAITER_THREADS):
        import anyio

        self._limiter = anyio.CapacityLimiter(threads)

    async def run(self, fn, *args) -> Any:
        import anyio.to_thread

        return await anyio.to_thread.run_sync(fn, *args, limiter=self._limiter, abandon_on_cancel=True)

    async def job(self, job):
        await self.run(job.wait)
        return job


async def ensure_ready(studio, waiter: Waiter, timeout: float = 600) -> None:
    """Wait for start-up loading; refuse with 503 when it has not finished in time.

    A start-up that failed (studio.load_error) is not refused here: the jobs report what is wrong,
    and a checkpoint switch may mend it."""
    if not studio.ready.is_set():
        await waiter.run(studio.wait_ready, timeout)
    if not studio.ready.is_set():
        raise ServiceUnavailable("the studio is still loading; try again in a moment", None)


def validation_response(exc):
    """FastAPI's RequestValidationError → 422 {error, field, detail, errors: [{field, detail}]}."""
    from fastapi.responses import JSONResponse

    first = InvalidRequest.from_validation(exc, skip=REQUEST_PARTS)
    problems = validation_problems(exc, skip=REQUEST_PARTS)
    body = {**first.to_json(), "errors": [{"field": f, "detail": m} for f, m in problems[:20]]}
    return JSONResponse(body, status_code=422)


def b64_png(image, infotext: str | None = None) -> str:
    from modules.images import encode_png_base64

    return encode_png_base64(image, infotext)


def b64_image(image, infotext: str | None, fmt: str = "png", quality: int = 80) -> str:
    """An image as A1111's API sends it: base64 in the samples_format, the infotext inside."""
    import base64

    from modules.images import encode_image

    return base64.b64encode(encode_image(image, infotext, fmt, quality)).decode("ascii")


def request_schema(cls) -> dict:
    """OpenAPI `requestBody` for an endpoint that reads its own body (so /docs shows the fields)."""
    schema = cls.model_json_schema(ref_template="#/components/schemas/{model}")
    schema.pop("$defs", None)
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}

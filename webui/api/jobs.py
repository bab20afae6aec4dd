"""REST for the job engine: /atelier/v1/jobs lists long jobs (this run's and earlier runs'),
/atelier/v1/jobs/{id} one job's state, /stream its pieces as Server-Sent Events (each client
reads with its own cursor, so every piece arrives, in order), /interrupt stops it."""
from __future__ import annotations

import json

from modules.errors import InvalidRequest, NotFound

STREAM_POLL_S = 15.0  # an SSE comment at least this often keeps proxies from closing an idle stream


def router(studio):
    from fastapi import APIRouter
    from starlette.responses import StreamingResponse

    from webui.api.common import Waiter

    r = APIRouter(prefix="/atelier/v1/jobs", tags=["jobs"])
    waiter = Waiter()  # a stream long-polls: on threads of its own, never the shared pool

    def _job_json(job_id: str) -> dict:
        try:
            job = studio.jobs.get(job_id)
        except NotFound:
            stored = [row for row in studio.jobs.listing() if row["id"] == job_id]
            if not stored:
                raise
            return stored[0]
        return job.details()

    @r.get("")
    def listing(kind: str | None = None) -> list[dict]:
        """Long jobs (training), newest first, including those of earlier runs."""
        return studio.jobs.listing(kind)

    @r.get("/{job_id}")
    def one(job_id: str) -> dict:
        return _job_json(job_id)

    @r.post("/{job_id}/interrupt")
    def interrupt(job_id: str) -> dict:
        studio.jobs.interrupt(job_id)
        return {"id": job_id, "interrupt_requested": True}

    @r.get("/{job_id}/stream")
    async def stream(job_id: str, cursor: int = 0):
        """The job's stream from `cursor` as SSE: `data: <piece as JSON>` per piece, then `event: end`."""
        if cursor < 0:
            raise InvalidRequest("must be 0 or more", "cursor")
        job = studio.jobs.get(job_id)

        async def events():
            at = cursor
            while True:
                pieces, at, ended = await waiter.run(job.read_stream, at, STREAM_POLL_S)
                for piece in pieces:
                    yield f"data: {json.dumps(piece)}\n\n"
                if ended:
                    yield f"event: end\ndata: {json.dumps(job.snapshot())}\n\n"
                    return
                if not pieces:
                    yield ": waiting\n\n"

        return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    return r

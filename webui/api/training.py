"""REST for training: POST /atelier/v1/train (the typed request the Train tab builds) → the job id;
/train/plan the step math and memory estimate before Start; /train/runs and /train/resume. The job
itself is read and stopped through /atelier/v1/jobs/{id} and /interrupt."""
from __future__ import annotations

from starlette.requests import Request  # at module level: FastAPI resolves endpoint annotations by name
from webui.api.common import Waiter, ensure_ready, read_json_object


def router(studio):
    from fastapi import APIRouter
    from fastapi.concurrency import run_in_threadpool

    from modules.errors import InvalidRequest
    from modules.training import runs
    from modules.training.params import job_kind, parse
    from modules.training.task import services_of
    r = APIRouter(prefix="/atelier/v1/train", tags=["training"])
    waiter = Waiter()
    services = services_of(studio.jobs)  # what the training jobs see (one for every kind, extensions' too)

    def _submit(req) -> dict:
        job = studio.submit(job_kind(req.kind), req)  # the job kind's validator checks the data dir
        return {"id": job.id, "kind": job.kind, "run": req.run_name}

    @r.post("")
    async def train(request: Request) -> dict:
        """Start a training: {"kind": "sd_lora", "output_name", "dataset", …} → {"id"} (any kind of
        services.kinds: the built-in ones and those extensions added)."""
        req = parse(await read_json_object(request), services.kinds)
        await ensure_ready(studio, waiter)
        return await run_in_threadpool(_submit, req)

    @r.post("/plan")
    async def plan(request: Request) -> dict:
        """The step math, memory estimate and dataset findings for a request, without starting it."""
        body = await read_json_object(request)
        await ensure_ready(studio, waiter)
        return await run_in_threadpool(runs.plan, body, services)

    @r.get("/runs")
    async def listing() -> list[dict]:
        return await run_in_threadpool(runs.list_runs, services)

    @r.post("/resume")
    async def resume(request: Request) -> dict:
        """Continue a run from its latest checkpoint: {"run": name}."""
        body = await read_json_object(request)
        if not isinstance(body.get("run"), str):
            raise InvalidRequest("send {\"run\": <run name>}", "run")
        await ensure_ready(studio, waiter)
        req = await run_in_threadpool(runs.resume_request, body["run"], services)
        return await run_in_threadpool(_submit, req)

    return r

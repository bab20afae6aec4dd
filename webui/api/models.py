"""REST for the model manager, every kind: /atelier/v1/models (list with where each model lives and
its footprint, the memory budget per device), load with options, unload. Loads are jobs on the
models queue, like the Models tab's; so are downloads (/download → a job id)."""
from __future__ import annotations


from pydantic import BaseModel, ConfigDict, Field

from starlette.requests import Request  # at module level: FastAPI resolves endpoint annotations by name
from modules.models.download import DownloadRequest
from webui.api.common import Waiter, ensure_ready, read_json_object


class LoadBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: str = Field("checkpoint", description="checkpoint, llm, vlm, or a kind an extension adds")
    name: str = Field(..., description="the model's name as listed")
    options: dict | None = Field(None, description="dtype (auto/fp32/fp16/bf16), quantization (none/int8/nf4/fp4), "
                                                    "double_quant, t5 (none/int8/fp8: a Flux / SD3 checkpoint's T5 "
                                                    "text encoder), modules (Forge's forge_additional_modules: a "
                                                    "transformer-only file's VAE / text encoder files); checked as "
                                                    "LoadOptions, remembered for this model")


class UnloadBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: str = "checkpoint"
    name: str | None = Field(None, description="omit to unload every idle model")


def router(studio):
    from fastapi import APIRouter
    from fastapi.concurrency import run_in_threadpool

    from modules.errors import InvalidRequest

    r = APIRouter(prefix="/atelier/v1/models", tags=["models"])
    waiter = Waiter()

    def _parse(cls, body: dict):
        from pydantic import ValidationError

        try:
            return cls.model_validate(body)
        except ValidationError as exc:
            raise InvalidRequest.from_validation(exc) from None

    @r.get("")
    async def listing() -> dict:
        """Every model on disk, with its location (disk, cpu, cuda…), footprint and whether a job uses it."""
        await ensure_ready(studio, waiter)
        rows = await run_in_threadpool(studio.models.describe)
        return {"models": rows, "budgets": studio.models.budgets(), "loadable_kinds": studio.models.kinds()}

    @r.post("/load", openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
        "schema": LoadBody.model_json_schema()}}}})
    async def load(request: Request) -> dict:
        """Load a model (any kind) with options; the answer has its footprint before and after."""
        body = _parse(LoadBody, await read_json_object(request))
        await ensure_ready(studio, waiter)
        job = studio.submit("load_model", body.model_dump())
        await waiter.job(job)
        job.raise_for_error()
        return job.result

    @r.post("/unload", openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
        "schema": UnloadBody.model_json_schema()}}}})
    async def unload(request: Request) -> dict:
        body = _parse(UnloadBody, await read_json_object(request))
        await ensure_ready(studio, waiter)
        name = None if body.name is None else studio.registry.get(body.kind, body.name, field="name").name
        await run_in_threadpool(studio.models.unload, name, body.kind)
        return {"budgets": studio.models.budgets()}

    @r.post("/download", openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
        "schema": DownloadRequest.model_json_schema()}}}})
    async def download(request: Request) -> dict:
        """Download into the kind's models/ folder (a hub repo, a file in one, or an http(s) URL) as a job:
        follow it at /atelier/v1/jobs/{id}; an interrupted or failed download resumes when asked again."""
        body = await read_json_object(request)
        await ensure_ready(studio, waiter)
        job = await run_in_threadpool(studio.submit, "download", body)
        return {"id": job.id, "kind": job.kind}

    return r



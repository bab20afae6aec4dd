"""REST for vision: POST /atelier/v1/vision (one image, one task, through the job queue), POST
/atelier/v1/vision/batch (several images or a folder → a job id; the job's result holds every image's
outcome and the JSONL file), POST /atelier/v1/vision/video (a video, track or caption → a job id; its result:
the output MP4, the JSONL, the summary) and GET /atelier/v1/vision/tasks (every task, built-in and extensions', with
the models that run it)."""
from __future__ import annotations

from starlette.requests import Request  # at module level: FastAPI resolves endpoint annotations by name
from webui.api.common import Waiter, b64_png, ensure_ready, read_json_object, request_schema


def router(studio):
    from fastapi import APIRouter
    from fastapi.concurrency import run_in_threadpool

    from modules.vision.batch import folder_images
    from modules.vision.params import VisionBatchRequest, VisionRequest, parse_vision
    from modules.vision.video_job import parse_video
    from modules.vision.video_params import VideoRequest

    r = APIRouter(prefix="/atelier/v1/vision", tags=["vision"])
    waiter = Waiter()

    def services():
        return studio.jobs.services_of("vision")  # what the vision jobs see (VisionServices)

    def parse(body: dict) -> VisionRequest:
        # "overlay" here asks for the overlay in the answer (default off); the job draws it only then.
        return parse_vision(VisionRequest, {"overlay": False, **body})

    @r.post("", openapi_extra=request_schema(VisionRequest))
    async def run(request: Request) -> dict:
        """One image, one task → {"model", "task", "prompt", "text", "width", "height", "objects", "invalid"}
        (+ "overlay": base64 PNG when asked)."""
        body = await read_json_object(request)
        req = await run_in_threadpool(parse, body)  # decoding a large image must not block the event loop
        await ensure_ready(studio, waiter)
        job = studio.submit("vision", req)
        await waiter.job(job)
        job.raise_for_error()
        result = job.result
        out = result.to_json()
        if req.overlay and result.overlay is not None:
            out["overlay"] = await run_in_threadpool(b64_png, result.overlay)
        return out

    @r.post("/batch", openapi_extra=request_schema(VisionBatchRequest))
    async def batch(request: Request) -> dict:
        """Images (base64 / data: URLs, with optional names) or a folder under the data dir, one task → {"id", "kind",
        "images"} at once; GET /atelier/v1/jobs/{id} follows it, /stream gives each image's line as it is done."""
        body = await read_json_object(request)
        req = await run_in_threadpool(parse_vision, VisionBatchRequest, body)
        await ensure_ready(studio, waiter)
        return await run_in_threadpool(submit_batch, req)  # listing a folder stays off the event loop

    def submit_batch(req) -> dict:
        job = studio.submit("vision_batch", req)  # the validator refuses a folder outside the data dir
        return {"id": job.id, "kind": job.kind, "images": len(req.images) or len(folder_images(services(), req.folder))}

    @r.post("/video", openapi_extra=request_schema(VideoRequest))
    async def video(request: Request) -> dict:
        """A video (base64 or a path under the data dir), task track or caption → {"id", "kind", "task", "source"}
        at once; GET /atelier/v1/jobs/{id} follows it: its result holds "output" (the MP4), "jsonl" and
        "summary" (tracks, counts per class over time; or captions and the clip's description)."""
        body = await read_json_object(request)
        req = await run_in_threadpool(parse_video, body)
        await ensure_ready(studio, waiter)
        return await run_in_threadpool(submit_video, req)  # the validator decodes the video's first frame

    def submit_video(req) -> dict:
        from modules.vision.video_job import opened

        job = studio.submit("vision_video", req)
        _source, info, start, end = opened(services(), req)
        return {"id": job.id, "kind": job.kind, "task": req.task, "source": info.to_json(), "start": start,
                "end": round(end, 3)}

    @r.get("/tasks")
    async def tasks() -> dict:
        """Every vision task with the models that can run it, the fields it reads and whether it is ready."""
        from modules.vision.catalog import listing

        await ensure_ready(studio, waiter)
        return {"tasks": await run_in_threadpool(listing, services())}

    return r

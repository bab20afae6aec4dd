"""AUTOMATIC1111-compatible /sdapi/v1: generation, progress, interrupt/skip, png-info.

Same paths, field names and response shapes as A1111's modules/api/api.py, so its
clients (webuiapi, bots, Krita/Photoshop plug-ins) work unchanged. Each endpoint is
thin: JSON → the typed request of modules/diffusion/params.py → a job on the studio's
queue (the same queue the UI uses) → JSON. The model and listing endpoints live in
sdapi_models.py; both share one router.
"""
from __future__ import annotations

import json
import time

from starlette.requests import Request  # at module level: FastAPI resolves endpoint annotations by name

from modules.diffusion import infotext
from modules.diffusion.params import Img2ImgRequest, Txt2ImgRequest
from modules.requests import parse_request
from modules.errors import InvalidRequest
from modules.jobs import JobState
from webui.api import sdapi_extras, sdapi_models
from webui.api.common import Waiter, b64_image, b64_png, ensure_ready, read_json_object, request_schema
from webui.checkpoints import find_checkpoint

# A1111 request fields that carry images: never echoed back unless include_init_images.
_IMAGE_FIELDS = ("init_images", "mask")


def router(studio):
    from fastapi import APIRouter
    from fastapi.concurrency import run_in_threadpool

    r = APIRouter(prefix="/sdapi/v1", tags=["sdapi"])
    waiter = Waiter()

    async def generate(kind: str, cls, body: dict) -> dict:
        body = _a1111_defaults(body)
        # Decoding base64 images is CPU work: off the event loop.
        req = await run_in_threadpool(parse_request, cls, body)
        await ensure_ready(studio, waiter)
        override = req.checkpoint_override
        if override:
            find_checkpoint(studio, override, "override_settings.sd_model_checkpoint")
        job = studio.submit(kind, req)  # validates samplers and upscalers first
        await waiter.job(job)
        job.raise_for_error()
        settings = studio.settings.get()
        return await run_in_threadpool(_generation_response, job, req, body, settings.samples_format,
                                       settings.jpeg_quality)

    @r.post("/txt2img", openapi_extra=request_schema(Txt2ImgRequest))
    async def txt2img(request: Request):
        """Text to image. Body: A1111's StableDiffusionProcessingTxt2Img fields."""
        return await generate("txt2img", Txt2ImgRequest, await read_json_object(request))

    @r.post("/img2img", openapi_extra=request_schema(Img2ImgRequest))
    async def img2img(request: Request):
        """Image to image; with `mask`, inpainting. Body: A1111's StableDiffusionProcessingImg2Img fields."""
        return await generate("img2img", Img2ImgRequest, await read_json_object(request))

    @r.get("/progress")
    def progress(skip_current_image: bool = False):
        """Progress of the running job: A1111's ProgressResponse, plus `devices`: each device's current job."""
        return _progress(studio, skip_current_image) | {"devices": _devices(studio)}

    @r.post("/interrupt")
    def interrupt(id: str | None = None):  # noqa: A002 - the job id, as /progress's `devices` list names it
        """Stop the running job(s) after the current step (`?id=` one job: of one device); what is done is
        returned to its caller."""
        studio.jobs.interrupt(id)
        return {}

    @r.post("/skip")
    def skip():
        """Drop the image being made and go on with the next one of the batch."""
        studio.jobs.skip()
        return None

    @r.post("/png-info", openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
        "schema": {"type": "object", "properties": {"image": {"type": "string", "format": "base64"}}, "required": ["image"]}}}}})
    async def png_info(request: Request):
        """Read the generation parameters out of a PNG: {"info", "items", "parameters"}."""
        body = await read_json_object(request)
        return await run_in_threadpool(_png_info, body, studio.styles)

    sdapi_models.add_routes(r, studio, waiter)
    sdapi_extras.add_routes(r, studio, waiter)
    return r


# -- requests -------------------------------------------------------------------
def _a1111_defaults(body: dict) -> dict:
    """A1111's API does not save images unless asked (null included); the UI saves by default.
    The other A1111 conventions (null means the default, sampler_index) are the request type's."""
    if body.get("save_images") is None:
        body = {**body, "save_images": False}
    return body


# -- responses ------------------------------------------------------------------
def _generation_response(job, req, body: dict, fmt: str = "png", quality: int = 80) -> dict:
    """A1111's answer; images in the samples_format, as A1111 encodes them."""
    result = job.result
    images = list(result.images) if result is not None else []
    encoded = [b64_image(g.image, g.infotext, fmt, quality) for g in images] if req.send_images else []
    return {"images": encoded, "parameters": _echo_parameters(req, body), "info": json.dumps(_info(job, req, images))}


def _echo_parameters(req, body: dict) -> dict:
    """A1111 echoes the request (its own field names, defaults filled in); images only when asked."""
    params = {k: v for k, v in body.items() if k not in _IMAGE_FIELDS}
    params.update(req.model_dump(mode="json", exclude=set(_IMAGE_FIELDS)))
    if isinstance(req, Img2ImgRequest):
        keep = req.include_init_images
        for key in _IMAGE_FIELDS:
            params[key] = body.get(key) if keep else None
    return params


def _info(job, req, images) -> dict:
    """A1111's `processed.js()`: seeds, infotexts and the main parameters; the generator's own info wins."""
    first = infotext.parse(images[0].infotext) if images else {}
    seeds = [g.seed for g in images]
    subseeds = [g.subseed for g in images]
    info = {
        "prompt": req.prompt, "all_prompts": [req.prompt] * len(images),
        "negative_prompt": req.negative_prompt, "all_negative_prompts": [req.negative_prompt] * len(images),
        "seed": seeds[0] if seeds else req.seed, "all_seeds": seeds,
        "subseed": subseeds[0] if subseeds else req.subseed, "all_subseeds": subseeds,
        "subseed_strength": req.subseed_strength, "width": req.width, "height": req.height,
        "sampler_name": req.sampler_name, "scheduler": req.scheduler, "cfg_scale": req.cfg_scale, "steps": req.steps,
        "batch_size": req.batch_size, "restore_faces": req.restore_faces,
        "face_restoration_model": first.get("Face restoration"),
        "sd_model_name": first.get("Model"), "sd_model_hash": first.get("Model hash"),
        "sd_vae_name": first.get("VAE"), "sd_vae_hash": first.get("VAE hash"),
        "seed_resize_from_w": -1, "seed_resize_from_h": -1, "denoising_strength": req.denoising_strength,
        "extra_generation_params": {}, "index_of_first_image": 0,
        "infotexts": [g.infotext for g in images], "styles": list(req.styles),
        "job_timestamp": time.strftime("%Y%m%d%H%M%S", time.localtime(job.started_at or job.created_at)),
        "clip_skip": req.effective_clip_skip, "is_using_inpainting_conditioning": False,
        "version": "atelier", "interrupted": job.state in (JobState.INTERRUPTED, JobState.CANCELLED),
    }
    if job.result is not None:
        info.update(job.result.info)
    return info


def _progress(studio, skip_current_image: bool) -> dict:
    """A1111's ProgressResponse from the job engine: the running job, else idle (progress 0, job_count 0)."""
    last = studio.jobs.last()
    job = last if last is not None and last.state == JobState.RUNNING else None
    pending = studio.jobs.pending()
    state = {"skipped": False, "interrupted": False, "stopping_generation": False, "job": "", "job_count": 0,
             "job_timestamp": "0", "job_no": 0, "sampling_step": 0, "sampling_steps": 0, "queue_pending": pending}
    if job is None:
        if pending:
            state["job_count"] = 1
        return {"progress": 0.0, "eta_relative": 0.0, "state": state, "current_image": None,
                "textinfo": f"Waiting: {pending} in the queue" if pending else None}
    p = job.progress
    state.update({
        "skipped": job.skip_requested, "interrupted": job.interrupt_requested, "job": f"{job.kind}({job.id})",
        "job_count": p.parts, "job_no": p.part, "sampling_step": p.step, "sampling_steps": p.total,
        "job_timestamp": time.strftime("%Y%m%d%H%M%S", time.localtime(job.started_at or job.created_at)),
    })
    preview = job.preview
    current = None
    if preview is not None and not skip_current_image:
        try:
            current = b64_png(preview)
        except (OSError, ValueError, AttributeError):  # a preview being replaced mid-read: skip this poll
            current = None
    return {"progress": round(min(1.0, job.progress.fraction), 4), "eta_relative": round(job.eta or 0.0, 3),
            "state": state, "current_image": current, "textinfo": p.text or None}


def _devices(studio) -> list[dict]:
    """Every compute device and the image job it runs now (with one device, the studio's running job)."""
    from modules.diffusion.task import QUEUE

    by_device = studio.jobs.on_devices(QUEUE)
    if not by_device:
        last = studio.jobs.last()
        lane = studio.models.device.lane
        by_device = {lane: last if last is not None and last.state == JobState.RUNNING else None}
    rows = []
    for lane, job in by_device.items():
        row = {"device": lane, "job": "", "id": None, "progress": 0.0, "eta_relative": 0.0, "sampling_step": 0,
               "sampling_steps": 0, "job_no": 0, "job_count": 0, "textinfo": None}
        if job is not None:
            p = job.progress
            row.update({"job": f"{job.kind}({job.id})", "id": job.id, "progress": round(min(1.0, p.fraction), 4),
                        "eta_relative": round(job.eta or 0.0, 3), "sampling_step": p.step, "sampling_steps": p.total,
                        "job_no": p.part, "job_count": p.parts, "textinfo": p.text or None})
        rows.append(row)
    return rows


# -- png-info -------------------------------------------------------------------
def _png_info(body: dict, styles) -> dict:
    from modules.images import decode_image, read_infotext

    value = body.get("image")
    if not isinstance(value, str) or not value.strip():
        raise InvalidRequest("send the image as a base64 string", "image")
    try:
        image = decode_image(value)
    except ValueError as exc:
        raise InvalidRequest(str(exc), "image") from None
    items = {}
    for key, val in (image.info or {}).items():
        if isinstance(key, str) and isinstance(val, (str, int, float, bool)):
            items[key] = val
    geninfo = items.pop("parameters", "")
    geninfo = geninfo if isinstance(geninfo, str) and geninfo else read_infotext(image)  # JPEG / WebP: EXIF
    return {"info": geninfo, "items": items, "parameters": infotext.parse_with_styles(geninfo, styles) if geninfo else {}}

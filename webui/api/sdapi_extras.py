"""/sdapi/v1 Extras and interrogate, in AUTOMATIC1111's shapes: extra-single-image, extra-batch-images,
upscalers, realesrgan-models, face-restorers, interrogate.

Each route is thin: JSON → the typed request (modules/postprocess/params.py, or a vision caption
request) → a job on the studio's queue → JSON. As in A1111, the API does not save Extras results
unless asked (`save_images`), and returns every image it made.
"""
from __future__ import annotations

from starlette.requests import Request  # at module level: FastAPI resolves endpoint annotations by name

from modules.errors import InvalidRequest
from modules.postprocess.params import ExtrasRequest
from modules.requests import parse_request
from webui.api.common import Waiter, b64_image, ensure_ready, read_json_object, request_schema

_NOT_REQUEST_FIELDS = ("image", "imageList", "show_extras_results")
_ROUTE_FILLED = ("images", "names", "folder")  # the job request's own image fields: the routes fill them


def _a1111_schema(single: bool) -> dict:
    """The body A1111 takes: the Extras fields, with "image" (single) or "imageList" (batch) for the images."""
    extra = request_schema(ExtrasRequest)
    schema = extra["requestBody"]["content"]["application/json"]["schema"]
    for name in _ROUTE_FILLED:
        schema["properties"].pop(name, None)
    schema["required"] = ["image" if single else "imageList"]
    if single:
        schema["properties"]["image"] = {"type": "string", "format": "base64", "description": "the image, base64"}
    else:
        schema["properties"]["imageList"] = {"type": "array", "minItems": 1, "items": {
            "type": "object", "required": ["data"],
            "properties": {"data": {"type": "string", "format": "base64"}, "name": {"type": "string"}}}}
    return extra


def add_routes(r, studio, waiter: Waiter) -> None:
    from fastapi.concurrency import run_in_threadpool

    async def extras(body: dict, images: list, names: list, single: bool) -> list:
        if body.get("show_extras_results") is False:  # A1111 honours it only for a folder batch, which the API lacks
            raise InvalidRequest("these routes always return their images; leave show_extras_results true",
                                 "show_extras_results")
        for name in _ROUTE_FILLED:
            if name in body:  # not an A1111 field here: refused rather than overwritten
                raise InvalidRequest(f"{name!r} is not a field of this route; send the images as "
                                     f"{'image' if single else 'imageList'}", name)
        fields = {k: v for k, v in body.items() if k not in _NOT_REQUEST_FIELDS}
        data = {"save_images": False, **fields, "images": images, "names": names}
        try:
            req = await run_in_threadpool(parse_request, ExtrasRequest, data)
        except InvalidRequest as exc:
            exc.field = _a1111_field(exc.field, single)
            raise
        await ensure_ready(studio, waiter)
        job = studio.submit("extras", req)
        await waiter.job(job)
        job.raise_for_error()
        settings = studio.settings.get()
        encoded = [await run_in_threadpool(b64_image, done.image, done.infotext, settings.samples_format,
                                           settings.jpeg_quality) for done in job.result.images]
        return [job.result.info, encoded]

    @r.post("/extra-single-image", openapi_extra=_a1111_schema(single=True))
    async def extra_single_image(request: Request):
        """Upscale one image: A1111's ExtrasSingleImageRequest ("image" + the Extras fields) → {html_info, image}."""
        body = await read_json_object(request)
        image = body.get("image")
        if not isinstance(image, str) or not image.strip():
            raise InvalidRequest("send the image as a base64 string", "image")
        info, encoded = await extras(body, [image], ["image"], True)
        return {"html_info": info, "image": encoded[0] if encoded else None}

    @r.post("/extra-batch-images", openapi_extra=_a1111_schema(single=False))
    async def extra_batch_images(request: Request):
        """Upscale several images: A1111's ExtrasBatchImagesRequest ("imageList": [{data, name}]) → {html_info, images}."""
        body = await read_json_object(request)
        listed = body.get("imageList")
        if not isinstance(listed, list) or not listed:
            raise InvalidRequest("send imageList: [{\"data\": base64 image, \"name\": …}, …]", "imageList")
        images, names = [], []
        for i, item in enumerate(listed):
            if not isinstance(item, dict) or not isinstance(item.get("data"), str):
                raise InvalidRequest(f"item {i} needs \"data\": a base64 image", f"imageList.{i}.data")
            images.append(item["data"])
            names.append(str(item.get("name") or f"image-{i + 1}"))
        info, encoded = await extras(body, images, names, False)
        return {"html_info": info, "images": encoded}

    @r.get("/upscalers")
    def upscalers():
        """A1111's UpscalerItem list: None, Lanczos, Nearest, then every upscaler model on disk."""
        from modules.models import upscalers as models

        out = [{"name": n, "model_name": None, "model_path": None, "model_url": None, "scale": 4.0}
               for n in models.BUILTIN]
        for name, entry in models.model_entries(studio.registry).items():
            out.append({"name": name, "model_name": studio.paths.model_dir(entry.kind).name,
                        "model_path": str(entry.path), "model_url": None, "scale": 4.0})  # A1111 says 4 for files too
        return out

    @r.get("/realesrgan-models")
    def realesrgan_models():
        """The models of models/RealESRGAN: [{name, path, scale}]."""
        return [{"name": e.stem, "path": str(e.path), "scale": 4} for e in studio.registry.list("realesrgan")]

    @r.post("/interrogate", openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
        "schema": {"type": "object", "properties": {"image": {"type": "string", "format": "base64"},
                                                    "model": {"type": "string", "default": "clip"}},
                   "required": ["image"]}}}}})
    async def interrogate(request: Request):
        """A caption of the image: {"image", "model"} → {"caption"}, by the studio's vision caption job
        ("clip", A1111's default, means the first captioning model in models/VLM; or name one)."""
        from webui.interrogate import caption_of, caption_request

        body = await read_json_object(request)
        model = body.get("model")
        if model is not None and not isinstance(model, str):
            raise InvalidRequest("a model name, or \"clip\" for the default", "model")
        req = await run_in_threadpool(caption_request, body.get("image"), model)
        await ensure_ready(studio, waiter)
        job = studio.submit("vision", req)
        await waiter.job(job)
        return {"caption": caption_of(job)}


def _a1111_field(field: str | None, single: bool) -> str | None:
    """The request's own image fields named as the A1111 body has them (image, imageList.N.data)."""
    if not field or not field.startswith("images"):
        return field
    if single:
        return "image"
    index = field.split(".")[1] if "." in field else "0"
    return f"imageList.{index}.data"

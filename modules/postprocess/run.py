"""Runs an Extras job: each image upscaled (upscaler 1, upscaler 2 blended over it), its faces restored
(GFPGAN, faces.py), saved with its infotext.

As A1111's postprocessing: "scale by" multiplies the size, "scale to" scales by the larger ratio and,
with crop, cuts the centre to exactly the size asked; a model runs at its own scale (again while the
image is smaller than asked), Lanczos makes the exact size. Models run tile-wise (settings
ESRGAN_tile / ESRGAN_tile_overlap). Images are read and written one at a time: an unreadable image of
a folder is reported and skipped; Interrupt stops after the current tile and keeps what is done.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from modules.errors import InvalidRequest
from modules.models import face_restorers, upscalers
from modules.postprocess.params import MAX_OUTPUT_SIDE, ExtrasRequest

if TYPE_CHECKING:
    from modules.jobs import JobContext
    from modules.models.registry import ModelRegistry
    from modules.postprocess.task import ExtrasServices


@dataclass
class ExtrasImage:
    name: str
    image: Any  # PIL
    infotext: str
    path: Path | None = None


@dataclass
class ExtrasResult:
    images: list[ExtrasImage] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # "name: why" of images that could not be read
    interrupted: bool = False

    @property
    def info(self) -> str:
        """A1111's html_info: the first image's parameters (and what was skipped)."""
        text = self.images[0].infotext if self.images else ""
        if self.skipped:
            text += ("\n" if text else "") + "Skipped: " + "; ".join(self.skipped)
        return text


class _Stopped(Exception):
    """Interrupt between two tiles."""


def validator(registry: "ModelRegistry"):
    """Submit-time: the upscaler names (they live in the registry) and the folder, before the job waits."""
    from modules.images import folder_images

    def validate(req) -> None:
        if not isinstance(req, ExtrasRequest):
            raise InvalidRequest("send an Extras request", "request")
        upscalers.find(registry, req.upscaler_1, "upscaler_1")
        if req.upscaler_2 != "None":
            upscalers.find(registry, req.upscaler_2, "upscaler_2")
        if req.gfpgan_visibility > 0:
            face_restorers.find(registry, "GFPGAN", "gfpgan_visibility")
        if req.folder:
            folder_images(registry.paths.root, req.folder)
    return validate


def run_extras(ctx: "JobContext", req: ExtrasRequest) -> ExtrasResult:
    from modules.images import encode_image, extension
    from modules.postprocess.faces import restore_images

    services: "ExtrasServices" = ctx.services
    settings = services.settings.get()
    sources = _sources(services, req)
    ctx.set_parts(len(sources))
    result = ExtrasResult()
    for index, (name, load) in enumerate(sources):
        if ctx.interrupted:
            break
        try:
            image = load()
            check_size(req, image)
        except (ValueError, InvalidRequest) as exc:
            result.skipped.append(f"{name}: {getattr(exc, 'message', exc)}")
            continue
        try:
            out = upscale(ctx, services, req, image, index) if req.upscales else image.convert("RGB")
        except _Stopped:
            break
        if req.gfpgan_visibility > 0:  # after the upscale: A1111's order of the postprocessing steps
            ctx.progress(0, 1, part=index, text=f"{name}: restoring faces")
            out = restore_images(services.models, "GFPGAN", [out], req.gfpgan_visibility, "gfpgan_visibility")[0]
        infotext = _infotext(image, req.infotext(image.width, image.height))
        done = ExtrasImage(name=name, image=out, infotext=infotext)
        if req.save_images:
            data = encode_image(out, infotext, settings.samples_format, settings.jpeg_quality)
            done.path = services.outputs.save_files(settings.outdir_extras_samples, Path(name).stem,
                                                    {f".{extension(settings.samples_format)}": data}).popitem()[1]
        result.images.append(done)
        ctx.progress(1, 1, part=index + 1, text=f"{index + 1}/{len(sources)} images")
    result.interrupted = ctx.interrupted
    return result


def check_size(req: ExtrasRequest, image) -> None:
    width, height = req.target_size(image.width, image.height)
    if max(width, height) > MAX_OUTPUT_SIDE:
        raise InvalidRequest(f"{image.width}x{image.height} would become {width}x{height}; at most "
                             f"{MAX_OUTPUT_SIDE} pixels a side", "upscaling_resize")


def upscale(ctx: "JobContext", services: "ExtrasServices", req: ExtrasRequest, image, index: int = 0):
    """Upscaler 1, upscaler 2 blended over it by its visibility, then the crop of "scale to"."""
    from PIL import Image

    image = image.convert("RGB")
    factor = req.upscale_by(image.width, image.height)
    width, height = int(image.width * factor), int(image.height * factor)
    out = _with(ctx, services, req.upscaler_1, "upscaler_1", image, width, height, index)
    if req.upscaler_2 != "None" and req.extras_upscaler_2_visibility > 0:
        second = _with(ctx, services, req.upscaler_2, "upscaler_2", image, width, height, index)
        out = Image.blend(out, second, req.extras_upscaler_2_visibility)
    if req.resize_mode == 1 and req.upscaling_crop:
        w, h = req.upscaling_resize_w, req.upscaling_resize_h
        cropped = Image.new("RGB", (w, h))
        cropped.paste(out, box=(w // 2 - out.width // 2, h // 2 - out.height // 2))  # A1111's centred crop
        out = cropped
    return out


def _with(ctx: "JobContext", services: "ExtrasServices", name: str, field_name: str, image, width: int, height: int,
          index: int):
    entry = upscalers.find(services.registry, name, field_name)
    if entry is None:
        return upscalers.pil_resize(image, width, height, name)
    settings = services.settings.get()
    with services.models.use(entry.kind, entry.name) as model:
        return model.resize(image, width, height, settings.ESRGAN_tile, settings.ESRGAN_tile_overlap,
                            _tile_progress(ctx, name, index))


def _tile_progress(ctx: "JobContext", name: str, index: int) -> Callable[[int, int], None]:
    def on_tile(done: int, total: int) -> None:
        ctx.progress(done, total, part=index, text=f"{name}: tile {done}/{total}")
        if ctx.interrupted:
            raise _Stopped()
    return on_tile


def _infotext(image, postprocess: str) -> str:
    """The source's own parameters (when it has them) with the postprocessing appended to their last line,
    so PNG Info reads both; else the postprocessing alone."""
    from modules.images import read_infotext

    own = (image.info or {}).get("parameters") or read_infotext(image)
    own = own.strip() if isinstance(own, str) else ""
    return f"{own}, {postprocess}" if own else postprocess


def _sources(services: "ExtrasServices", req: ExtrasRequest) -> list[tuple[str, Callable]]:
    from modules.images import decode_image, folder_images

    if req.folder:
        return [(p.name, lambda p=p: decode_image(p.read_bytes()))
                for p in folder_images(services.registry.paths.root, req.folder)]
    names = req.names or [f"image-{i + 1}" for i in range(len(req.images))]
    return [(name, lambda v=value: v) for name, value in zip(names, req.images)]

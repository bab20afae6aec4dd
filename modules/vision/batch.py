"""Job kind "vision_batch": several images (uploads, or a folder under the data dir), one task.

Each image is decoded, run and written before the next starts: its overlay (unless the request's
`overlay` is false) into outputs/vision/<date>/NNNNN-<name>.png (atomically), its JSON line onto the
job's stream (the tab shows results as they come) and, at the end, every line into one NNNNN-batch.jsonl (atomically, so a
reader never sees half a file). An image that cannot be read or run is reported in its line and
skipped; the rest go on. Progress is per image; Interrupt stops after the current image and keeps
what is done.
"""
from __future__ import annotations

import io
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from modules.errors import AtelierError, Busy, InvalidRequest, ModelLoadError, NotFound
from modules.vision.engine import OUTPUT_SUBDIR, VisionServices, run_one
from modules.vision.params import VisionBatchRequest

if TYPE_CHECKING:
    from modules.jobs import JobContext

# Errors of the model or the machine end the batch (every image would fail the same way); the rest
# belong to one image.
_FATAL = (ModelLoadError, Busy, NotFound, MemoryError)


def folder_images(services: VisionServices, folder: str) -> list[Path]:
    """The images directly in `folder` (under the data dir), sorted by name."""
    from modules.images import folder_images as images_in

    return images_in(services.paths.root, folder)


def _sources(services: VisionServices, req: VisionBatchRequest) -> list[tuple[str, Callable]]:
    from modules.images import decode_image

    if req.folder:
        return [(p.name, lambda p=p: decode_image(p.read_bytes())) for p in folder_images(services, req.folder)]
    names = req.names or [f"image-{i + 1}" for i in range(len(req.images))]
    return [(name, lambda v=value: decode_image(v)) for name, value in zip(names, req.images)]


def run_vision_batch(ctx: "JobContext", req: VisionBatchRequest) -> dict:
    services: VisionServices = ctx.services
    sources = _sources(services, req)
    lines, started, n = [], time.perf_counter(), len(sources)
    for i, (name, load) in enumerate(sources):
        if ctx.interrupted:
            break
        ctx.progress(i, n, text=f"image {i + 1} of {n}: {name}")
        lines.append(_one(services, req, i, name, load, ctx))
        ctx.emit(lines[-1])
    ctx.progress(len(lines), n, text=f"{len(lines)} of {n} images")
    jsonl = services.outputs.save_files(OUTPUT_SUBDIR, "batch", {".jsonl": "".join(
        json.dumps(line, ensure_ascii=False) + "\n" for line in lines).encode("utf-8")})[".jsonl"]
    seconds = time.perf_counter() - started
    done = sum("error" not in line for line in lines)
    return {"items": lines, "total": n, "done": done, "failed": len(lines) - done,
            "interrupted": ctx.interrupted and len(lines) < n,
            "jsonl": jsonl.relative_to(services.outputs.root).as_posix(), "folder": str(jsonl.parent),
            "seconds": round(seconds, 3), "images_per_second": round(done / seconds, 3) if seconds > 0 else None}


def _one(services: VisionServices, req: VisionBatchRequest, index: int, name: str, load: Callable,
         ctx: "JobContext") -> dict:
    try:
        image = load()
    except ValueError as exc:  # decode_image's refusals: not an image, too large
        return _failed(ctx, index, name, f"image {exc}")
    try:
        result = run_one(services, req, image, stop=lambda: ctx.interrupted)
    except _FATAL:
        raise
    except AtelierError as exc:
        return _failed(ctx, index, name, exc.message)
    except Exception as exc:  # one image the model chokes on must not end the batch
        return _failed(ctx, index, name, f"{type(exc).__name__}: {str(exc)[:300]}")
    overlay = None
    if result.overlay is not None:
        buf = io.BytesIO()
        result.overlay.save(buf, format="PNG")
        written = services.outputs.save_files(OUTPUT_SUBDIR, Path(name).stem, {".png": buf.getvalue()})[".png"]
        overlay = written.relative_to(services.outputs.root).as_posix()
    return {"index": index, "source": name, "overlay": overlay, **result.to_json()}


def _failed(ctx: "JobContext", index: int, name: str, message: str) -> dict:
    ctx.log(f"{name}: skipped: {message}")
    return {"index": index, "source": name, "error": message}

"""DreamBooth's class images, made before the training takes the device (the job kind's `prepare`
step, in the server process): when the class folder holds fewer than `num_class_images`, the
missing ones come from the studio's own txt2img jobs with the base model and the class prompt —
submitted by kind name, as any client would (a task never imports another) — and are kept in the
folder, so the next run with that folder makes none. Their progress is the training job's progress.
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modules import atomic
from modules.errors import AtelierError
from modules.jobs import JobState
from modules.training.params import DreamBoothRequest, check, parse

if TYPE_CHECKING:
    from modules.jobs import Job
    from modules.training.task import TrainingServices

BATCH = 4  # images per txt2img job (diffusers' sample_batch_size): a Stop loses at most one job's images
JOB_TIMEOUT_S = 3600.0
NAME = "class-{:05d}-{}.png"  # number, seed


def prepare_class_images(ctx, request: Any) -> dict | None:
    req = parse(request)
    if not isinstance(req, DreamBoothRequest) or not req.prior_preservation:
        return None
    services: "TrainingServices" = ctx.services
    if services.run_job is None:
        raise AtelierError("these training services submit no jobs: class images are made by the train_dreambooth "
                           "job kind's own services", "class_dataset")
    checked = check(req, services)  # the data dir may have changed while the job waited
    folder, have = checked.class_dir, checked.class_images
    missing = req.num_class_images - have
    if missing <= 0:
        ctx.log(f"class images: {have} in {_shown(folder, services)}, {req.num_class_images} used; none to make")
        return None
    ctx.log(f"class images: {have} in {_shown(folder, services)}; making {missing} with txt2img "
            f"({checked.base.name}, {req.class_steps} steps, {req.resolution}x{req.resolution})")
    folder.mkdir(parents=True, exist_ok=True)
    number = _first_free_number(folder)
    made = 0
    while made < missing and not ctx.interrupted:
        count = min(BATCH, missing - made)
        first_seed = req.seed + have + made  # a fixed seed per class image: a rerun remakes the same ones
        job = services.run_job("txt2img", _txt2img_body(req, checked.base.name, first_seed, count),
                               _relay(ctx, made, missing, count, req.class_steps), JOB_TIMEOUT_S)
        job.raise_for_error()
        if job.state != JobState.DONE:  # stopped: its images are not fully denoised, none is kept
            break
        for image in job.result.images:
            _save(folder / NAME.format(number, image.seed), image)
            number, made = number + 1, made + 1
        ctx.progress(made * req.class_steps, missing * req.class_steps,
                     text=f"class images: {made}/{missing} made")
    ctx.log(f"class images: made {made} in {_shown(folder, services)}")
    return {"outcome": "stopped" if made < missing else "done", "class_images": have + made}


def _txt2img_body(req: DreamBoothRequest, checkpoint: str, seed: int, count: int) -> dict:
    return {"prompt": req.class_prompt, "steps": req.class_steps, "width": req.resolution, "height": req.resolution,
            "seed": seed, "batch_size": count, "save_images": False,
            "override_settings": {"sd_model_checkpoint": checkpoint}}


def _relay(ctx, made: int, missing: int, count: int, steps: int):
    """The txt2img job's progress and preview, shown as the training job's."""
    def watch(job: "Job") -> bool:
        done = made * steps + min(job.progress.step, steps) * count
        ctx.progress(done, missing * steps, text=f"class images: {made}/{missing} made (txt2img job {job.id})")
        if job.preview is not None:
            ctx.preview(job.preview)
        return not ctx.interrupted
    return watch


def _first_free_number(folder: Path) -> int:
    numbers = [int(p.name[6:11]) for p in folder.glob("class-*.png") if p.name[6:11].isdigit()]
    return max(numbers, default=-1) + 1


def _save(path: Path, generated) -> Path:
    """PNG with the generation's infotext (A1111's `parameters`), written whole."""
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("parameters", generated.infotext)
    buffer = io.BytesIO()
    generated.image.save(buffer, format="PNG", pnginfo=info)
    atomic.write_bytes(path, buffer.getvalue())
    return path


def _shown(folder: Path, services: "TrainingServices") -> str:
    return folder.relative_to(services.paths.root.resolve()).as_posix() + "/"

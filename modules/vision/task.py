"""The vision task: one image ("vision"), batches ("vision_batch") and videos ("vision_video") on the "vision" queue, the
built-in vision tasks in the studio's task registry, and the demo's mask decoder on first start."""
from __future__ import annotations

from typing import TYPE_CHECKING

from modules.jobs import JobKind

if TYPE_CHECKING:
    from modules.paths import DataPaths
    from modules.tasks import Registrar

QUEUE = "vision"  # beside image generation and chat: whether the models fit together is the manager's call


def register(reg: "Registrar") -> None:
    from modules.vision.batch import run_vision_batch
    from modules.vision.engine import VisionServices, builtin_specs, run_vision, validator

    services = VisionServices(reg.models, reg.registry, reg.outputs, reg.vision_tasks, reg.chat_answer)
    for spec in builtin_specs(services):
        reg.vision_tasks.add(spec)
    validate = validator(services)
    reg.add_job_kind(JobKind("vision", run_vision, queue=QUEUE, validate=validate), services)
    reg.add_job_kind(JobKind("vision_batch", run_vision_batch, queue=QUEUE, validate=validate), services)
    from modules.vision import video_job

    reg.add_job_kind(JobKind("vision_video", video_job.run_video, queue=QUEUE, validate=video_job.validator(services),
                             parse=video_job.parse_video), services)
    if reg.build_demo:
        reg.on_load(lambda: ensure_demo_decoder(reg.paths))


def ensure_demo_decoder(paths: "DataPaths") -> None:
    """Beside the demo PaliGemma, a random-weights vae-oid.npz, so segment runs on first start; never beside
    a real PaliGemma (its user needs the real file, and the refusal says where to put it)."""
    from modules.models.demo_lm import DEMO_PALIGEMMA_NAME, is_demo
    from modules.vision.vqvae import FILE_NAME, write_random_decoder

    folder = paths.model_dir("vlm")
    if is_demo(folder / DEMO_PALIGEMMA_NAME) and not (folder / FILE_NAME).exists():
        write_random_decoder(folder / FILE_NAME)

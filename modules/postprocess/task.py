"""The Extras task: job kind "extras" (upscale one image, a batch of uploads, or a folder) on the images queue."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from modules.jobs import JobKind

if TYPE_CHECKING:
    from modules.models.manager import ModelManager
    from modules.models.registry import ModelRegistry
    from modules.outputs import OutputWriter
    from modules.settings import SettingsStore
    from modules.tasks import Registrar

QUEUE = "images"  # the generation queue: upscaling shares the device with txt2img, one job after another


@dataclass(frozen=True)
class ExtrasServices:
    """What an Extras job sees of the studio."""

    models: "ModelManager"
    registry: "ModelRegistry"
    outputs: "OutputWriter"
    settings: "SettingsStore"


def register(reg: "Registrar") -> None:
    from modules.postprocess.run import run_extras, validator

    services = ExtrasServices(reg.models, reg.registry, reg.outputs, reg.settings)
    reg.add_job_kind(JobKind("extras", run_extras, queue=QUEUE, validate=validator(reg.registry)), services)

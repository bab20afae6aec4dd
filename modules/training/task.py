"""The training task: one job kind per training kind, on the "training" queue, exclusive (the training
process owns the device; generation and chat jobs wait) and persisted (listed after a restart)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from modules.jobs import JobKind

if TYPE_CHECKING:
    from modules.models.manager import ModelManager
    from modules.models.registry import ModelRegistry
    from modules.paths import DataPaths
    from modules.settings import SettingsStore
    from modules.tasks import Registrar

QUEUE = "training"


@dataclass(frozen=True)
class TrainingServices:
    """What the training jobs see."""

    models: "ModelManager"
    registry: "ModelRegistry"
    settings: "SettingsStore"

    @property
    def paths(self) -> "DataPaths":
        return self.registry.paths

    def device_name(self) -> str:
        return self.models.device.name

    def gpu_count(self) -> int:
        if self.device_name() != "cuda":
            return 0
        import torch

        return torch.cuda.device_count()

    def processes(self, gpus: str) -> int:
        from modules.training.launch import processes_for

        return processes_for(self.device_name(), self.gpu_count(), gpus)


def register(reg: "Registrar") -> None:
    from modules.training.params import KINDS, job_kind, validator
    from modules.training.runner import run_training

    services = TrainingServices(reg.models, reg.registry, reg.settings)
    for kind in KINDS:
        reg.add_job_kind(JobKind(job_kind(kind), run_training, queue=QUEUE, validate=validator(services),
                                 exclusive=True, persist=True), services)

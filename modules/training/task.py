"""The training task: one job kind per training kind, on the "training" queue, exclusive (the training
process owns the device; generation and chat jobs wait) and persisted (listed after a restart)."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from modules.errors import AtelierError
from modules.jobs import JobKind

if TYPE_CHECKING:
    from modules.jobs import Job, JobEngine
    from modules.models.manager import ModelManager
    from modules.models.registry import ModelRegistry
    from modules.paths import DataPaths
    from modules.settings import SettingsStore
    from modules.tasks import Registrar
    from modules.training.kinds import TrainingKindRegistry, TrainingKindSpec

QUEUE = "training"


@dataclass(frozen=True)
class TrainingServices:
    """What the training jobs see."""

    models: "ModelManager"
    registry: "ModelRegistry"
    settings: "SettingsStore"
    kinds: "TrainingKindRegistry"  # the built-in training kinds and those extensions added
    # Runs a job of another task by kind name and a plain dict, as a client would, and waits for it; `watch`
    # sees each change and returns False to stop it (DreamBooth's class images: txt2img). See job_runner.
    # None in a view that only checks and plans (the REST router and the Train tab read the registered
    # services through studio.jobs.services_of, which have it).
    run_job: Callable[[str, dict, Callable[["Job"], bool], float], "Job"] | None = None

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


def job_runner(jobs: "JobEngine") -> Callable[[str, dict, Callable[["Job"], bool], float], "Job"]:
    """TrainingServices.run_job over the engine: submit, follow every change until the job ends or the
    deadline passes (then it is interrupted and the wait fails)."""
    def run_job(kind: str, request: dict, watch: Callable[["Job"], bool], timeout: float) -> "Job":
        job = jobs.submit(kind, request)
        deadline = time.monotonic() + timeout
        version = -1
        while not job.state.finished:
            if time.monotonic() > deadline:
                jobs.interrupt(job.id)
                job.wait(30)
                raise AtelierError(f"the {kind} job {job.id} did not finish in {timeout:.0f} s", None)
            version = job.wait_for_change(version, 0.5)
            if not watch(job):
                jobs.interrupt(job.id)
        return job
    return run_job


def add_kind(jobs: "JobEngine", services: TrainingServices, spec: "TrainingKindSpec") -> str:
    """A training kind (built in or an extension's) into the registry and its job kind onto the engine: the one
    path every kind takes. Returns the job kind's name."""
    from modules.training.params import job_kind, validator
    from modules.training.runner import run_training

    services.kinds.add(spec)
    name = job_kind(spec.kind)
    jobs.add_kind(JobKind(name, run_training, queue=QUEUE, validate=validator(services), exclusive=True,
                          persist=True, prepare=spec.prepare, owner="studio" if spec.owner == "builtin" else spec.owner),
                  services)
    return name


def services_of(jobs: "JobEngine") -> TrainingServices:
    """The training jobs' services (one for every kind), for the REST router, the Train tab and extensions."""
    from modules.training.params import job_kind

    return jobs.services_of(job_kind("sd_lora"))


def register(reg: "Registrar") -> None:
    from modules.training.class_images import prepare_class_images
    from modules.training.kinds import TrainingKindSpec
    from modules.training.params import KINDS, check

    services = TrainingServices(reg.models, reg.registry, reg.settings, reg.training_kinds, job_runner(reg.jobs))
    for kind, model in KINDS.items():
        # DreamBooth makes its missing class images with txt2img jobs first, before it takes the device.
        prepare = prepare_class_images if kind == "dreambooth" else None
        add_kind(reg.jobs, services, TrainingKindSpec(kind, model, check, f"modules.training.{kind}_main:train",
                                                      prepare=prepare))

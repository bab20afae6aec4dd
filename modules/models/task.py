"""The models task: loading a model (any kind, with options) and downloading one, as jobs;
the demo models on first start."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from modules.errors import InvalidRequest
from modules.jobs import JobKind

if TYPE_CHECKING:
    from modules.models.manager import ModelManager
    from modules.models.registry import ModelRegistry
    from modules.paths import DataPaths
    from modules.settings import SettingsStore
    from modules.tasks import Registrar

FIELD_CHECKPOINT = "sd_model_checkpoint"
QUEUE = "models"  # loads and downloads wait for each other, not for a running generation


@dataclass(frozen=True)
class ModelServices:
    """What the model jobs see."""

    models: "ModelManager"
    registry: "ModelRegistry"
    settings: "SettingsStore"

    @property
    def paths(self) -> "DataPaths":
        return self.registry.paths  # swapped when an extension adds a model kind


def register(reg: "Registrar") -> None:
    from modules.models.diffusion_adapter import DiffusionAdapter
    from modules.models.hf import KINDS, TransformersAdapter
    from modules.models.face_restorers import GFPGAN_KIND, FaceRestorerModel
    from modules.models.upscalers import KINDS as UPSCALER_KINDS
    from modules.models.upscalers import SpandrelAdapter

    services = ModelServices(reg.models, reg.registry, reg.settings)
    reg.add_model_kind("checkpoint", DiffusionAdapter())
    for kind in KINDS:  # llm, vlm
        reg.add_model_kind(kind, TransformersAdapter())
    upscalers = SpandrelAdapter()  # one for every upscaler folder: spandrel's registry is read once
    for kind in UPSCALER_KINDS:  # esrgan, realesrgan, swinir, dat, hat
        reg.add_model_kind(kind, upscalers)
    reg.add_model_kind(GFPGAN_KIND, SpandrelAdapter(purposes=("FaceSR",), handle=FaceRestorerModel))
    reg.add_job_kind(JobKind("load_checkpoint", run_load_checkpoint, queue=QUEUE), services)
    reg.add_job_kind(JobKind("load_model", run_load_model, queue=QUEUE), services)
    reg.add_job_kind(JobKind("download", run_download, queue=QUEUE, validate=download_validator(services)), services)
    if reg.build_demo:
        reg.on_load(lambda: _ensure_demos(reg.paths))


def download_validator(services: ModelServices):
    """Refuse a malformed download at submit (a 4xx naming the field), before it waits behind a load."""
    def validate(request) -> None:
        from modules.models.download import parse, plan_download

        plan_download(parse(request), services.paths)
    return validate


def _ensure_demos(paths: "DataPaths") -> None:
    """Tiny random-weight models where a kind's folder is empty, so every tab works on first start."""
    from modules.models.demo import ensure_demo_checkpoint
    from modules.models.demo_lm import ensure_demo_language_models

    ensure_demo_checkpoint(paths.model_dir("checkpoint"))
    ensure_demo_language_models(paths)


def run_load_checkpoint(ctx, request) -> dict:
    """Job kind "load_checkpoint": a name, or {"name": …, "options": {dtype, quantization, …}}.

    The A1111 switch (UI checkpoint box, POST /sdapi/v1/options): the loaded one becomes the default."""
    services: ModelServices = ctx.services
    if isinstance(request, dict):
        name, options = request.get("name"), request.get("options")
    else:
        name, options = request, None
    if name is not None and not isinstance(name, str):
        raise InvalidRequest("must be a checkpoint name", FIELD_CHECKPOINT)
    ctx.progress(0, 1, text=f"loading {name or 'the default checkpoint'}")
    ckpt = _load_with(services, name, options)
    if name:
        services.settings.update({"sd_model_checkpoint": ckpt.entry.name})
    ctx.progress(1, 1, text=f"{ckpt.entry.name} ready")
    return {"name": ckpt.entry.name, "title": ckpt.entry.title, "location": ckpt.location,
            "seconds": services.models.last_switch_seconds, "quantization": ckpt.quantization}


def run_load_model(ctx, request) -> dict:
    """Job kind "load_model": {"kind": …, "name": …, "options": {…}} for any kind (the Models tab)."""
    services: ModelServices = ctx.services
    if not isinstance(request, dict) or not isinstance(request.get("name"), str):
        raise InvalidRequest("send {kind, name, options}", "name")
    kind = request.get("kind", "checkpoint")
    entry = services.registry.get(kind, request["name"], field="name")
    before = _footprint(services, kind, entry)
    ctx.progress(0, 1, text=f"loading {entry.name}")
    _load_with(services, entry.name, request.get("options"), kind)
    ctx.progress(1, 1, text=f"{entry.name} ready")
    after = _footprint(services, kind, entry)
    return {"kind": kind, "name": entry.name, "footprint_before": before, "footprint_bytes": after,
            "seconds": services.models.last_switch_seconds}


def _load_with(services: ModelServices, name: str | None, options, kind: str = "checkpoint"):
    """Remember `options` for the model, then load it; options its load refuses (a 4xx naming the option) are not
    kept, so the next load without options works again."""
    models = services.models
    if options is None:
        return models.load(name, kind=kind)
    target = services.registry.get(kind, name or models.default_checkpoint_name()).name
    previous = models.options.get(target)
    models.set_options(target, options, kind=kind)
    try:
        return models.load(name, kind=kind)
    except InvalidRequest:
        models.set_options(target, previous, kind=kind)
        raise


def _footprint(services: ModelServices, kind: str, entry) -> int:
    return next((m.footprint for m in services.models.resident() if m.key == (kind, str(entry.path))), 0)


def run_download(ctx, request) -> dict:
    from modules.models.download import run_download_job

    return run_download_job(ctx.services, ctx, request)

"""What is in memory and where: loads checkpoints, keeps them, swaps them.

Callers use `with manager.checkpoint(name) as ckpt:` so a model is never swapped out
while a job is using it.
"""
from __future__ import annotations

import contextlib
import logging
import threading
from dataclasses import dataclass, field
from typing import Any

from modules.devices import DeviceChoice
from modules.errors import NotFound
from modules.models import loaders
from modules.models.registry import ModelEntry, ModelRegistry
from modules.settings import SettingsStore

log = logging.getLogger("atelier.models")


@dataclass
class LoadedCheckpoint:
    entry: ModelEntry
    pipe: Any  # the txt2img pipeline; other modes share its components
    arch: str = "sd1"
    _modes: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.entry.name

    def pipeline(self, mode: str):
        """The pipeline for txt2img / img2img / inpaint, built once from the same components."""
        if mode == "txt2img":
            return self.pipe
        if mode not in self._modes:
            from diffusers import (
                StableDiffusionImg2ImgPipeline,
                StableDiffusionInpaintPipeline,
                StableDiffusionXLImg2ImgPipeline,
                StableDiffusionXLInpaintPipeline,
            )

            classes = {
                ("sd", "img2img"): StableDiffusionImg2ImgPipeline,
                ("sd", "inpaint"): StableDiffusionInpaintPipeline,
                ("sdxl", "img2img"): StableDiffusionXLImg2ImgPipeline,
                ("sdxl", "inpaint"): StableDiffusionXLInpaintPipeline,
            }
            family = "sdxl" if self.arch == "sdxl" else "sd"
            self._modes[mode] = classes[(family, mode)].from_pipe(self.pipe)
        return self._modes[mode]


class ModelManager:
    def __init__(self, registry: ModelRegistry, settings: SettingsStore, device: DeviceChoice):
        self.registry = registry
        self.settings = settings
        self.device = device
        self._lock = threading.RLock()
        self._active: LoadedCheckpoint | None = None

    @property
    def active(self) -> LoadedCheckpoint | None:
        return self._active

    def default_checkpoint_name(self) -> str:
        wanted = self.settings.get().sd_model_checkpoint
        if wanted:
            return wanted
        entries = self.registry.list("checkpoint")
        if not entries:
            raise NotFound("no checkpoint in models/Stable-diffusion; add one and press Refresh", "sd_model_checkpoint")
        return entries[0].name

    def load(self, name: str | None = None) -> LoadedCheckpoint:
        with self._lock:
            entry = self.registry.get("checkpoint", name or self.default_checkpoint_name())
            if self._active and self._active.entry.path == entry.path:
                return self._active
            pipe = loaders.load_checkpoint(entry, self.device.dtype)
            pipe.set_progress_bar_config(disable=True)
            arch = "sdxl" if type(pipe).__name__.startswith("StableDiffusionXL") else "sd1"
            self._active = None  # drop the old one before moving the new one to the device
            pipe.to(self.device.torch_device)
            self._active = LoadedCheckpoint(entry=entry, pipe=pipe, arch=arch)
            log.info("checkpoint %s loaded on %s", entry.name, self.device.name)
            return self._active

    @contextlib.contextmanager
    def checkpoint(self, name: str | None = None):
        with self._lock:
            yield self.load(name)

"""Tasks plug in: each task package has one `register(registrar)` that adds its job kinds,
model kinds and start-up steps — the same way an extension adds its own. The Studio knows
this list of packages, not what is in them.

A task builds its own narrow services object from the registrar's parts and hands it with
each job kind; its runners see `ctx.services` (InvokeAI's invocation context, in small),
never the Studio.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from modules.jobs import JobKind

if TYPE_CHECKING:
    from modules.extensions.hooks import HookRegistry
    from modules.diffusion.samplers import SamplerRegistry
    from modules.extensions.registries import VisionTaskRegistry
    from modules.diffusion.styles import StyleStore
    from modules.jobs import JobEngine
    from modules.models.manager import ModelManager
    from modules.models.registry import ModelRegistry
    from modules.outputs import OutputWriter
    from modules.paths import DataPaths
    from modules.settings import SettingsStore
    from modules.training.kinds import TrainingKindRegistry

BUILTIN_TASKS = (
    "modules.models.task",  # model loading and downloads; the demo models on first start
    "modules.diffusion.task",  # txt2img, img2img, inpaint
    "modules.postprocess.task",  # Extras: upscaler models (spandrel), one image, a batch or a folder
    "modules.chat.task",  # chat replies and plain completions (Gemma 2 / 3, text and images)
    "modules.vision.task",  # captions, OCR, answers, boxes and masks; extensions' vision tasks
    "modules.training.task",  # LoRA training in a child process under accelerate
)


@dataclass
class Registrar:
    """The parts a task may wire itself into (given to `register()` once, at start)."""

    jobs: "JobEngine"
    models: "ModelManager"
    registry: "ModelRegistry"
    settings: "SettingsStore"
    outputs: "OutputWriter"
    hooks: "HookRegistry"
    samplers: "SamplerRegistry"
    vision_tasks: "VisionTaskRegistry"  # built-in and extension vision tasks, one listing
    styles: "StyleStore"
    training_kinds: "TrainingKindRegistry"  # built-in and extension training kinds, one listing
    exposed: bool = False  # reachable by others (--listen / --share)
    build_demo: bool = True  # build demo models where a kind's folder is empty
    startup: list[Callable[[], None]] = field(default_factory=list)

    @property
    def paths(self) -> "DataPaths":
        return self.registry.paths  # swapped when an extension adds a model kind

    @property
    def chat_answer(self) -> Callable[..., str]:
        """The chat engine's one greedy reply on a model the caller holds — (lm, messages, max_new_tokens,
        interrupted) → text: how another task asks a chat model (vision's free question to Gemma 3) with the
        chat job's own template and generation, without importing the chat task."""
        from modules.chat.run import answer_once

        return answer_once

    def add_job_kind(self, kind: JobKind, services: Any) -> None:
        self.jobs.add_kind(kind, services)

    def add_model_kind(self, kind: str, adapter) -> None:
        self.models.add_adapter(kind, adapter)

    def on_load(self, step: Callable[[], None]) -> None:
        """A start-up step run in the background once torch is imported (e.g. build a demo model)."""
        self.startup.append(step)


def register_builtin_tasks(registrar: Registrar) -> None:
    for module_name in BUILTIN_TASKS:
        importlib.import_module(module_name).register(registrar)

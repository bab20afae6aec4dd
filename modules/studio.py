"""The Studio: built once at start, owns every long-lived part, passed explicitly.

Construction is cheap (no torch import, no model load); `load()` does the heavy part
in the background after the server's port is open.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path

from modules.diffusion.samplers import SamplerRegistry
from modules.diffusion.styles import StyleStore
from modules.extensions.hooks import HookRegistry
from modules.extensions.manage import ExtensionManager
from modules.extensions.registries import VisionTaskRegistry
from modules.extensions.tabs import TabRegistry
from modules.jobs import Job, JobEngine
from modules.jobs.store import JobStore
from modules.models.manager import ModelManager
from modules.models.registry import ModelRegistry
from modules.outputs import OutputWriter
from modules.paths import DataPaths
from modules.settings import SettingsStore
from modules.training.kinds import TrainingKindRegistry
from modules.tasks import Registrar, register_builtin_tasks

log = logging.getLogger("atelier")


@dataclass
class StudioOptions:
    """What the command line decides (AUTOMATIC1111's flag names where one exists)."""

    data_dir: Path = Path(".")
    ckpt_dir: Path | None = None
    lora_dir: Path | None = None
    extension_envs: Path | None = None  # --extension-envs: extensions' own Python environments, <dir>/<name>
    device: str = "auto"  # also a list: "cuda:0,cuda:2"; "cpu,cpu" simulates two devices on the CPU (tests)
    listen: bool = False
    share: bool = False
    port: int = 7860
    gradio_auth: str | None = None
    api_auth: str | None = None
    api_key: str | None = None  # --api-key: Bearer keys accepted on every API route
    root_path: str = ""
    enable_insecure_extension_access: bool = False
    insecure_no_auth: bool = False  # --insecure-no-auth: exposed without any login (no password is made up)
    build_demo: bool = True
    extra: dict = field(default_factory=dict)

    @property
    def exposed(self) -> bool:
        """Reachable by others: listening beyond localhost or through a public link."""
        return self.listen or self.share


class Studio:
    def __init__(self, options: StudioOptions):
        self.options = options
        overrides = {}
        if options.ckpt_dir:
            overrides["checkpoint"] = Path(options.ckpt_dir)
        if options.lora_dir:
            overrides["lora"] = Path(options.lora_dir)
        self.paths = DataPaths(Path(options.data_dir).resolve(), overrides)
        self.paths.ensure()
        self.settings = SettingsStore(self.paths.config_file)
        self.registry = ModelRegistry(self.paths)
        self.outputs = OutputWriter(self.paths.outputs)
        self.samplers = SamplerRegistry()
        self.styles = StyleStore(self.paths.styles_file)
        self.hooks = HookRegistry()
        self.tabs = TabRegistry()
        self.vision_tasks = VisionTaskRegistry()  # built-in and extension vision tasks (the vision tab reads it)
        self.training_kinds = TrainingKindRegistry()  # built-in and extension training kinds (the Train tab reads it)
        self.jobs = JobEngine(store=JobStore(self.paths.jobs))
        self.models = ModelManager(self.registry, self.settings)  # cheap; the device is attached in load()
        self.device = None  # the first (or only) compute device, once load() has chosen it
        self.devices: list = []  # every compute device (--device cuda on several GPUs: all of them)
        self.ready = threading.Event()
        self.load_error: str | None = None
        self._registrar = Registrar(jobs=self.jobs, models=self.models, registry=self.registry,
                                    settings=self.settings, outputs=self.outputs, hooks=self.hooks,
                                    samplers=self.samplers, vision_tasks=self.vision_tasks, styles=self.styles,
                                    training_kinds=self.training_kinds,
                                    exposed=options.exposed,
                                    build_demo=options.build_demo)
        register_builtin_tasks(self._registrar)
        # Extensions load last (built-in names are taken first); small imports only, so the port opens fast.
        self.extensions = ExtensionManager(self)
        self.hooks.set_failure_handler(self.extensions.report_failure)
        self.extensions.load_enabled()

    # -- start-up -----------------------------------------------------
    def load(self) -> None:
        """The heavy part: device, demo models, the default checkpoint. Safe to call once."""
        try:
            from modules import atomic
            from modules.devices import choose_devices
            from modules.jobs.pool import DevicePool

            # A kill -9 mid-write leaves `.name.xxx.tmp` files (the real files were never touched): clean them.
            atomic.remove_stale_temporaries(self.paths.outputs)
            for tmp in self.paths.root.glob(f".{self.paths.config_file.name}.*.tmp"):
                tmp.unlink(missing_ok=True)
            self.devices = choose_devices(self.options.device)
            self.device = self.devices[0]
            self.settings.attach_devices(d.type for d in self.devices)
            self.models.attach(*self.devices)
            if len(self.devices) > 1:  # one worker per device for the device-bound queues (image generation)
                self.jobs.use_pool(DevicePool(tuple(d.lane for d in self.devices), self.models.on_device,
                                              self.models.lane_of, self.models.holding))
            for step in self._registrar.startup:  # the tasks' start-up steps (demo models)
                step()
            self.registry.refresh()
            if self.registry.list("checkpoint"):
                self.models.load_at_start()
        except Exception as exc:
            self.load_error = f"{type(exc).__name__}: {exc}"
            log.exception("start-up loading failed; the UI stays up and shows this error")
        finally:
            self.ready.set()

    def load_in_background(self) -> threading.Thread:
        thread = threading.Thread(target=self.load, name="atelier-load", daemon=True)
        thread.start()
        return thread

    def wait_ready(self, timeout: float | None = None) -> bool:
        return self.ready.wait(timeout)

    # -- work ---------------------------------------------------------
    def submit(self, kind: str, request) -> Job:
        """Queue a job; its kind's own validation refuses a bad request before it waits."""
        return self.jobs.submit(kind, request)

    def shutdown(self) -> None:
        self.jobs.shutdown()
        # Idle models let go: a model held by a worker process (YOLO's) ends with its slot, not with this process.
        self.models.unload()

"""What is in memory and where: loads checkpoints, keeps the last few in RAM, swaps them.

Callers use `with manager.checkpoint(name) as ckpt:` so a model is never swapped out while a
job is using it. Switching never holds two copies on the device: the old pipeline goes back to
the CPU (into the RAM cache, bounded by count and bytes) or is dropped before the new one moves
in. Switching back to a cached checkpoint moves tensors, it does not read the disk again.
"""
from __future__ import annotations

import collections
import contextlib
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from modules.devices import DeviceChoice, free_accelerator_memory
from modules.errors import AtelierError, NotFound
from modules.models import loaders, lora, memory
from modules.models.quant import LoadOptions, OptionsStore
from modules.models.registry import ModelEntry, ModelRegistry
from modules.settings import SettingsStore

log = logging.getLogger("atelier.models")


@dataclass
class LoadedCheckpoint:
    entry: ModelEntry
    pipe: Any  # the txt2img pipeline; other modes share its components
    arch: str = "sd1"
    options: LoadOptions = field(default_factory=LoadOptions)
    quantization: str | None = None  # "nf4", "nf4 double quant", "int8", … for the infotext
    policy: str = "gpu"
    location: str = "cpu"  # where the weights are: "cpu", "cuda", … (offloaded: "cuda (offload)")
    footprint: int = 0
    vae: ModelEntry | None = None  # the VAE file in use; None = the checkpoint's own
    vae_setting: str = "Automatic"
    embeddings: list[ModelEntry] = field(default_factory=list)
    skipped_embeddings: dict = field(default_factory=dict)  # path -> why it does not fit this checkpoint
    base_vae: Any = None  # the checkpoint's own VAE while another one is in use
    loras: lora.LoraState = field(default_factory=lora.LoraState)
    _modes: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.entry.name

    @property
    def vae_name(self) -> str | None:
        return self.vae.stem if self.vae else None

    @property
    def vae_hash(self) -> str | None:
        return self.vae.short_hash if self.vae else None

    @property
    def embedding_names(self) -> list[str]:
        return [e.stem for e in self.embeddings]

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
            made = classes[(family, mode)].from_pipe(self.pipe)
            made.set_progress_bar_config(disable=True)
            self._modes[mode] = made
        return self._modes[mode]


class ModelManager:
    def __init__(self, registry: ModelRegistry, settings: SettingsStore, device: DeviceChoice):
        self.registry = registry
        self.settings = settings
        self.device = device
        self.options = OptionsStore(registry.paths.root / "model-options.json")
        self._lock = threading.RLock()
        self._active: LoadedCheckpoint | None = None
        self._cache: collections.OrderedDict[str, LoadedCheckpoint] = collections.OrderedDict()  # on the CPU
        self.last_switch_seconds: float | None = None
        self._chosen: str | None = None  # the last checkpoint loaded by name outside a per-request override

    @property
    def active(self) -> LoadedCheckpoint | None:
        return self._active

    def default_checkpoint_name(self) -> str:
        wanted = self.settings.get().sd_model_checkpoint or self._chosen
        if wanted:
            return wanted
        entries = self.registry.list("checkpoint")
        if not entries:
            raise NotFound("no checkpoint in models/Stable-diffusion; add one and press Refresh", "sd_model_checkpoint")
        return entries[0].name

    # -- loading and switching ---------------------------------------------
    def load(self, name: str | None = None, options: LoadOptions | None = None,
             remember: bool = True) -> LoadedCheckpoint:
        """Make `name` (default: the settings' checkpoint) the active one; `remember` makes it the default."""
        with self._lock:
            entry = self.registry.get("checkpoint", name or self.default_checkpoint_name())
            if name and remember:
                self._chosen = entry.name
            opts = options or self.options.get(entry.name)
            start = time.perf_counter()
            key = str(entry.path)
            if self._active and str(self._active.entry.path) == key and self._active.options == opts:
                self._sync_extras(self._active)
                return self._active
            cached = self._cache.pop(key, None)
            if cached is not None and cached.options != opts:
                cached = None  # other dtype/quantization asked for: read it again
            if cached is None:
                # Read into RAM first: a file that fails to load leaves the current checkpoint serving.
                ckpt = self._read(entry, opts)
            else:
                ckpt = cached
                log.info("checkpoint %s taken from the RAM cache", entry.name)
            self._park_active()  # the old one leaves the device before the new one arrives
            self._place(ckpt)
            self._active = ckpt
            self._sync_extras(ckpt)
            self.last_switch_seconds = time.perf_counter() - start
            log.info("checkpoint %s ready on %s in %.2fs (%s)", entry.name, ckpt.location,
                     self.last_switch_seconds, ckpt.policy)
            return ckpt

    def load_at_start(self) -> LoadedCheckpoint:
        """The settings' checkpoint; when that one is gone or broken, the first that loads (as A1111 falls back)."""
        try:
            return self.load()
        except AtelierError as exc:
            wanted = self.settings.get().sd_model_checkpoint
            others = [e for e in self.registry.list("checkpoint") if e.name != wanted and not e.problem]
            if not wanted or not others:
                raise
            log.warning("checkpoint %r could not be loaded (%s); falling back to %s", wanted, exc.message, others[0].name)
            self.settings.update({"sd_model_checkpoint": others[0].name}, save=False)  # config.json keeps the user's
            return self.load(others[0].name)

    def _read(self, entry: ModelEntry, opts: LoadOptions) -> LoadedCheckpoint:
        from modules.models import quant

        dtype = opts.torch_dtype(self.device.dtype)
        # A big file is hashed (once, then cached) while it loads: both read the same pages.
        hasher = None
        if entry.sha256 is None:
            hasher = threading.Thread(target=self.registry.ensure_hash, args=(entry,), name="atelier-hash", daemon=True)
            hasher.start()
        try:
            pipe, arch = loaders.load_checkpoint(entry, dtype, self.registry.paths, opts, self.device.name)
        finally:
            if hasher is not None:
                hasher.join()
        pipe.set_progress_bar_config(disable=True)
        quantization = quant.quantize_pipeline(pipe, opts, self.device.name)
        return LoadedCheckpoint(entry=entry, pipe=pipe, arch=arch, options=opts, quantization=quantization,
                                footprint=memory.footprint_bytes(pipe))

    def _place(self, ckpt: LoadedCheckpoint) -> None:
        policy = memory.choose_policy(self.settings.get().memory_policy, self.device.name, ckpt.pipe)
        if ckpt.quantization and self.device.name == "cuda":
            policy = "gpu"  # bitsandbytes weights are placed by their own config, not moved by offload hooks
        self._apply(ckpt, policy)

    def _apply(self, ckpt: LoadedCheckpoint, policy: str) -> None:
        memory.apply_policy(ckpt.pipe, policy, self.device.torch_device)
        ckpt.policy = policy
        ckpt.location = self.device.name + ("" if policy == "gpu" else f" ({policy})")

    def _park_active(self) -> None:
        """Move the active checkpoint off the device into the RAM cache, or drop it."""
        old, self._active = self._active, None
        if old is None:
            return
        limit = self.settings.get().sd_checkpoints_limit
        budget = int(self.settings.get().sd_checkpoint_cache_gb * 1024**3)
        if limit > 1 and old.footprint <= budget and not (old.quantization and self.device.name == "cuda"):
            if self.device.name != "cpu":
                memory.apply_policy(old.pipe, "gpu", "cpu")
            old.location = "cpu"
            self._cache[str(old.entry.path)] = old
        del old
        self._trim_cache(limit - 1, budget)
        free_accelerator_memory(self.device.name)

    def _trim_cache(self, count: int, budget: int) -> None:
        while self._cache and (len(self._cache) > max(0, count)
                               or sum(c.footprint for c in self._cache.values()) > budget):
            name, _dropped = self._cache.popitem(last=False)
            log.info("checkpoint %s dropped from the RAM cache", name)

    def _sync_extras(self, ckpt: LoadedCheckpoint) -> None:
        """The VAE the settings ask for and the embeddings on disk, applied to the active pipeline."""
        from modules.models import extras

        vae_before = ckpt.pipe.vae
        extras.sync_vae(self.registry, ckpt, self.settings.get().sd_vae, self.device.dtype)
        if ckpt.pipe.vae is not vae_before and ckpt.policy != "gpu":
            self._apply(ckpt, ckpt.policy)  # offload hooks are per module: hook the new VAE too
        extras.sync_embeddings(self.registry, ckpt)
        memory.configure_vae_tiling(ckpt.pipe, self.settings.get().vae_tiling_pixels)
        if ckpt.pipe.vae is not None and hasattr(ckpt.pipe.vae, "disable_slicing"):
            ckpt.pipe.vae.disable_slicing()  # a previous job's out-of-memory fallback ends with that job

    @contextlib.contextmanager
    def checkpoint(self, name: str | None = None):
        """The checkpoint for one job; a per-request `name` (override_settings) is used for that job only."""
        with self._lock:
            yield self.load(name, remember=False)

    # -- per-job helpers -----------------------------------------------------
    def loras(self, ckpt: LoadedCheckpoint, wanted: list[tuple[str, float]]):
        """`with manager.loras(ckpt, [(name, weight)]) as applied:` — see modules/models/lora.py."""
        return lora.applied(self.registry, ckpt, wanted)

    def retry_on_oom(self, ckpt: LoadedCheckpoint, fn):
        """Call fn(); on out-of-memory free caches, switch to the next lighter policy and retry once."""
        try:
            return fn()
        except Exception as exc:
            if not memory.is_oom(exc):
                raise
            log.warning("out of memory with policy %s; freeing caches and retrying lighter", ckpt.policy)
        free_accelerator_memory(self.device.name)
        policy_before = ckpt.policy
        nxt = memory.lighter(ckpt.policy) if self.device.name == "cuda" else None
        with self._lock:
            if nxt is not None and not ckpt.quantization:
                self._apply(ckpt, nxt)
            memory.lightest_vae(ckpt.pipe)
        try:
            return fn()
        except Exception as exc:
            if not memory.is_oom(exc):
                raise
            free_accelerator_memory(self.device.name)
            raise memory.OutOfMemory(memory.oom_message(self.device.name, nxt or policy_before), "width") from None

    # -- the Models tab --------------------------------------------------------
    def describe(self) -> list[dict]:
        """Every model on disk, with where it is now and its memory footprint when loaded."""
        # No lock: a running job holds it for the whole generation, and the Models tab must not wait.
        active = self._active
        loaded = {str(c.entry.path): c for c in list(self._cache.values()) + ([active] if active else [])}
        rows = []
        for kind in self.registry.paths.model_kinds():
            for e in self.registry.list(kind):
                c = loaded.get(str(e.path))
                rows.append({
                    "kind": kind, "name": e.name, "size": e.size, "arch": e.arch, "format": e.format,
                    "short_hash": e.short_hash, "location": c.location if c else "disk",
                    "active": bool(c is not None and c is active),
                    "footprint_bytes": c.footprint if c else 0,
                    "quantization": (c.quantization if c else None) or self.options.get(e.name).label(),
                })
        return rows

    def unload(self, name: str | None = None) -> None:
        """Drop a checkpoint (or all, with None) from the device and the RAM cache."""
        with self._lock:
            if name is None:
                self._active = None
                self._cache.clear()
            else:
                entry = self.registry.get("checkpoint", name)
                key = str(entry.path)
                self._cache.pop(key, None)
                if self._active and str(self._active.entry.path) == key:
                    self._active = None
            free_accelerator_memory(self.device.name)

    def memory(self) -> dict:
        from modules.devices import memory_readings

        return memory_readings(self.device.name)

    def set_options(self, name: str, options: LoadOptions | dict) -> None:
        """Remember per-model load options (dtype, quantization); used on the next load of it."""
        entry = self.registry.get("checkpoint", name)
        self.options.set(entry.name, options)


def describe_error(exc: BaseException) -> str:
    return exc.message if isinstance(exc, AtelierError) else f"{type(exc).__name__}: {exc}"


def run_load_job(studio, ctx, request) -> dict:
    """Job kind "load_checkpoint": request is a name, or {"name": …, "options": {dtype, quantization, …}}."""
    from modules.errors import InvalidRequest

    if isinstance(request, dict):
        name, options = request.get("name"), request.get("options")
    else:
        name, options = request, None
    if name is not None and not isinstance(name, str):
        raise InvalidRequest("must be a checkpoint name", FIELD_CHECKPOINT)
    if studio.models is None:
        raise InvalidRequest("the studio is still starting; try again in a moment", FIELD_CHECKPOINT)
    if options is not None:
        studio.models.set_options(name or studio.models.default_checkpoint_name(), options)
    ctx.progress(0, 1, text=f"loading {name or 'the default checkpoint'}")
    ckpt = studio.models.load(name)
    if name:
        studio.settings.update({"sd_model_checkpoint": ckpt.entry.name})
    ctx.progress(1, 1, text=f"{ckpt.entry.name} ready")
    return {"name": ckpt.entry.name, "title": ckpt.entry.title, "location": ckpt.location,
            "seconds": studio.models.last_switch_seconds, "quantization": ckpt.quantization}


FIELD_CHECKPOINT = "sd_model_checkpoint"

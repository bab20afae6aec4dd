"""Typed settings, persisted to config.json with atomic writes.

A corrupt config.json is kept aside as config.json.bak and the defaults load, with a
warning; nothing a user set is silently overwritten. The top level keeps AUTOMATIC1111's
option names (its API reads them); each task adds a typed section of its own, stored under
"tasks" → name, and extensions theirs under "extensions" → name, in the same file.
"""
from __future__ import annotations

import json
import logging
import shutil
import threading
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from modules import atomic, cpu_features
from modules.errors import InvalidRequest

log = logging.getLogger("atelier.settings")

MemoryPolicy = Literal["auto", "gpu", "model_offload", "sequential_offload"]
# torch.compile modes (SD.Next's cuda_compile_mode choices); "off" first: the default everywhere.
CompileMode = Literal["off", "default", "max-autotune-no-cudagraphs", "reduce-overhead"]
CUDA_ONLY_COMPILE = ("max-autotune-no-cudagraphs", "reduce-overhead")  # GPU kernel autotuning / CUDA graphs


class Settings(BaseModel):
    """Everything the Settings tab and /sdapi/v1/options can change. Names follow AUTOMATIC1111."""

    model_config = ConfigDict(extra="ignore", validate_assignment=True)

    sd_model_checkpoint: str = Field("", description="Checkpoint in use (name in models/Stable-diffusion)")
    sd_vae: str = Field("Automatic", description="VAE: Automatic, None, or a file in models/VAE")
    CLIP_stop_at_last_layers: int = Field(1, ge=1, le=12, description="CLIP skip")
    sd_checkpoints_limit: int = Field(2, ge=1, le=16, description="Checkpoints kept in RAM")
    sd_checkpoint_cache_gb: float = Field(16.0, ge=0.0, le=1024.0, description="RAM budget for cached checkpoints, GiB")
    memory_policy: MemoryPolicy = Field("auto", description="auto, gpu, model_offload, sequential_offload")
    vae_tiling_pixels: int = Field(1024 * 1024, ge=0, description="Tile the VAE above this many pixels (0: never)")
    channels_last: bool = Field(False, description="Speed: the UNet and VAE in channels_last memory format")
    attention: Literal["sdpa", "classic"] = Field(
        "sdpa", description="Speed: attention of the UNet and VAE — sdpa (torch's scaled_dot_product_attention, the "
        "default) or classic (diffusers' plain matmul + softmax)")
    cpu_bf16: bool = Field(False, description="Speed, on the CPU: bf16 autocast (needs a CPU with AVX-512 BF16 or AMX)")
    cpu_threads: int = Field(0, ge=0, le=1024, description="Speed, on the CPU: torch threads (0: one per physical core)")
    compile_unet: CompileMode = Field(
        "off", description="Speed: torch.compile of the UNet (Flux / SD3: the transformer) — off, default, "
        "max-autotune-no-cudagraphs or reduce-overhead (the last two on a CUDA GPU only). The first image at each new "
        "size, LoRA set or checkpoint pays the compile (its seconds are in the job's log); compiled kernels are "
        "cached in data/cache/torch-compile, so a restart compiles faster")
    show_progress_every_n_steps: int = Field(2, ge=0, le=100, description="Live preview every N steps (0: off)")
    samples_format: Literal["png", "jpg", "jpeg", "webp"] = Field("png", description="File format of saved images (and of API images)")
    jpeg_quality: int = Field(80, ge=1, le=100, description="Quality of saved JPEG and WebP images")
    send_seed: bool = Field(True, description="Send to img2img / inpaint carries the seed")
    send_size: bool = Field(True, description="Send to img2img / inpaint carries the width and height")
    img2img_fix_steps: bool = Field(False, description="img2img runs exactly the steps asked (normally fewer with less denoising)")
    outdir_txt2img_samples: str = "txt2img-images"
    outdir_img2img_samples: str = "img2img-images"
    outdir_txt2img_grids: str = "txt2img-grids"
    outdir_img2img_grids: str = "img2img-grids"
    outdir_extras_samples: str = "extras-images"
    ESRGAN_tile: int = Field(192, ge=0, le=1024, description="Upscaler models run in tiles of this many pixels (0: the whole "
                             "image at once); every spandrel upscaler (ESRGAN, Real-ESRGAN, SwinIR, DAT, HAT) uses it")
    ESRGAN_tile_overlap: int = Field(8, ge=0, le=128, description="Overlap of the upscaler tiles, pixels (blended)")
    face_restoration_model: Literal["GFPGAN", "CodeFormer"] = Field(
        "GFPGAN", description="Face restorer of \"Restore faces\" (a file in models/GFPGAN; CodeFormer is not available)")
    code_former_weight: float = Field(0.5, ge=0.0, le=1.0, description="CodeFormer's fidelity (0: most restored)")
    grid_save: bool = Field(True, description="Save the X/Y/Z plot's grid (when its cells are saved)")
    save_images_default: bool = True
    ui_updates_per_second: float = Field(5.0, gt=0, le=30)
    extensions_disabled: list[str] = Field(default_factory=list)
    extensions_enabled: list[str] = Field(default_factory=list,
                                          description="Extensions that are off by default, enabled by the user")
    extensions: dict[str, dict] = Field(default_factory=dict, description="Sections added by extensions")
    tasks: dict[str, dict] = Field(default_factory=dict, description="Sections of the tasks (models, chat, …)")


class SettingsStore:
    """Owns the live Settings and the file they persist to."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._lock = threading.RLock()
        self.warning: str | None = None
        self.value = self._load()
        self._sections: dict[str, type[BaseModel]] = {}  # task name -> its settings model
        self.device_types: frozenset[str] = frozenset()  # "cpu", "cuda": the studio's devices, once chosen

    def attach_devices(self, device_types) -> None:
        """The studio's devices, once load() has chosen them: what compile_unet may ask of them. A CUDA-only
        compile mode in a config.json from a GPU machine falls back to "default" here, with a warning."""
        with self._lock:
            self.device_types = frozenset(device_types)
            mode = self.value.compile_unet
            if refused := self._compile_refusal(mode):
                self.warning = f"compile_unet is {mode!r} in {self.path.name}, but {refused}; \"default\" is in use"
                log.warning(self.warning)
                self.value = self.value.model_copy(update={"compile_unet": "default"})

    def _compile_refusal(self, mode: str) -> str | None:
        if mode in CUDA_ONLY_COMPILE and "cuda" not in self.device_types:
            where = ", ".join(sorted(self.device_types)) or "a device not chosen yet"
            return f"{mode} needs a CUDA GPU (GPU kernel autotuning / CUDA graphs) and this studio runs on {where}"
        return None

    # -- the tasks' sections ---------------------------------------------
    def add_section(self, name: str, model: type[BaseModel]) -> None:
        """A task's typed section (every field with a default), stored under tasks.<name>."""
        model()  # a field without a default fails now, at registration, not when a user opens the tab
        self._sections[name] = model

    def sections(self) -> dict[str, type[BaseModel]]:
        return dict(self._sections)

    def section(self, name: str) -> BaseModel:
        """The section's values; what config.json holds that no longer validates falls back to defaults."""
        model = self._sections[name]
        stored = self.value.tasks.get(name, {})
        try:
            return model.model_validate(stored)
        except ValidationError:
            log.warning("settings section %r in %s does not validate; using its defaults", name, self.path.name)
            return model()

    def update_section(self, name: str, changes: dict, save: bool = True) -> BaseModel:
        """Validate and apply changes to one section; an unknown key or bad value names `name.field`."""
        with self._lock:
            if name not in self._sections:
                raise InvalidRequest(f"unknown settings section; known: {', '.join(sorted(self._sections))}", "section")
            model = self._sections[name]
            unknown = [k for k in changes if k not in model.model_fields]
            if unknown:
                raise InvalidRequest(f"unknown setting; known in {name}: {', '.join(sorted(model.model_fields))}",
                                     f"{name}.{unknown[0]}")
            try:
                new = model.model_validate(self.section(name).model_dump() | changes)
            except ValidationError as exc:
                err = InvalidRequest.from_validation(exc)
                raise InvalidRequest(err.message, f"{name}.{err.field}") from None
            self.update({"tasks": {**self.value.tasks, name: new.model_dump(mode="json")}}, save=save)
            return new

    def _load(self) -> Settings:
        if not self.path.exists():
            return Settings()
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            if not isinstance(data, dict):
                raise ValueError("top level is not an object")
            loaded = Settings.model_validate(data)
        except (ValueError, ValidationError) as exc:
            backup = self.path.with_name(self.path.name + ".bak")
            shutil.copy2(self.path, backup)
            self.warning = f"{self.path.name} could not be read ({exc.__class__.__name__}); it was kept as {backup.name} and the defaults are in use"
            log.warning(self.warning)
            return Settings()
        if loaded.cpu_bf16 and not cpu_features.bf16_flags():  # a config.json from another machine
            self.warning = f"cpu_bf16 is on in {self.path.name}, but bf16 autocast is {cpu_features.bf16_note()}; it is off"
            log.warning(self.warning)
            loaded = loaded.model_copy(update={"cpu_bf16": False})
        return loaded

    def get(self) -> Settings:
        return self.value

    def update(self, changes: dict, save: bool = True) -> Settings:
        """Validate and apply changes; an unknown key or bad value names the field."""
        with self._lock:
            fields = Settings.model_fields
            unknown = [k for k in changes if k not in fields]
            if unknown:
                raise InvalidRequest(f"unknown setting; known settings: {', '.join(sorted(fields))}", unknown[0])
            merged = self.value.model_dump()
            merged.update(changes)
            try:
                new = Settings.model_validate(merged)
            except ValidationError as exc:
                raise InvalidRequest.from_validation(exc) from None
            if new.cpu_bf16 and not cpu_features.bf16_flags():
                raise InvalidRequest(f"bf16 autocast is {cpu_features.bf16_note()}; leave cpu_bf16 off", "cpu_bf16")
            if refused := self._compile_refusal(new.compile_unet):
                raise InvalidRequest(f"compile_unet {refused}; choose \"default\" (or \"off\")", "compile_unet")
            self.value = new
            if save:
                self.save()
            return new

    def extension_section(self, name: str) -> dict:
        return dict(self.value.extensions.get(name, {}))

    def set_extension_section(self, name: str, values: dict, save: bool = True) -> None:
        with self._lock:
            sections = dict(self.value.extensions)
            sections[name] = values
            self.update({"extensions": sections}, save=save)

    def save(self) -> None:
        with self._lock:
            atomic.write_json(self.path, self.value.model_dump())

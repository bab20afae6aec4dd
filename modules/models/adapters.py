"""One adapter per kind of model, behind one interface the model manager drives.

The manager (manager.py) decides what is resident where; an adapter only knows how to
load one kind, how big it is, how to move it and how to let it go. Kinds today:
  checkpoint   diffusers pipelines (SD1/SD2/SDXL)        — diffusion_adapter.py
  llm, vlm     transformers causal / image-text models   — hf.py
  esrgan, realesrgan, swinir, dat, hat   upscaler models (spandrel) — upscalers.py
  (extensions) any kind an extension registers (a YOLO detector) through api.add_model_kind
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from modules.devices import DeviceChoice
    from modules.models.quant import LoadOptions
    from modules.models.registry import ModelEntry, ModelRegistry
    from modules.settings import SettingsStore


@dataclass
class Loaded:
    """One model in memory, of any kind. `handle` is what a runner works with."""

    kind: str
    entry: "ModelEntry"
    options: "LoadOptions"
    handle: Any  # LoadedCheckpoint, hf.LanguageModel, an extension's object
    footprint: int  # bytes of its weights (parameters + buffers) as loaded
    device: str  # where its weights are now: "cpu", "cuda", "mps"
    movable: bool = True  # False for bitsandbytes weights: evicting them means unloading
    location_note: str = ""  # e.g. " (model_offload)" — shown after the device in the Models tab
    extra: dict = field(default_factory=dict)

    @property
    def key(self) -> tuple[str, str]:
        return (self.kind, str(self.entry.path))

    @property
    def location(self) -> str:
        return self.device + self.location_note


@dataclass(frozen=True)
class AdapterContext:
    """What an adapter may read while loading: the registry (paths, other entries), settings, device."""

    registry: "ModelRegistry"
    settings: "SettingsStore"
    device: "DeviceChoice"


class ModelAdapter(Protocol):
    """Load / move / release one kind of model. Implementations hold no per-model state."""

    def residency(self, settings) -> dict:
        """The kind's own limits, each None for none: max_on_device (models of this kind on the GPU at
        once), max_resident (in memory at all), max_parked_bytes (bytes of idle ones in the RAM cache)."""

    def load(self, actx: AdapterContext, entry: "ModelEntry", options: "LoadOptions") -> Loaded:
        """Read `entry` with `options` and place it on `actx.device` (raise AtelierError naming the field)."""

    def to(self, actx: AdapterContext, loaded: Loaded, device: str) -> None:
        """Move a movable model's weights to `device` ("cpu" to park it in RAM), updating loaded.device."""

    def prepare(self, actx: AdapterContext, loaded: Loaded) -> None:
        """Called on every use before the job gets the model (e.g. the SD VAE / embeddings sync); may do nothing."""

    def release(self, actx: AdapterContext, loaded: Loaded) -> None:
        """Drop what the model holds (hooks, caches) so its memory can be freed."""

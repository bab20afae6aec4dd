"""SD1 single files (A1111 / civitai layout) on the skeleton path (skeleton.py).

The ordinary single-file load builds the pipeline from a config folder (the file's sidecar or
models/configs/sd1) and converts the file's LDM key names with diffusers' own helpers. A later SD1
file with the same config folder, the same key table (names and shapes) and the dtype builds the
same modules, so it gets a copy of the kept skeleton and the tensors of the same conversion —
diffusers' convert_ldm_unet_checkpoint / convert_ldm_vae_checkpoint / convert_ldm_clip_checkpoint —
assigned. The fingerprint includes the key table, so a file of another architecture (other shapes,
other keys) never meets this skeleton; the skeleton itself is only kept when the conversion
reproduces the ordinary load tensor by tensor (SkeletonCache.remember_file).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from modules.models import detect
from modules.models.skeleton import config_fingerprint

_SKIPPED = ("model_ema.",)  # EMA copies: the ordinary load does not read them


def key_table(path: Path) -> dict:
    """{key: shape} from the safetensors header (8-byte length + JSON, per the format): one small read, no
    mapping of a multi-GB file."""
    with open(path, "rb") as f:
        size = int.from_bytes(f.read(8), "little")
        if not 0 < size < 1 << 27:
            raise ValueError(f"{path.name}: not a safetensors header")
        header = json.loads(f.read(size))
    return {k: v["shape"] for k, v in header.items() if k != "__metadata__"}


def fingerprint(table: dict, kind: detect.CheckpointKind, config: Path | None, dtype) -> str | None:
    """What makes two SD1 single files build the same modules — their key table (`key_table`), kind, config
    folder and dtype —, or None (this file loads the ordinary way)."""
    if kind.arch != "sd1" or kind.inpaint or config is None:
        return None
    digest = hashlib.sha256(b"single-file\0" + json.dumps([kind.arch, kind.inpaint, kind.refiner]).encode())
    digest.update(config_fingerprint(config, dtype).encode())
    digest.update(json.dumps(sorted((k, v) for k, v in table.items() if not k.startswith(_SKIPPED))).encode())
    return digest.hexdigest()


def ldm_states(path: Path, pipe) -> dict:
    """{component: state dict in the pipeline's key names} of an SD1 single file, as from_single_file converts it."""
    from diffusers.loaders.single_file_utils import (convert_ldm_clip_checkpoint, convert_ldm_unet_checkpoint,
                                                     convert_ldm_vae_checkpoint)
    from safetensors.torch import load_file

    checkpoint = load_file(str(path))
    text = convert_ldm_clip_checkpoint(checkpoint)
    if not hasattr(pipe.text_encoder, "text_model"):  # transformers >= 5.6 flattened CLIPTextModel, as diffusers does
        text = {k.removeprefix("text_model."): v for k, v in text.items()}
    return {"unet": convert_ldm_unet_checkpoint(checkpoint, dict(pipe.unet.config)),
            "vae": convert_ldm_vae_checkpoint(checkpoint, dict(pipe.vae.config)),
            "text_encoder": text}

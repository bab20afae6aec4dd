"""Write a diffusers SD1.x pipeline as one A1111-style .safetensors file (original LDM key names).

diffusers ships only the other direction (LDM → diffusers, used by `from_single_file`); this is
the inverse of its tables, computed from the UNet's and VAE's configs so it works for any block
count (the tiny demo model as well as a real SD1.5). The tests make their single-file checkpoints
offline with it, and LoRA training uses its UNet key table for kohya-format names (training/kohya.py).
"""
from __future__ import annotations

from pathlib import Path

from modules import atomic

_RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "norm2": "out_layers.0", "conv2": "out_layers.3",
           "time_emb_proj": "emb_layers.1", "conv_shortcut": "skip_connection"}
_VAE_ATTN = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def _swap(rest: str, table: dict) -> str:
    for old, new in table.items():
        if rest == old or rest.startswith(old + "."):
            return new + rest[len(old):]
    return rest


def unet_key(key: str, config) -> str:
    """A diffusers UNet2DConditionModel key → its LDM name (without the model.diffusion_model. prefix)."""
    per = config["layers_per_block"]
    top = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
           "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2"}
    for old, new in top.items():
        if key.startswith(old + "."):
            return new + key[len(old):]
    parts = key.split(".")
    if parts[0] == "down_blocks":
        i, what, j, rest = int(parts[1]), parts[2], int(parts[3]), ".".join(parts[4:])
        if what == "resnets":
            return f"input_blocks.{1 + i * (per + 1) + j}.0.{_swap(rest, _RESNET)}"
        if what == "attentions":
            return f"input_blocks.{1 + i * (per + 1) + j}.1.{rest}"
        if what == "downsamplers":
            return f"input_blocks.{(i + 1) * (per + 1)}.0.op.{rest.split('.', 1)[1]}"
    if parts[0] == "mid_block":
        what, j, rest = parts[1], int(parts[2]), ".".join(parts[3:])
        if what == "resnets":
            return f"middle_block.{2 * j}.{_swap(rest, _RESNET)}"
        return f"middle_block.1.{rest}"
    if parts[0] == "up_blocks":
        i, what, j, rest = int(parts[1]), parts[2], int(parts[3]), ".".join(parts[4:])
        base = i * (per + 1)
        if what == "resnets":
            return f"output_blocks.{base + j}.0.{_swap(rest, _RESNET)}"
        if what == "attentions":
            return f"output_blocks.{base + j}.1.{rest}"
        if what == "upsamplers":
            has_attn = "CrossAttn" in config["up_block_types"][i]
            return f"output_blocks.{base + per}.{2 if has_attn else 1}.{rest}"
    raise KeyError(f"no LDM name for UNet key {key}")


def vae_key(key: str, config) -> str:
    """A diffusers AutoencoderKL key → its LDM name (without the first_stage_model. prefix)."""
    n = len(config["block_out_channels"])
    parts = key.split(".")
    half, rest = parts[0], parts[1:]
    if half not in ("encoder", "decoder"):
        return key  # quant_conv, post_quant_conv
    if rest[0] == "conv_norm_out":
        return ".".join([half, "norm_out", *rest[1:]])
    if rest[0] in ("down_blocks", "up_blocks"):
        i, what, tail = int(rest[1]), rest[2], rest[3:]
        level = i if rest[0] == "down_blocks" else n - 1 - i
        stage = "down" if rest[0] == "down_blocks" else "up"
        if what == "resnets":
            return f"{half}.{stage}.{level}.block.{tail[0]}.{_swap('.'.join(tail[1:]), {'conv_shortcut': 'nin_shortcut'})}"
        sampler = "downsample" if stage == "down" else "upsample"
        return f"{half}.{stage}.{level}.{sampler}.{'.'.join(tail[1:])}"
    if rest[0] == "mid_block":
        what, j, tail = rest[1], int(rest[2]), ".".join(rest[3:])
        if what == "resnets":
            return f"{half}.mid.block_{j + 1}.{_swap(tail, {'conv_shortcut': 'nin_shortcut'})}"
        return f"{half}.mid.attn_1.{_swap(tail, _VAE_ATTN)}"
    return key


def ldm_state_dict(pipe) -> dict:
    """The pipeline's UNet, VAE and CLIP text encoder under the original SD1.x key names."""
    out = {}
    for k, v in pipe.unet.state_dict().items():
        out["model.diffusion_model." + unet_key(k, pipe.unet.config)] = v
    for k, v in pipe.vae.state_dict().items():
        if ".mid_block.attentions." in k and k.endswith(".weight") and v.ndim == 2:
            v = v[:, :, None, None]  # LDM's VAE attention uses 1x1 convolutions
        out["first_stage_model." + vae_key(k, pipe.vae.config)] = v
    for k, v in pipe.text_encoder.state_dict().items():
        # transformers 5 names CLIPTextModel weights without `text_model.`; A1111 files have it.
        name = k if k.startswith("text_model.") else "text_model." + k
        out["cond_stage_model.transformer." + name] = v
    return {k: v.detach().contiguous().clone() for k, v in out.items()}


def save_single_file(pipe, path: Path, metadata: dict | None = None) -> Path:
    """Write `pipe` as an A1111-style .safetensors checkpoint, atomically."""
    from safetensors.torch import save

    path = Path(path)
    atomic.write_bytes(path, save(ldm_state_dict(pipe), metadata={"format": "pt", **(metadata or {})}))
    return path


def copy_configs(diffusers_folder: Path, target: Path) -> Path:
    """A diffusers folder's configs and tokenizer without weights: a sidecar `<name>.config/` folder."""
    import shutil

    diffusers_folder, target = Path(diffusers_folder), Path(target)
    for p in diffusers_folder.rglob("*"):
        if p.is_file() and p.suffix in (".json", ".txt", ".model") and not p.name.endswith(".index.json"):
            dest = target / p.relative_to(diffusers_folder)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(p, dest)
    return target

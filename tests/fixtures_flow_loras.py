"""Flux and SD3 LoRAs for the tiny demo transformers (modules/models/demo_flow.py's default width), in the
formats people download: kohya / sd-scripts Flux (`lora_unet_…`, `.alpha`), XLabs Flux, diffusers/PEFT."""
from __future__ import annotations

RANK = 4


def _pair(gen, out_features: int, in_features: int, scale: float = 0.5):
    import torch

    return (torch.randn(RANK, in_features, generator=gen) * scale,
            torch.randn(out_features, RANK, generator=gen) * scale)


def save_kohya_flux_lora(path, seed: int = 0, width: int = 32):
    """sd-scripts' Flux layout: fused qkv of the double blocks, linear2 of the single blocks, alpha per module;
    `width`: the transformer's (32: the demo's default; 256: tests/fixtures_models.save_flux_file_set's)."""
    import torch
    from safetensors.torch import save_file

    gen = torch.Generator().manual_seed(seed)
    sd = {}
    for key, (out_f, in_f) in {"lora_unet_double_blocks_0_img_attn_qkv": (3 * width, width),
                               "lora_unet_double_blocks_0_img_attn_proj": (width, width),
                               "lora_unet_single_blocks_0_linear2": (width, 5 * width)}.items():  # attn + 4x mlp
        down, up = _pair(gen, out_f, in_f)
        sd[f"{key}.lora_down.weight"], sd[f"{key}.lora_up.weight"] = down, up
        sd[f"{key}.alpha"] = torch.tensor(float(RANK / 2))
    save_file(sd, str(path))
    return path


def save_xlabs_flux_lora(path, seed: int = 0):
    """XLabs' layout (x-flux's trainer): each double block's attention processor with its own LoRA pairs, `qkv_lora1`
    / `proj_lora1` on the image stream and `qkv_lora2` / `proj_lora2` on the text stream; no alpha."""
    import torch
    from safetensors.torch import save_file

    gen = torch.Generator().manual_seed(seed)
    sd = {}
    for key, (out_f, in_f) in {"qkv_lora1": (96, 32), "proj_lora1": (32, 32), "qkv_lora2": (96, 32),
                               "proj_lora2": (32, 32)}.items():
        down, up = _pair(gen, out_f, in_f)
        sd[f"double_blocks.0.processor.{key}.down.weight"], sd[f"double_blocks.0.processor.{key}.up.weight"] = down, up
    save_file(sd, str(path))
    return path


def save_peft_lora(path, keys: dict, seed: int = 0):
    import torch
    from safetensors.torch import save_file

    gen = torch.Generator().manual_seed(seed)
    sd = {}
    for key, (out_f, in_f) in keys.items():
        sd[f"transformer.{key}.lora_A.weight"], sd[f"transformer.{key}.lora_B.weight"] = _pair(gen, out_f, in_f)
    save_file(sd, str(path))
    return path


FLUX_PEFT = {"transformer_blocks.0.attn.to_q": (32, 32), "transformer_blocks.0.ff.net.0.proj": (128, 32),
             "single_transformer_blocks.0.proj_out": (32, 160)}
SD3_PEFT = {"transformer_blocks.0.attn.to_q": (32, 32), "transformer_blocks.0.ff.net.0.proj": (128, 32),
            "transformer_blocks.1.ff.net.2": (32, 128)}


def save_server_loras(models) -> None:
    """What the live-server tests apply: a kohya Flux LoRA and a PEFT SD3 LoRA in models/Lora."""
    loras = models / "Lora"
    loras.mkdir(parents=True, exist_ok=True)
    save_kohya_flux_lora(loras / "flux-kohya.safetensors", seed=3)
    save_peft_lora(loras / "sd3-peft.safetensors", SD3_PEFT, seed=5)

"""The trained LoRA as a kohya/A1111 `.safetensors`: `lora_unet_…` / `lora_te_…` (SDXL: `lora_te1_…`,
`lora_te2_…`) keys with `.lora_down.weight`, `.lora_up.weight` and `.alpha` per module, and kohya's
`ss_*` metadata — the file AUTOMATIC1111, Forge, ComfyUI and diffusers' `load_lora_weights` read.

diffusers' `convert_state_dict_to_kohya` does the renaming (lora_A → lora_down, dots → underscores);
three things it leaves to us: it writes alpha = rank (the trained alpha is what scales), it names an
SD1/SD2 text encoder `lora_te1_` (kohya and A1111 say `lora_te_` when there is one encoder), and kohya
names SDXL's UNet modules by the original (SGM) layout, `input_blocks_4_1_…`, not diffusers'.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from modules import atomic

BASE_VERSIONS = {"sd1": "sd_v1", "sd2": "sd_v2", "sdxl": "sdxl_base_v1-0"}


def _unet_module_name(key: str, unet_config: dict, arch: str) -> str:
    if arch != "sdxl":
        return key
    from modules.models.singlefile import unet_key

    module, _, rest = key.partition(".lora_")
    return unet_key(module + ".weight", unet_config)[: -len(".weight")] + ".lora_" + rest


def kohya_state_dict(unet, text_encoders: list, arch: str, alpha: float) -> dict:
    import torch
    from diffusers.utils import convert_state_dict_to_kohya
    from peft.utils import get_peft_model_state_dict

    peft: dict = {}
    for key, value in get_peft_model_state_dict(unet).items():
        peft["unet." + _unet_module_name(key, unet.config, arch)] = value
    for i, encoder in enumerate(text_encoders):
        prefix = "text_encoder." if i == 0 else "text_encoder_2."
        for key, value in get_peft_model_state_dict(encoder).items():
            # transformers 5 names CLIP's modules without `text_model.`; kohya's keys keep it.
            peft[prefix + (key if key.startswith("text_model.") else "text_model." + key)] = value
    out = {}
    for key, value in convert_state_dict_to_kohya(peft).items():
        if arch != "sdxl" and key.startswith("lora_te1_"):
            key = "lora_te_" + key[len("lora_te1_"):]
        if key.endswith(".alpha"):
            value = torch.tensor(float(alpha))
        out[key] = value.detach().to("cpu").contiguous()
    return out


def metadata(request, base: dict, arch: str, scan, steps: int, epoch: int, started_at: float,
             resolution: int, buckets: dict) -> dict[str, str]:
    """kohya's ss_* keys (strings), as A1111's LoRA cards and civitai read them."""
    sha = base.get("sha256") or ""
    tags: dict = {}
    for item in scan.items:
        folder = item.path.rsplit("/", 1)[0] if "/" in item.path else "."
        for tag in (t.strip() for t in item.caption.split(",")):
            if tag:
                tags.setdefault(folder, {}).setdefault(tag, 0)
                tags[folder][tag] += 1
    meta = {
        "ss_network_module": "networks.lora", "ss_network_dim": request.rank,
        "ss_network_alpha": request.network_alpha, "ss_network_train_unet_only": not request.train_text_encoder,
        "ss_network_args": json.dumps({"target_modules": "attention"}),
        "ss_sd_model_name": base.get("name", ""), "ss_sd_model_hash": sha[:10], "ss_new_sd_model_hash": sha,
        "ss_base_model_version": BASE_VERSIONS.get(arch, arch), "ss_v2": arch == "sd2",
        "ss_output_name": request.output_name, "ss_training_comment": "trained in Atelier",
        "ss_training_started_at": int(started_at), "ss_training_finished_at": int(time.time()),
        "ss_learning_rate": request.unet_lr, "ss_unet_lr": request.unet_lr,
        "ss_text_encoder_lr": request.text_encoder_lr if request.train_text_encoder else 0,
        "ss_lr_scheduler": request.lr_scheduler, "ss_lr_warmup_steps": request.lr_warmup_steps,
        "ss_optimizer": request.optimizer, "ss_max_train_steps": steps, "ss_steps": steps, "ss_epoch": epoch,
        "ss_num_epochs": request.epochs, "ss_batch_size_per_device": request.batch_size,
        "ss_gradient_accumulation_steps": request.gradient_accumulation,
        "ss_gradient_checkpointing": request.gradient_checkpointing, "ss_mixed_precision": request.mixed_precision,
        "ss_seed": request.seed, "ss_min_snr_gamma": request.min_snr_gamma if request.min_snr_gamma else "",
        "ss_noise_offset": request.noise_offset, "ss_max_grad_norm": request.max_grad_norm,
        "ss_resolution": f"({resolution}, {resolution})", "ss_enable_bucket": request.bucketing,
        "ss_bucket_no_upscale": True, "ss_bucket_info": json.dumps({"buckets": {
            str(i): {"resolution": list(size), "count": count} for i, (size, count) in enumerate(buckets.items())}}),
        "ss_cache_latents": request.cache_latents, "ss_caption_extension": ".txt",
        "ss_num_train_images": scan.samples_per_epoch, "ss_num_reg_images": 0,
        "ss_dataset_dirs": json.dumps(scan.folders), "ss_tag_frequency": json.dumps(tags),
    }
    return {key: str(value) for key, value in meta.items()}


def write_lora(path: Path, tensors: dict, meta: dict[str, str]) -> Path:
    """Written whole or not at all (a LoRA picker scanning the folder never sees half a file)."""
    from safetensors.torch import save

    atomic.write_bytes(Path(path), save(tensors, metadata=meta))
    return Path(path)

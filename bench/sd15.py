"""A Stable Diffusion 1.5-architecture checkpoint with random weights, built offline.

The real SD1.5 config sizes (UNet 860M, VAE 84M, CLIP ViT-L text encoder 123M), built
from the diffusers/transformers classes, so timings are those of a real SD1.5 model
without downloading one. Saved once as a diffusers folder (safetensors) in a cache
folder outside the repo and reused by later runs.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

SD15_NAME = "bench-sd15-random"
_VERSION = "1"  # bump when the build below changes, so cached copies are rebuilt


def cache_root() -> Path:
    root = Path(os.environ.get("ATELIER_BENCH_CACHE", Path(tempfile.gettempdir()) / "atelier-bench-cache"))
    root.mkdir(parents=True, exist_ok=True)
    return root


def build_sd15_pipeline(seed: int = 0):
    import torch
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from modules.models.demo import write_clip_tokenizer

    torch.manual_seed(seed)
    # Sizes from runwayml/stable-diffusion-v1-5 unet/config.json, vae/config.json, text_encoder/config.json.
    unet = UNet2DConditionModel(
        sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
        block_out_channels=(320, 640, 1280, 1280),
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=768, attention_head_dim=8,
    )
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, sample_size=512,
        block_out_channels=(128, 256, 512, 512),
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
    )
    with tempfile.TemporaryDirectory() as tmp:
        write_clip_tokenizer(Path(tmp))  # a small offline vocabulary; ids stay below CLIP's 49408
        tokenizer = CLIPTokenizer.from_pretrained(tmp, local_files_only=True)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
        max_position_embeddings=77, hidden_act="quick_gelu", projection_dim=768,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    ))
    scheduler = PNDMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              num_train_timesteps=1000, steps_offset=1, skip_prk_steps=True)
    return StableDiffusionPipeline(unet=unet.eval(), vae=vae.eval(), text_encoder=text_encoder.eval(),
                                   tokenizer=tokenizer, scheduler=scheduler, safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)


def ensure_sd15_folder(log=print) -> Path:
    """The cached SD1.5-architecture diffusers folder; built (about a minute on 2 cores) when missing."""
    folder = cache_root() / f"{SD15_NAME}-v{_VERSION}"
    if (folder / "model_index.json").exists():
        return folder
    log(f"building a random-weights SD1.5-architecture checkpoint in {folder} (once) …")
    pipe = build_sd15_pipeline()
    tmp = folder.with_name(folder.name + ".building")
    shutil.rmtree(tmp, ignore_errors=True)
    pipe.save_pretrained(str(tmp), safe_serialization=True)
    del pipe
    tmp.rename(folder)
    return folder


def link_copy(src: Path, dst: Path) -> Path:
    """A second checkpoint with the same bytes under another name: hard links, no extra disk."""
    if dst.exists():
        return dst
    tmp = dst.with_name("." + dst.name + ".linking")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp, copy_function=os.link)
    tmp.rename(dst)
    return dst

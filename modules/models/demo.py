"""Tiny Stable Diffusion models with random weights, built offline from the real classes.

The studio builds one when models/Stable-diffusion holds no checkpoint, saves it as a
diffusers folder (safetensors weights, JSON configs, tokenizer files) and then loads it
through the same loader as any user's checkpoint. Tests use the same factory; the files only
tests need (LoRAs, single-file checkpoints, a tiny SDXL) are written by tests/fixtures_models.py.
"""
from __future__ import annotations

import json
from pathlib import Path

DEMO_NAME = "atelier-demo-sd15"
DEMO_NOTE = (
    "This is Atelier's built-in demo model: random weights, so it makes noise-like pictures. "
    "Drop a real checkpoint (.safetensors or a diffusers folder) into models/Stable-diffusion "
    "and press Refresh to make real images."
)

# Unicode stand-ins for the 256 byte values, as GPT-2/CLIP byte-level BPE defines them.
def _bytes_to_unicode() -> list[str]:
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for c in cs]


def write_clip_tokenizer(folder: Path, max_length: int = 77) -> None:
    """A byte-level CLIP tokenizer with a small vocabulary: characters plus a few merges."""
    folder.mkdir(parents=True, exist_ok=True)
    chars = _bytes_to_unicode()
    vocab: dict[str, int] = {}
    for ch in chars:
        vocab[ch] = len(vocab)
    for ch in chars:
        vocab[ch + "</w>"] = len(vocab)
    merges = []
    # A handful of common merges so ordinary words are a few tokens, not one per letter.
    for pair in ("t h", "th e</w>", "a n", "an d</w>", "i n", "in g</w>", "o n", "e r", "e s", "a t"):
        left, right = pair.split(" ")
        merged = left + right
        if merged not in vocab:
            vocab[merged] = len(vocab)
            merges.append(pair)
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    (folder / "special_tokens_map.json").write_text(json.dumps({
        "bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>", "unk_token": "<|endoftext|>",
    }), encoding="utf-8")
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "CLIPTokenizer", "model_max_length": max_length,
        "bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>", "unk_token": "<|endoftext|>",
        "do_lower_case": True,
    }), encoding="utf-8")


def build_sd15_components(seed: int = 0, unet_channels: tuple[int, ...] = (32, 64), cross_dim: int = 32,
                          sample_size: int = 32, tokenizer_dir: Path | None = None) -> dict:
    """The components of a tiny SD1.x-architecture pipeline (random weights, seeded)."""
    import tempfile

    import torch
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        block_out_channels=unet_channels,
        layers_per_block=1,
        sample_size=sample_size,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D",) + ("CrossAttnDownBlock2D",) * (len(unet_channels) - 1),
        up_block_types=("CrossAttnUpBlock2D",) * (len(unet_channels) - 1) + ("UpBlock2D",),
        cross_attention_dim=cross_dim,
        attention_head_dim=8 if unet_channels[0] >= 64 else 2,
        norm_num_groups=min(32, unet_channels[0]),
    )
    vae = AutoencoderKL(
        # Four blocks: the real 8x downsampling, so A1111's default 512x512 is a 64x64 latent and
        # runs in seconds on a CPU (with two blocks it was a 256x256 latent and took minutes).
        block_out_channels=(32, 32, 64, 64),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4,
        norm_num_groups=32,
        sample_size=sample_size * 8,
    )
    text_config = CLIPTextConfig(
        bos_token_id=0, eos_token_id=2, hidden_size=cross_dim, intermediate_size=37, layer_norm_eps=1e-05,
        num_attention_heads=4, num_hidden_layers=5, pad_token_id=1, vocab_size=600, max_position_embeddings=77,
        projection_dim=cross_dim,
    )
    with tempfile.TemporaryDirectory() as tmp:
        tok_dir = tokenizer_dir or Path(tmp) / "tokenizer"
        if tokenizer_dir is None:
            write_clip_tokenizer(tok_dir)
        tokenizer = CLIPTokenizer.from_pretrained(str(tok_dir), local_files_only=True)
    text_config.bos_token_id = tokenizer.bos_token_id
    text_config.eos_token_id = tokenizer.eos_token_id
    text_config.pad_token_id = tokenizer.pad_token_id
    text_config.vocab_size = len(tokenizer)
    text_encoder = CLIPTextModel(text_config)
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
        steps_offset=1, timestep_spacing="leading",
    )
    return {
        "unet": unet.eval(), "vae": vae.eval(), "text_encoder": text_encoder.eval(), "tokenizer": tokenizer,
        "scheduler": scheduler, "safety_checker": None, "feature_extractor": None, "image_encoder": None,
    }


def build_sd15_pipeline(seed: int = 0, **kwargs):
    from diffusers import StableDiffusionPipeline

    return StableDiffusionPipeline(**build_sd15_components(seed, **kwargs), requires_safety_checker=False)


def save_demo_checkpoint(folder: Path, seed: int = 0, **kwargs) -> Path:
    """Build and save a tiny SD1.x checkpoint as a diffusers folder (safetensors weights)."""
    pipe = build_sd15_pipeline(seed, **kwargs)
    folder = Path(folder)
    tmp = folder.with_name("." + folder.name + ".building")
    if tmp.exists():
        import shutil

        shutil.rmtree(tmp)
    pipe.save_pretrained(str(tmp), safe_serialization=True)
    (tmp / "ATELIER_DEMO.txt").write_text(DEMO_NOTE + "\n", encoding="utf-8")
    tmp.rename(folder)  # appears whole or not at all
    return folder


def ensure_demo_checkpoint(ckpt_dir: Path) -> Path | None:
    """Build the demo model when the checkpoint folder holds no checkpoint at all."""
    ckpt_dir = Path(ckpt_dir)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    demo = ckpt_dir / DEMO_NAME
    if demo.exists():
        return demo
    has_any = any(
        p.suffix.lower() in (".safetensors", ".ckpt", ".pt", ".bin") or (p / "model_index.json").exists()
        for p in ckpt_dir.iterdir() if not p.name.startswith(".")
    )
    if has_any:
        return None
    return save_demo_checkpoint(demo)


def is_demo(path: Path) -> bool:
    return (Path(path) / "ATELIER_DEMO.txt").exists()

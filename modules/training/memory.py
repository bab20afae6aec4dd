"""A memory estimate for the Train tab, from the model's size, the batch, the precision and the options.

An estimate, not a measurement: frozen weights at their dtype, the LoRA's parameters with their
gradients and optimizer states, and activations scaled from one reference point (SD1.5's UNet,
512x512, batch 1, fp16: about 3 GiB of activations without gradient checkpointing, a third of that
with it). The tab shows it as "about N GiB"; the training process reports the real peak.
"""
from __future__ import annotations

GIB = 1024**3
_SD15_UNET_BYTES = 3.44e9  # fp32 UNet of SD1.5: the reference the activation figure is measured for
_REF_ACTIVATIONS = 3.0 * GIB  # fp16, 512x512, batch 1, no checkpointing
_CHECKPOINTING_SAVES = 3.0  # gradient checkpointing keeps about a third of the activations
# Optimizer state bytes per trainable fp32 parameter (AdamW: two moments).
_OPTIMIZER_BYTES = {"adamw": 8, "adamw8bit": 2, "prodigy": 16, "adafactor": 4}


def estimate_sd_lora(model_bytes: int, unet_fraction: float, resolution: int, batch_size: int, precision: str,
                     rank: int, train_text_encoder: bool, gradient_checkpointing: bool, cache_latents: bool,
                     optimizer: str) -> dict:
    """Bytes by part and in all, for an SD LoRA training. `model_bytes`: the checkpoint's fp32 size."""
    half = precision in ("fp16", "bf16")
    unet_bytes = model_bytes * unet_fraction
    rest_bytes = model_bytes - unet_bytes  # VAE and text encoder(s)
    weights = unet_bytes * (0.5 if half else 1.0) + rest_bytes * (0.5 if half else 1.0)
    if cache_latents:
        weights -= rest_bytes * 0.1 * (0.5 if half else 1.0)  # the VAE leaves the device once latents are cached
    # LoRA parameters: about rank/1000 of the UNet's for attention-only targets at rank 1 (SD1.5: ~0.8M at rank 4).
    lora_params = unet_bytes / 4 * rank / 16_000 * (1.5 if train_text_encoder else 1.0)
    trainable = lora_params * (4 + 4 + _OPTIMIZER_BYTES.get(optimizer, 8))
    activations = (_REF_ACTIVATIONS * (unet_bytes / _SD15_UNET_BYTES) * batch_size * (resolution / 512) ** 2
                   * (1.0 if half else 2.0) / (_CHECKPOINTING_SAVES if gradient_checkpointing else 1.0))
    if train_text_encoder:
        activations *= 1.1
    total = weights + trainable + activations
    return {"weights_bytes": int(weights), "trainable_bytes": int(trainable), "activations_bytes": int(activations),
            "total_bytes": int(total), "total_gib": round(total / GIB, 1),
            "note": "an estimate from the model's size and the options; the training reports the real peak"}


def estimate_lm_lora(model_bytes: int, quantization: str, precision: str, batch_size: int, cutoff_len: int,
                     rank: int, gradient_checkpointing: bool, optimizer: str) -> dict:
    """Bytes by part and in all, for an LLM LoRA / QLoRA training. `model_bytes`: the folder's size."""
    # The folder's weights are usually bf16 (2 bytes a parameter); training loads fp32 on the CPU, bf16 on a GPU.
    params = model_bytes / 2
    per_param = 0.55 if quantization == "nf4" else (2 if precision in ("fp16", "bf16") else 4)
    weights = params * per_param
    lora_params = params * rank / 2000  # all-linear targets: about rank/2000 of the parameters
    trainable = lora_params * (4 + 4 + _OPTIMIZER_BYTES.get(optimizer, 8))
    # Activations: about 34 bytes per token per hidden unit per layer in half precision (no checkpointing),
    # folded here into a per-parameter figure: tokens x sqrt(params) x a constant measured on Gemma-size models.
    activations = batch_size * cutoff_len * (params ** 0.5) * 30 * (1 if precision != "no" else 2)
    if gradient_checkpointing:
        activations /= 4
    total = weights + trainable + activations
    return {"weights_bytes": int(weights), "trainable_bytes": int(trainable), "activations_bytes": int(activations),
            "total_bytes": int(total), "total_gib": round(total / GIB, 1),
            "note": "an estimate from the model's size and the options; the training reports the real peak"}


def estimate_dreambooth(model_bytes: int, unet_fraction: float, request) -> dict:
    """DreamBooth: the SD LoRA figure with the class images in the batch (twice the images a step); a full
    fine-tune keeps the UNet (and trained text encoder) in fp32 with gradients and optimizer states."""
    half = request.mixed_precision in ("fp16", "bf16")
    est = estimate_sd_lora(model_bytes, unet_fraction, request.resolution,
                           request.batch_size * (2 if request.prior_preservation else 1), request.mixed_precision,
                           request.rank, request.train_text_encoder, request.gradient_checkpointing,
                           request.cache_latents, request.optimizer)
    if request.mode != "full":
        return est
    unet_bytes = model_bytes * unet_fraction
    trained_bytes = unet_bytes + (model_bytes - unet_bytes) * 0.6 * request.train_text_encoder  # CLIP ≈ 60% of the rest
    weights = est["weights_bytes"] + (unet_bytes * 0.5 if half else 0)  # the trained UNet stays fp32
    trainable = trained_bytes / 4 * (4 + _OPTIMIZER_BYTES.get(request.optimizer, 8))  # gradients + states
    total = weights + trainable + est["activations_bytes"]
    return est | {"weights_bytes": int(weights), "trainable_bytes": int(trainable), "total_bytes": int(total),
                  "total_gib": round(total / GIB, 1)}

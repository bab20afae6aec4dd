"""The Stable Diffusion parts of a LoRA training: the base checkpoint loaded through the studio's own
loader, frozen, with peft LoRA adapters on the UNet's attention (and the text encoders'), the noise
scheduler, and the text conditioning (SD1/SD2: the last hidden state; SDXL: both encoders' penultimate
states and the pooled embedding, as diffusers' SDXL training example computes them)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

UNET_TARGETS = ["to_k", "to_q", "to_v", "to_out.0"]  # diffusers' train_text_to_image_lora.py targets
TEXT_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj"]


@dataclass
class SdParts:
    pipe: object
    arch: str
    unet: object
    vae: object
    text_encoders: list
    tokenizers: list
    noise_scheduler: object
    trained: dict = field(default_factory=dict)  # name -> module with a LoRA being trained

    @property
    def is_sdxl(self) -> bool:
        return self.arch == "sdxl"


def load_parts(base: dict, data_root: str) -> SdParts:
    import torch
    from diffusers import DDPMScheduler

    from modules.models.loaders import load_checkpoint
    from modules.models.registry import ModelEntry
    from modules.paths import DataPaths

    entry = ModelEntry(kind="checkpoint", name=base["name"], path=Path(base["path"]), format=base["format"],
                       size=int(base.get("size") or 0), arch=base.get("arch"))
    pipe, arch = load_checkpoint(entry, torch.float32, DataPaths(Path(data_root)))
    pipe.set_progress_bar_config(disable=True)
    encoders = [e for e in (pipe.text_encoder, getattr(pipe, "text_encoder_2", None)) if e is not None]
    tokenizers = [t for t in (pipe.tokenizer, getattr(pipe, "tokenizer_2", None)) if t is not None]
    # Training noise follows the checkpoint's own schedule and prediction type (epsilon, or v for SD2-768).
    noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    return SdParts(pipe, arch, pipe.unet, pipe.vae, encoders, tokenizers, noise_scheduler)


def add_loras(parts: SdParts, request, device, dtype) -> list[dict]:
    """Freeze the base, place it (VAE in fp32 always), add the adapters; returns the optimizer's groups."""
    import torch
    from diffusers.training_utils import cast_training_params
    from peft import LoraConfig

    for module in [parts.unet, parts.vae, *parts.text_encoders]:
        module.requires_grad_(False)
    parts.vae.to(device)  # loaded in fp32, and it stays so: fp16 VAEs overflow to NaN (black samples)
    for module in [parts.unet, *parts.text_encoders]:
        module.to(device) if dtype == torch.float32 else module.to(device, dtype=dtype)
    config = dict(r=request.rank, lora_alpha=request.network_alpha, init_lora_weights="gaussian")
    parts.unet.add_adapter(LoraConfig(target_modules=UNET_TARGETS, **config))
    parts.trained = {"unet": parts.unet}
    if request.train_text_encoder:
        for i, encoder in enumerate(parts.text_encoders):
            encoder.add_adapter(LoraConfig(target_modules=TEXT_TARGETS, **config))
            parts.trained["text_encoder" if i == 0 else f"text_encoder_{i + 1}"] = encoder
    if request.gradient_checkpointing:
        parts.unet.enable_gradient_checkpointing()
        if request.train_text_encoder:
            for encoder in parts.text_encoders:
                encoder.gradient_checkpointing_enable()
    modules = list(parts.trained.values())
    if dtype != torch.float32:
        cast_training_params(modules, dtype=torch.float32)  # trainable LoRA weights in fp32, the base in half
    return _groups(parts, request)


def add_full(parts: SdParts, request, device, dtype) -> list[dict]:
    """A full fine-tune (DreamBooth's): the UNet (and the text encoders when trained) train in fp32 (mixed
    precision autocasts their forward), the rest is frozen; returns the optimizer's groups."""
    import torch

    for module in [parts.vae, *parts.text_encoders]:
        module.requires_grad_(False)
    parts.vae.to(device)  # fp32 always, as in add_loras
    parts.unet.to(device).requires_grad_(True)
    parts.trained = {"unet": parts.unet}
    for i, encoder in enumerate(parts.text_encoders):
        if request.train_text_encoder:
            encoder.to(device).requires_grad_(True)
            parts.trained["text_encoder" if i == 0 else f"text_encoder_{i + 1}"] = encoder
        else:
            encoder.to(device) if dtype == torch.float32 else encoder.to(device, dtype=dtype)
    if request.gradient_checkpointing:
        parts.unet.enable_gradient_checkpointing()
        if request.train_text_encoder:
            for encoder in parts.text_encoders:
                encoder.gradient_checkpointing_enable()
    return _groups(parts, request)


def _groups(parts: SdParts, request) -> list[dict]:
    groups = [{"params": [p for p in parts.unet.parameters() if p.requires_grad], "lr": request.unet_lr}]
    for name, module in parts.trained.items():
        if name != "unet":
            groups.append({"params": [p for p in module.parameters() if p.requires_grad],
                           "lr": request.text_encoder_lr})
    return groups


def tokenize(parts: SdParts, captions: list[str]) -> list:
    return [tok(captions, padding="max_length", max_length=tok.model_max_length, truncation=True,
                return_tensors="pt").input_ids for tok in parts.tokenizers]


def encode_text(parts: SdParts, encoders: list, input_ids: list, device):
    """(hidden states, pooled or None). Written here rather than `pipe.encode_prompt` so that trained
    encoders are called through accelerate's wrappers (DDP syncs their gradients)."""
    import torch

    if not parts.is_sdxl:
        return encoders[0](input_ids[0].to(device))[0], None
    states, pooled = [], None
    for encoder, ids in zip(encoders, input_ids):
        out = encoder(ids.to(device), output_hidden_states=True)
        pooled = out[0]  # the last encoder's projected text embedding
        states.append(out.hidden_states[-2])
    return torch.cat(states, dim=-1), pooled


def training_loss(parts: SdParts, unet, latents, hidden, pooled, time_ids, generator, request):
    """One batch's loss: noise at random timesteps, the UNet's prediction, MSE (min-SNR weighted)."""
    pred, target, timesteps = predict(parts, unet, latents, hidden, pooled, time_ids, generator, request)
    return mse_loss(parts, pred, target, timesteps, request.min_snr_gamma)


def predict(parts: SdParts, unet, latents, hidden, pooled, time_ids, generator, request):
    """Noise at random timesteps (from `generator`) and the UNet's prediction: (prediction, target, timesteps)."""
    import torch

    scheduler = parts.noise_scheduler
    bsz, channels = latents.shape[:2]
    noise = torch.randn(latents.shape, generator=generator).to(latents.device, latents.dtype)
    if request.noise_offset:
        # https://www.crosslabs.org/blog/diffusion-with-offset-noise (as diffusers' example does it)
        noise += request.noise_offset * torch.randn((bsz, channels, 1, 1), generator=generator).to(noise)
    timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (bsz,), generator=generator)
    timesteps = timesteps.to(latents.device).long()
    noisy = scheduler.add_noise(latents, noise, timesteps)
    if scheduler.config.prediction_type == "v_prediction":
        target = scheduler.get_velocity(latents, noise, timesteps)
    else:
        target = noise
    added = {"text_embeds": pooled, "time_ids": time_ids} if parts.is_sdxl else None
    pred = unet(noisy, timesteps, hidden, added_cond_kwargs=added, return_dict=False)[0]
    return pred, target, timesteps


def mse_loss(parts: SdParts, pred, target, timesteps, min_snr_gamma):
    import torch
    import torch.nn.functional as F
    from diffusers.training_utils import compute_snr

    if min_snr_gamma is None:
        return F.mse_loss(pred.float(), target.float(), reduction="mean")
    # Section 3.4 of https://arxiv.org/abs/2303.09556, as diffusers' example weights it.
    scheduler = parts.noise_scheduler
    snr = compute_snr(scheduler, timesteps)
    weights = torch.stack([snr, min_snr_gamma * torch.ones_like(timesteps)], dim=1).min(dim=1)[0]
    weights = weights / (snr + 1) if scheduler.config.prediction_type == "v_prediction" else weights / snr
    loss = F.mse_loss(pred.float(), target.float(), reduction="none")
    return (loss.mean(dim=list(range(1, loss.ndim))) * weights).mean()


def prior_preservation_loss(parts: SdParts, unet, instance: tuple, prior: tuple, generator, request):
    """DreamBooth's loss, as diffusers' train_dreambooth.py computes it: instance and class images in one
    batch, the prediction split in two, the instance part's loss (min-SNR weighted when asked) plus
    `prior_loss_weight` x the class part's plain MSE. `instance` / `prior`: (latents, hidden, pooled,
    time_ids). An instance bucket of another shape than the square class images is predicted apart."""
    import torch
    import torch.nn.functional as F

    n = instance[0].shape[0]
    if instance[0].shape[1:] == prior[0].shape[1:]:
        joined = [None if a is None else torch.cat([a, b]) for a, b in zip(instance, prior)]
        pred, target, timesteps = predict(parts, unet, *joined, generator, request)
        pred, pred_prior = pred[:n], pred[n:]
        target, target_prior, timesteps = target[:n], target[n:], timesteps[:n]
    else:
        pred, target, timesteps = predict(parts, unet, *instance, generator, request)
        pred_prior, target_prior, _ = predict(parts, unet, *prior, generator, request)
    loss = mse_loss(parts, pred, target, timesteps, request.min_snr_gamma)
    return loss + request.prior_loss_weight * F.mse_loss(pred_prior.float(), target_prior.float(), reduction="mean")

"""Sample images during an SD training: the training's own components (LoRA active), fixed seeds."""
from __future__ import annotations

import contextlib


def sample_images(parts, request, accelerator, step: int, run, reporter) -> list[str]:
    import torch
    from diffusers.training_utils import offload_models

    if not request.sample_prompts or not accelerator.is_main_process:
        return []
    models = [m for m in (parts.vae, *parts.text_encoders)]
    paths = []
    was_training = parts.unet.training
    parts.unet.eval()
    try:
        # The VAE and cached text encoders wait on the CPU between samples; this brings them back for these.
        with offload_models(*models, device=accelerator.device), _autocast(accelerator):
            for i, prompt in enumerate(request.sample_prompts):
                generator = torch.Generator("cpu").manual_seed(request.sample_seed + i)
                image = parts.pipe(prompt=prompt, num_inference_steps=request.sample_steps,
                                   width=request.resolution, height=request.resolution,
                                   generator=generator).images[0]
                path = run.sample_path(step, i)
                image.save(path)
                paths.append(str(path))
                reporter.preview(path)
    finally:
        if was_training:
            parts.unet.train()
    reporter.log(f"step {step}: {len(paths)} sample image(s) in samples/")
    return paths


def _autocast(accelerator):
    return accelerator.autocast() if accelerator.mixed_precision != "no" else contextlib.nullcontext()

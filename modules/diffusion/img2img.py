"""One img2img batch: init images resized by A1111's resize modes, then the img2img pipeline.

Inpainting (a request with a mask) is img2img with a mask, as in A1111: see inpaint.py.
"""
from __future__ import annotations

from modules.diffusion import flow, hires, inpaint, sampling, seeds
from modules.diffusion.resize import resize_image
from modules.diffusion.sampling import Run


def init_images(run: Run, iteration: int) -> list:
    """The init image of each image in the batch (A1111 cycles through init_images)."""
    images = run.req.init_images
    return [images[i % len(images)].convert("RGB") for i in run.batch_indices(iteration)]


def batch(run: Run, iteration: int) -> list:
    req = run.req
    inits = init_images(run, iteration)
    if req.is_inpaint:
        return inpaint.batch(run, iteration, inits)
    strength = req.denoising_strength
    sized = [resize_image(req.resize_mode, im, req.width, req.height) for im in inits]
    if strength <= 0:  # nothing to denoise: the (resized) input is the answer, without a lossy VAE round trip
        return sized
    gens = seeds.generators(run.plan, run.batch_indices(iteration))
    image = sized
    if req.resize_mode == 3:  # latent upscale: encode at the picture's own size, resize the latents
        import torch.nn.functional as F

        pipe = run.ckpt.pipeline("img2img")
        f = pipe.vae_scale_factor
        own = [im.resize((max(f, im.width // f * f), max(f, im.height // f * f))) for im in inits]
        latents = sampling.encode(pipe, own, gens)
        image = F.interpolate(latents, size=(req.height // f, req.width // f), mode="bilinear")
        gens = seeds.generators(run.plan, run.batch_indices(iteration))
    out = sampling.call(
        run, run.ckpt.pipeline("img2img"), part=iteration, steps_hint=hires.steps_run(req.steps, strength, run.fix_steps),
        image=image, strength=strength, num_inference_steps=hires.img2img_steps(req.steps, strength, run.fix_steps),
        generator=gens, output_type="pil", noise_for=run.batch_indices(iteration), **flow.img2img_kwargs(run),
    )
    return out.images

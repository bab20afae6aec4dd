"""One txt2img batch: our own initial noise (seeds, variation seeds) → the pipeline → hires fix."""
from __future__ import annotations

from modules.diffusion import flow, hires, sampling, seeds
from modules.diffusion.sampling import Run


def batch(run: Run, iteration: int) -> list:
    """The images of batch `iteration` (PIL), finished early on skip/interrupt."""
    req = run.req
    pipe = run.ckpt.pipe
    indices = run.batch_indices(iteration)
    channels = pipe.vae.config.latent_channels
    factor = getattr(pipe, "vae_scale_factor", 8)
    shape = (channels, req.height // factor, req.width // factor)
    output_type = "latent" if req.enable_hr else "pil"
    if flow.is_flow(run.arch):
        noise, gens = seeds.make_noise(run.plan, indices, shape, pipe.transformer.dtype)
        out = sampling.call(
            run, pipe, part=iteration * run.passes, steps_hint=req.steps,
            latents=flow.initial_latents(pipe, run.arch, noise), generator=gens, num_inference_steps=req.steps,
            width=req.width, height=req.height, output_type=output_type, **flow.guidance(run))
        if req.enable_hr:
            out.images = flow.unpacked(pipe, run.arch, out.images, req.width, req.height)
    else:
        noise, gens = seeds.make_noise(run.plan, indices, shape, run.conditioning.initial["prompt_embeds"].dtype)
        out = sampling.call(
            run, pipe, part=iteration * run.passes, steps_hint=req.steps,
            latents=noise, generator=gens, num_inference_steps=req.steps, guidance_scale=req.cfg_scale,
            width=req.width, height=req.height, output_type=output_type,
        )
    if not req.enable_hr:
        return out.images
    if run.ctx.should_stop_item:  # interrupted or skipped in the first pass: keep it as it is
        return sampling.decode(pipe, out.images)
    return hires.second_pass(run, out.images, iteration)

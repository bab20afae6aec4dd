"""One run of a diffusers pipeline inside a job: scheduler, progress, preview, interrupt, skip.

Everything goes through the pipeline's own extension points: a fresh scheduler from the
checkpoint's config (restored afterwards), `callback_on_step_end` for progress and
previews, and the pipeline's `_interrupt` flag (diffusers' documented way to stop a run
from that callback: the remaining steps are passed over and the latents decoded).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

from modules.diffusion import flow, preview, variation
from modules.diffusion.seeds import SeedPlan


@dataclass
class Run:
    """Everything one generation job needs, built once and passed to each step of it."""

    samplers: Any  # the SamplerRegistry (built-in and extension samplers)
    ctx: Any  # JobContext
    req: Any  # Txt2ImgRequest | Img2ImgRequest
    ckpt: Any  # LoadedCheckpoint
    plan: SeedPlan
    sampler: str  # the resolved A1111 sampler name ("DPM++ 2M")
    schedule: str  # the resolved schedule type ("Karras")
    clip_skip: int
    passes: int = 1  # 2 with hires fix
    preview_every: int = 0
    texts: Any = None  # styles.StyledPrompts: the prompts with the request's styles applied
    fix_steps: bool = False  # A1111's img2img_fix_steps: img2img runs exactly the steps asked
    conditioning: Any = None  # conditioning.StepConditioning of the batch being made
    face_restorer: str = ""  # the face restorer of restore_faces (the setting or override_settings), else ""

    @property
    def arch(self) -> str:
        return self.ckpt.arch

    def batch_indices(self, iteration: int) -> range:
        size = self.req.batch_size
        return range(iteration * size, (iteration + 1) * size)

    def scheduler_for(self, pipe, seed: int, sampler: tuple[str, str] | None = None):
        name, schedule = sampler or (self.sampler, self.schedule)
        if flow.is_flow(self.arch):
            return flow.make_scheduler(self.arch, name, schedule, pipe.scheduler.config)
        return self.samplers.make_scheduler(name, pipe.scheduler.config, schedule, seed=seed)


@contextlib.contextmanager
def using_scheduler(pipe, scheduler):
    """Swap the pipeline's scheduler for one run; the checkpoint's own config stays the base."""
    original = pipe.scheduler
    pipe.scheduler = scheduler
    try:
        yield pipe
    finally:
        pipe.scheduler = original


def call(run: Run, pipe, part: int, steps_hint: int, sampler: tuple[str, str] | None = None,
         conditioning=None, noise_for: range | None = None, **kwargs):
    """Call `pipe` with progress every step, a preview every N steps, and stop on interrupt/skip.

    `sampler` (name, schedule) and `conditioning` (a StepConditioning) override the run's (the hires
    pass may differ). A prompt that changes during sampling is swapped in here, step by step.
    `noise_for`: the images of an img2img / inpaint batch, whose added noise takes the variation seeds.
    """
    ctx = run.ctx
    cond = conditioning or run.conditioning
    swap = cond.swapper()
    text = f"batch {part // run.passes + 1}/{run.req.n_iter}" + (", hires pass" if part % run.passes else "")

    def on_step(p, i, t, tensors):
        total = getattr(p, "_num_timesteps", None) or steps_hint
        ctx.progress(i + 1, total, part=part, text=text)
        if preview.wanted(i + 1, run.preview_every) and "latents" in tensors:
            image = preview.latents_to_image(tensors["latents"], run.arch)
            if image is not None:
                ctx.preview(image)
        if ctx.should_stop_item:
            p._interrupt = True  # the loop passes over the remaining steps; latents are still decoded
        swap(p, i + 1, tensors)  # prompt editing: the next step's conditioning
        return tensors

    seed = run.plan.seeds[run.batch_indices(part // run.passes)[0]]
    pipe.set_progress_bar_config(disable=True)  # img2img/inpaint pipes made by from_pipe start with tqdm on
    scheduler = run.scheduler_for(pipe, seed, sampler)
    if noise_for is not None and variation.wanted(run.plan):
        scheduler = variation.varied(scheduler, run.plan, noise_for)
    with using_scheduler(pipe, scheduler):
        return pipe(**cond.initial, **kwargs, callback_on_step_end=on_step,
                    callback_on_step_end_tensor_inputs=["latents", *cond.tensor_inputs])


@contextlib.contextmanager
def _vae_precision(vae):
    """SDXL's VAE overflows in fp16 (config.force_upcast): run it in fp32 meanwhile, as the pipelines do."""
    import torch

    upcast = vae.dtype == torch.float16 and getattr(vae.config, "force_upcast", False)
    if upcast:
        vae.to(torch.float32)
    try:
        yield vae
    finally:
        if upcast:
            vae.to(torch.float16)


def decode(pipe, latents) -> list:
    """Latents (as a pipeline returns them with output_type="latent") → PIL images."""
    import torch

    with torch.no_grad(), _vae_precision(pipe.vae) as vae:
        scaled = latents.to(device=vae.device, dtype=vae.dtype) / vae.config.scaling_factor
        if getattr(vae.config, "shift_factor", None):
            scaled = scaled + vae.config.shift_factor
        image = vae.decode(scaled, return_dict=False)[0]
    return pipe.image_processor.postprocess(image, output_type="pil")


def encode(pipe, images: list, generators: list):
    """PIL images → latents scaled as the pipelines use them (one draw from each generator)."""
    import torch

    with torch.no_grad(), _vae_precision(pipe.vae) as vae:
        pixels = pipe.image_processor.preprocess(images).to(device=vae.device, dtype=vae.dtype)
        out = [vae.encode(pixels[i:i + 1]).latent_dist.sample(generator=g) for i, g in enumerate(generators)]
    latents = torch.cat(out)
    if getattr(pipe.vae.config, "shift_factor", None):
        latents = latents - pipe.vae.config.shift_factor
    dtype = pipe.unet.dtype if getattr(pipe, "unet", None) is not None else latents.dtype
    return (latents * pipe.vae.config.scaling_factor).to(dtype)

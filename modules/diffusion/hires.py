"""Hires fix: upscale the first pass and denoise it again with the img2img pipeline.

The img2img pipeline comes from `LoadedCheckpoint.pipeline("img2img")` (diffusers'
`from_pipe`: the same weights, no copy). Latent upscalers resize the latents directly
and hand them to img2img as latents; pixel upscalers (Lanczos, Nearest, and upscaler models such
as ESRGAN from the model manager, run tile-wise) decode, resize, and re-encode.
"""
from __future__ import annotations

from modules.diffusion import conditioning, flow, sampling, seeds
from modules.diffusion.sampling import Run
from modules.errors import InvalidRequest
from modules.models import upscalers

# A1111's latent upscale modes: (torch interpolate mode, antialias)
LATENT_MODES = {
    "Latent": ("bilinear", False), "Latent (antialiased)": ("bilinear", True),
    "Latent (bicubic)": ("bicubic", False), "Latent (bicubic antialiased)": ("bicubic", True),
    "Latent (nearest)": ("nearest", False), "Latent (nearest-exact)": ("nearest-exact", False),
}
PIXEL_MODES = {"Lanczos": "LANCZOS", "Nearest": "NEAREST", "None": "LANCZOS"}
HR_UPSCALERS = tuple(LATENT_MODES) + tuple(PIXEL_MODES)  # and the upscaler models on disk (choices())
DEFAULT_DENOISING = 0.7  # A1111's default for the hires pass
MAX_TIMESTEPS = 1000  # SD's num_train_timesteps: diffusers refuses more inference steps


def choices(registry) -> list[str]:
    """Hires fix's upscalers: the latent modes, Lanczos / Nearest / None, then the upscaler models on disk."""
    return list(HR_UPSCALERS) + [n for n in upscalers.names(registry) if n not in PIXEL_MODES]


def check(samplers, req, registry) -> None:
    if not req.enable_hr:
        return
    if req.hr_upscaler not in HR_UPSCALERS:
        try:
            upscalers.find(registry, req.hr_upscaler, "hr_upscaler")
        except InvalidRequest:
            raise InvalidRequest(f"unknown hires upscaler {req.hr_upscaler!r}; choose one of: "
                                 f"{', '.join(choices(registry))}", "hr_upscaler") from None
    try:
        sampler(samplers, req)
    except InvalidRequest as exc:  # name the hires field, not the first pass's
        field = {"sampler_name": "hr_sampler_name", "scheduler": "hr_scheduler"}.get(exc.field, exc.field)
        raise InvalidRequest(exc.message, field) from None


def sampler(samplers, req) -> tuple[str, str]:
    """The hires pass's (sampler, schedule type): A1111's hr_sampler_name / hr_scheduler, empty = the first pass's."""
    same = req.hr_sampler_name in ("", "Use same sampler")
    name = req.sampler_name if same else req.hr_sampler_name
    schedule = req.scheduler if req.hr_scheduler in ("", "Use same scheduler") else req.hr_scheduler
    spec, label = samplers.resolve(name, schedule)
    return spec.name, label


def prompts_of(run: Run) -> tuple[str, str]:
    """The hires pass's prompts, styles applied (an empty hr_prompt is the prompt)."""
    return run.texts.hr_prompt, run.texts.hr_negative_prompt


def denoising(req) -> float:
    return DEFAULT_DENOISING if req.denoising_strength is None else req.denoising_strength


def steps(req) -> int:
    return req.hr_second_pass_steps or req.steps


def img2img_steps(steps: int, strength: float, fix: bool = False) -> int:
    """The num_inference_steps to give diffusers' img2img, which runs about steps x strength of them; at least
    one. `fix` (A1111's img2img_fix_steps): enough that exactly `steps` run (at most the 1000 the model knows)."""
    import math

    if strength <= 0:
        return steps
    if not fix:
        return max(steps, math.ceil(1 / strength))
    n = steps
    while n < MAX_TIMESTEPS and min(int(n * strength), n) < steps:  # diffusers' get_timesteps runs that many
        n += 1
    return n


def steps_run(steps: int, strength: float, fix: bool = False) -> int:
    """How many steps an img2img pass runs (the progress total)."""
    return steps if fix else int(steps * strength)


def second_pass(run: Run, latents, iteration: int) -> list:
    """Upscale a batch of first-pass latents and denoise again; returns PIL images."""
    import torch.nn.functional as F
    from PIL import Image

    req = run.req
    width, height = req.hires_size()
    pipe = run.ckpt.pipe
    strength = denoising(req)
    if req.hr_upscaler in LATENT_MODES:
        factor = pipe.vae_scale_factor
        mode, antialias = LATENT_MODES[req.hr_upscaler]
        image = F.interpolate(latents, size=(height // factor, width // factor), mode=mode, antialias=antialias)
    elif req.hr_upscaler in PIXEL_MODES:
        resample = getattr(Image.Resampling, PIXEL_MODES[req.hr_upscaler])
        image = [im.resize((width, height), resample) for im in sampling.decode(pipe, latents)]
    else:
        image = _model_upscale(run, sampling.decode(pipe, latents), width, height)
    if strength <= 0:
        return sampling.decode(pipe, image) if not isinstance(image, list) else image
    gens = seeds.generators(run.plan, run.batch_indices(iteration))  # A1111 re-seeds the hires noise
    n = steps(req)
    positive, negative = prompts_of(run)
    cond = None  # the first pass's, unless the hires pass has prompts of its own or counts its own edits
    if (positive, negative) != (run.texts.prompt, run.texts.negative_prompt) or conditioning.is_scheduled([positive, negative]):
        size = len(run.batch_indices(iteration))
        cond = conditioning.for_pass(run, pipe, [positive] * size, [negative] * size, n,
                                     sampler=sampler(run.samplers, req), hires=True)
    out = sampling.call(
        run, run.ckpt.pipeline("img2img"), part=iteration * run.passes + 1,
        steps_hint=steps_run(n, strength, run.fix_steps), sampler=sampler(run.samplers, req), conditioning=cond,
        image=image, strength=strength, num_inference_steps=img2img_steps(n, strength, run.fix_steps),
        generator=gens, output_type="pil", **flow.img2img_kwargs(run, (width, height)),
    )
    return out.images


def _model_upscale(run: Run, images: list, width: int, height: int) -> list:
    """The first pass's images through an upscaler model (ESRGAN, …), tile-wise, to the hires size."""
    services = run.ctx.services
    entry = upscalers.find(services.models.registry, run.req.hr_upscaler, "hr_upscaler")
    settings = services.settings.get()
    with services.models.use(entry.kind, entry.name) as model:
        return [model.resize(im, width, height, settings.ESRGAN_tile, settings.ESRGAN_tile_overlap) for im in images]

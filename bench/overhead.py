"""Figure 1: Atelier's txt2img through the job engine vs plain diffusers on the same components.

Both sides share the UNet, VAE and text encoder already in memory, the sampler class, the
seed and the step count; the only difference is everything Atelier adds around the
pipeline call (request validation, the job queue and worker thread, progress events,
previews at the default setting, infotext). Images are not saved on the Atelier side
(save_images=False, as A1111's API defaults), because the plain call saves nothing either.
"""
from __future__ import annotations

from pathlib import Path

from bench.common import Figure, ratios, side_by_side

TARGET = "<= 1.03x"
# Sampler names the bench uses, with the diffusers class the plain side builds itself.
SAMPLER = ("Euler a", "EulerAncestralDiscreteScheduler")


def measure(key: str, title: str, checkpoint: Path, device: str, width: int, steps: int, reps: int,
            log=print) -> Figure:
    import numpy as np
    import torch
    import diffusers

    from bench.studio_setup import generate, make_data_dir, open_studio
    from modules.diffusion.params import Txt2ImgRequest

    studio = open_studio(make_data_dir(checkpoint, name="overhead"), device)
    try:
        with studio.models.checkpoint(checkpoint.name) as ckpt:
            base = ckpt.pipe
        scheduler_config = dict(base.scheduler.config)
        plain = diffusers.StableDiffusionPipeline(
            vae=base.vae, text_encoder=base.text_encoder, tokenizer=base.tokenizer, unet=base.unet,
            scheduler=getattr(diffusers, SAMPLER[1]).from_config(scheduler_config),
            safety_checker=None, feature_extractor=None, requires_safety_checker=False,
        )
        plain.set_progress_bar_config(disable=True)
        seed, prompt = 1234, "a lighthouse on a cliff at dusk, oil painting"
        images = {}

        def atelier(n: int = steps):
            req = Txt2ImgRequest(prompt=prompt, steps=n, width=width, height=width, seed=seed,
                                 sampler_name=SAMPLER[0], cfg_scale=7.0, save_images=False)
            images["atelier"] = generate(studio, req)

        def diffusers_call(n: int = steps):
            with torch.inference_mode():
                out = plain(prompt=prompt, negative_prompt="", num_inference_steps=n, guidance_scale=7.0,
                            width=width, height=width, generator=torch.Generator("cpu").manual_seed(seed))
            images["diffusers"] = out.images[0]

        log(f"  {title}: {reps} repetitions of {steps} steps at {width}x{width} …")
        atelier(1), diffusers_call(1)  # warm-up (one step is enough to allocate everything)
        ta, tb = side_by_side(atelier, diffusers_call, reps, device, warmup=0)
        same = bool(np.array_equal(np.asarray(images["atelier"]), np.asarray(images["diffusers"])))
        return Figure.from_samples(
            key, title, ratios(ta, tb), target=TARGET, ok=lambda r: r <= 1.03,
            atelier_s=_spread(ta), diffusers_s=_spread(tb), same_image=same, steps=steps, size=f"{width}x{width}",
            sampler=SAMPLER[0],
        )
    finally:
        studio.shutdown()


def _spread(times: list[float]) -> dict:
    import statistics

    return {"min": round(min(times), 4), "median": round(statistics.median(times), 4), "max": round(max(times), 4)}


def run(device: str, quick: bool, log=print) -> list[Figure]:
    from bench.sd15 import ensure_sd15_folder
    from bench.studio_setup import demo_folder

    figures = []
    cases = [
        ("overhead_demo", "txt2img overhead vs diffusers, demo model", lambda: demo_folder(), 64,
         10, 12 if quick else 40),
        ("overhead_sd15", "txt2img overhead vs diffusers, SD1.5-size UNet", lambda: ensure_sd15_folder(log), 256,
         2 if quick else 10, 3 if quick else 6),
    ]
    for key, title, folder, width, steps, reps in cases:
        try:
            figures.append(measure(key, title, folder(), device, width, steps, reps, log))
        except Exception as exc:  # a missing part is reported, never replaced by a number
            figures.append(Figure.missing(key, title, f"{type(exc).__name__}: {exc}", TARGET))
    return figures

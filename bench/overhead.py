"""Figure 1: Atelier's txt2img through the job engine vs plain diffusers on the same components.

Both sides share the UNet, VAE and text encoder already in memory, the sampler class, the
seed and the step count; the only difference is everything Atelier adds around the
pipeline call (request validation, the job queue and worker thread, progress events,
previews at the default setting, infotext). Images are not saved on the Atelier side
(save_images=False, as A1111's API defaults), because the plain call saves nothing either.
Each figure also records the candidates for the overhead the issue lists: torch's threads in this
thread and in the job's worker thread, the ratio with Atelier first vs second in a pair, and a
second figure with the live previews off (the preview decode), and — at SD1.5 size — a third with the
plain call on a worker thread as well (a job's thread vs this one).
"""
from __future__ import annotations

import contextlib
from pathlib import Path

from bench.common import Figure, on_worker_thread, ratios, side_by_side

TARGET = "<= 1.03x"
# Sampler names the bench uses, with the diffusers class the plain side builds itself.
SAMPLER = ("Euler a", "EulerAncestralDiscreteScheduler")


def measure(key: str, title: str, checkpoint: Path, device: str, width: int, steps: int, reps: int,
            log=print, extra_variants: bool = False) -> list[Figure]:
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

        # A job runs on the engine's worker thread, the plain call on this one: the same plain call on a
        # persistent thread of its own tells the thread's share (allocator arena, OpenMP) from Atelier's own work.
        threads = contextlib.ExitStack()
        diffusers_in_thread = threads.enter_context(on_worker_thread(diffusers_call))
        # The candidates for the overhead (issue 13): the job thread's torch threads vs this thread's, the order
        # of A and B, and the preview decode (a figure with previews off).
        job_threads: list[int] = []
        studio.hooks.add("after_generate", lambda result: job_threads.append(torch.get_num_threads()), owner="bench")
        out = []
        variants = [("", None, diffusers_call, ""), ("_previews_off", 0, diffusers_call, ", previews off")]
        if extra_variants:
            variants.append(("_vs_plain_in_a_thread", 0, diffusers_in_thread,
                             ", previews off, plain diffusers on a worker thread too"))
        for variant, preview_every, plain_side, label in variants:
            if preview_every is not None:
                studio.settings.update({"show_progress_every_n_steps": preview_every}, save=False)
            log(f"  {title}{label}: {reps} repetitions of {steps} steps at {width}x{width} …")
            atelier(1), plain_side(1)  # warm-up (one step is enough to allocate everything)
            ta, tb = side_by_side(atelier, plain_side, reps, device, warmup=0)
            same = bool(np.array_equal(np.asarray(images["atelier"]), np.asarray(images["diffusers"])))
            r = ratios(ta, tb)
            out.append(Figure.from_samples(
                key + variant, title + label, r, target=TARGET,
                ok=lambda x: x <= 1.03, atelier_s=_spread(ta), diffusers_s=_spread(tb), same_image=same, steps=steps,
                size=f"{width}x{width}", sampler=SAMPLER[0], threads_bench=torch.get_num_threads(),
                threads_job=sorted(set(job_threads)),
                # side_by_side runs A first in even repetitions, B first in odd ones
                ratio_atelier_first=_median(r[0::2]), ratio_atelier_second=_median(r[1::2]) if len(r) > 1 else None,
                preview_every=studio.settings.get().show_progress_every_n_steps,
            ))
        if extra_variants:
            # The thread's own share, without Atelier: the same plain call on a worker thread vs on this one.
            log(f"  plain diffusers on a worker thread vs this thread: {reps} repetitions …")
            tt, tm = side_by_side(diffusers_in_thread, diffusers_call, reps, device, warmup=0)
            out.append(Figure.from_samples(
                key + "_thread_share", "plain diffusers on a worker thread vs on the main thread, " +
                title.split(", ", 1)[1], ratios(tt, tm), target="— (reported)", worker_thread_s=_spread(tt),
                main_thread_s=_spread(tm), steps=steps, size=f"{width}x{width}"))
        threads.close()
        return out
    finally:
        studio.shutdown()


def _median(xs: list[float]) -> float:
    import statistics

    return round(statistics.median(xs), 4)


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
         2 if quick else 10, 4 if quick else 6),
    ]
    for key, title, folder, width, steps, reps in cases:
        try:
            figures += measure(key, title, folder(), device, width, steps, reps, log, extra_variants=key == "overhead_sd15")
        except Exception as exc:  # a missing part is reported, never replaced by a number
            figures.append(Figure.missing(key, title, f"{type(exc).__name__}: {exc}", TARGET))
    return figures

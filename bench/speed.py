"""Figure 4: the speed settings, each against plain diffusers on the same weights, in one run.

Atelier runs txt2img through the job engine with the setting on; plain diffusers runs the same
files loaded on their own (so a setting that changes the weights' layout never reaches the
plain side), with the same sampler, seed, steps and size, alternating (ABBA). Each row is the
speed ratio (plain time / Atelier time: above 1 is faster than diffusers) with its samples and
min–max, and the max abs pixel difference from the plain image with the tolerance it must stay
within. The issue's target — >= 1.2x with every safe setting on — is judged on the whole spread.
compile_unet (torch.compile, default mode) is measured last, as the others; its first job's compile seconds
and a second process's (from the disk cache) are rows of their own (speed_compile.py).
"""
from __future__ import annotations

import numpy as np

from bench import speed_compile
from bench.common import Figure, side_by_side
from bench.overhead import SAMPLER

TARGET_ALL = ">= 1.2x plain diffusers it/s"
# (key, title, settings, pixel tolerance in 0–255 steps, target or None)
CASES = [
    ("speed_default", "defaults (sdpa, threads = physical cores) vs plain diffusers", {}, 0, None),
    ("speed_channels_last", "channels_last UNet + VAE vs plain diffusers", {"channels_last": True}, 2, None),
    ("speed_attention_classic", "classic attention (not SDPA) vs plain diffusers", {"attention": "classic"}, 2, None),
    ("speed_cpu_bf16", "bf16 autocast on the CPU vs plain diffusers (fp32)", {"cpu_bf16": True}, 24, None),
    ("speed_all_on", "every setting this CPU offers on (bf16 autocast, sdpa, physical-core threads) vs plain diffusers",
     {"cpu_bf16": True}, 24, TARGET_ALL),
    ("speed_compile_unet", "torch.compile of the UNet (compile_unet default) vs plain diffusers",
     {"compile_unet": "default"}, 2, None),
]
OFF = {"channels_last": False, "attention": "sdpa", "cpu_bf16": False, "compile_unet": "off"}
# channels_last is left out of the last row: in eager mode it was slower than the default format on this kind of CPU
# (its own row says by how much); without native bf16 that row is not measured. compile_unet is left out of it too:
# it is measured on its own, with its compile time apart.


def run(device: str, quick: bool, log=print) -> list[Figure]:
    from modules import cpu_features

    figures: list[Figure] = []
    try:
        figures += _measure(device, quick, log)
    except Exception as exc:  # a missing part is reported, never replaced by a number
        why = f"{type(exc).__name__}: {exc}"[:400]
        rows = [(k, t, target or "") for k, t, _, _, target in CASES] + speed_compile.ROWS
        figures += [Figure.missing(k, t, why, target) for k, t, target in rows if not any(f.key == k for f in figures)]
    if device == "cpu":
        for f in figures:
            if f.key == "speed_cpu_bf16" and f.not_measured is None:
                f.detail["cpu"] = cpu_features.bf16_note()
    return figures


def _measure(device: str, quick: bool, log) -> list[Figure]:
    import time

    import torch
    import diffusers

    from bench.sd15 import ensure_sd15_folder
    from bench.studio_setup import make_data_dir, open_studio
    from modules import cpu_features
    from modules.jobs import JobState

    folder = ensure_sd15_folder(log)
    side, steps, reps = (256, 2, 2) if quick else (256, 8, 4)
    data_dir = make_data_dir(folder, name="speed")
    studio = open_studio(data_dir, device)
    out: list[Figure] = []
    try:
        plain = diffusers.StableDiffusionPipeline.from_pretrained(
            str(folder), torch_dtype=torch.float32 if device == "cpu" else torch.float16, safety_checker=None,
            requires_safety_checker=False, local_files_only=True).to(device)
        plain.scheduler = getattr(diffusers, SAMPLER[1]).from_config(plain.scheduler.config)
        plain.set_progress_bar_config(disable=True)
        prompt, seed, images = speed_compile.PROMPT, speed_compile.SEED, {}

        def atelier(n: int = steps):
            job = studio.jobs.run("txt2img", speed_compile.request(side, n, SAMPLER[0]))
            if job.state != JobState.DONE:
                raise RuntimeError(f"the Atelier job ended {job.state.value}: {job.error}")
            images["atelier"] = np.asarray(job.result.images[0].image).astype(np.int16)

        def plain_call(n: int = steps):
            with torch.inference_mode():
                result = plain(prompt=prompt, negative_prompt="", num_inference_steps=n, guidance_scale=7.0,
                               width=side, height=side, generator=torch.Generator("cpu").manual_seed(seed))
            images["plain"] = np.asarray(result.images[0]).astype(np.int16)

        plain_call(1)
        for key, title, settings, tolerance, target in CASES:
            if "cpu_bf16" in settings and (device != "cpu" or not cpu_features.bf16_flags()):
                out.append(Figure.missing(key, title, "bf16 autocast is " + cpu_features.bf16_note()
                                          if device == "cpu" else "a CPU setting", target or ""))
                continue
            studio.settings.update({**OFF, **settings}, save=False)
            cold = speed_compile.cache_is_cold(studio.registry.paths.compile_cache)
            t0 = time.perf_counter()
            atelier(1)  # applies the setting (memory format, processors, the compile) before the timing
            if "compile_unet" in settings:
                out.append(speed_compile.first_row(studio.models.active, time.perf_counter() - t0, cold))
                log(f"  {title}: first job {time.perf_counter() - t0:.1f} s (the compile)")
            log(f"  {title}: {reps} x {steps} steps at {side}x{side} …")
            ta, tb = side_by_side(atelier, plain_call, reps, device, warmup=0)
            diff = int(np.abs(images["atelier"] - images["plain"]).max())
            speedup = [b / a for a, b in zip(ta, tb)]
            ok = (lambda r: r >= 1.2) if target else None
            fig = Figure.from_samples(key, title, speedup, target=target or "— (reported)", ok=ok,
                                      atelier_s=_spread(ta), diffusers_s=_spread(tb), max_pixel_diff=diff,
                                      tolerance=tolerance, within_tolerance=diff <= tolerance, steps=steps,
                                      size=f"{side}x{side}", settings=settings, threads=torch.get_num_threads())
            if diff > tolerance:
                fig.met = False
                fig.detail["problem"] = f"the image is {diff} pixel steps from plain diffusers' (tolerance {tolerance})"
            out.append(fig)
    finally:
        studio.settings.update(OFF, save=False)
        studio.shutdown()
    del plain
    out.append(speed_compile.cached_row(data_dir, device, side, SAMPLER[0], log))
    return out


def _spread(xs: list[float]) -> dict:
    import statistics

    return {"min": round(min(xs), 4), "median": round(statistics.median(xs), 4), "max": round(max(xs), 4)}

"""Flux.1 and SD3: Atelier's txt2img through the job engine vs plain diffusers' pipeline on the same components.

Both sides share the transformer, VAE and text encoders in memory, the flow-matching Euler scheduler (from the
checkpoint's config), the seed, steps and guidance; the only difference is what Atelier adds around the call.
The models are random-weight demo layouts: the real ones (Flux 12 B, SD3 Medium 2 B parameters) do not fit
this machine's RAM beside the bench, so a wider Flux (width 512, 2 + 4 blocks) stands in for the size case.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from bench.common import Figure, on_worker_thread, ratios, side_by_side

TARGET = "<= 1.03x"
PROMPT = "a lighthouse on a cliff at dusk, oil painting"


def _folder(name: str, arch: str, **sizes) -> Path:
    """A demo Flux / SD3 folder built once into the bench cache (the studio's own factory)."""
    from bench.studio_setup import cache_root
    from modules.models.demo_flow import save_demo_flow

    folder = cache_root() / name
    if not (folder / "model_index.json").exists():
        shutil.rmtree(folder, ignore_errors=True)
        save_demo_flow(folder, arch, seed=0, **sizes)
    return folder


def measure(key: str, title: str, folder: Path, device: str, width: int, steps: int, reps: int) -> list[Figure]:
    import numpy as np
    import torch

    from bench.studio_setup import generate, make_data_dir, open_studio
    from modules.diffusion.params import Txt2ImgRequest

    studio = open_studio(make_data_dir(folder, name="flow"), device)
    try:
        with studio.models.checkpoint(folder.name) as ckpt:
            base, arch = ckpt.pipe, ckpt.arch
        plain = type(base)(**base.components)  # the same modules, diffusers' own __call__
        plain.set_progress_bar_config(disable=True)
        guidance = {"guidance_scale": 3.5} if arch == "flux" else {"guidance_scale": 4.0, "negative_prompt": ""}
        cfg = 1.0 if arch == "flux" else 4.0
        seed, images = 1234, {}

        def atelier(n: int = steps):
            req = Txt2ImgRequest(prompt=PROMPT, steps=n, width=width, height=width, seed=seed, sampler_name="Euler",
                                 cfg_scale=cfg, save_images=False)
            images["atelier"] = generate(studio, req)

        def diffusers_call(n: int = steps):
            with torch.inference_mode():
                out = plain(prompt=PROMPT, num_inference_steps=n, width=width, height=width,
                            generator=torch.Generator("cpu").manual_seed(seed), **guidance)
            images["diffusers"] = out.images[0]

        params = sum(p.numel() for p in base.transformer.parameters())
        figures = []
        # The plain call on this thread, then on a worker thread of its own as a job runs (the thread's share).
        with on_worker_thread(diffusers_call) as diffusers_in_thread:
            for variant, plain_side, label in (("", diffusers_call, ""), (
                    "_vs_plain_in_a_thread", diffusers_in_thread, ", plain diffusers on a worker thread too")):
                atelier(1), plain_side(1)  # warm-up
                ta, tb = side_by_side(atelier, plain_side, reps, device, warmup=0)
                same = bool(np.array_equal(np.asarray(images["atelier"]), np.asarray(images["diffusers"])))
                figures.append(Figure.from_samples(
                    key + variant, title + label, ratios(ta, tb), target=TARGET, ok=lambda r: r <= 1.03,
                    same_image=same, steps=steps, size=f"{width}x{width}", transformer_params=params,
                    atelier_median_s=round(sorted(ta)[len(ta) // 2], 4)))
        return figures
    finally:
        studio.shutdown()


def run(device: str, quick: bool, log=print) -> list[Figure]:
    cases = [
        ("flow_flux_demo", "txt2img overhead vs diffusers, Flux demo", lambda: _folder("atelier-demo-flux", "flux"),
         64, 4, 8 if quick else 30),
        ("flow_sd3_demo", "txt2img overhead vs diffusers, SD3 demo", lambda: _folder("atelier-demo-sd3", "sd3"),
         64, 4, 8 if quick else 30),
        ("flow_flux_wide", "txt2img overhead vs diffusers, Flux 512 wide (2+4 blocks)",
         lambda: _folder("atelier-bench-flux-512", "flux", width=512, head_dim=64, blocks=(2, 4)),
         256, 2 if quick else 6, 3 if quick else 6),
    ]
    figures = []
    for key, title, folder, width, steps, reps in cases:
        log(f"  {title}: {reps} repetitions of {steps} steps at {width}x{width} …")
        try:
            figures += measure(key, title, folder(), device, width, steps, reps)
        except Exception as exc:  # a missing part is reported, never replaced by a number
            figures.append(Figure.missing(key, title, f"{type(exc).__name__}: {exc}", TARGET))
    return figures

"""Variation seeds for img2img and inpaint: the noise added to the picture is A1111's blend of the seed's
noise and the variation seed's (spherical interpolation by subseed_strength), as txt2img's first noise is.

The img2img and inpaint pipelines draw that noise themselves and hand it to their scheduler's
`add_noise`; the scheduler is ours to choose (a fresh one per run), so a subclass of the run's
scheduler class blends in the variation seed's noise there — the same noise for the start and for
inpaint's blending of the kept area each step. At full strength inpaint starts from the noise
itself, so the blended noise is passed as `latents` instead.
"""
from __future__ import annotations

from modules.diffusion.seeds import SeedPlan, slerp


def blend(noise, plan: SeedPlan, indices):
    """`noise` (one row per image `indices`, the seeds' draws) blended with the variation seeds' noise."""
    import torch

    rows = []
    for row, i in zip(noise, indices):
        sub = torch.randn((1, *row.shape), generator=torch.Generator("cpu").manual_seed(plan.subseeds[i]),
                          dtype=row.dtype).to(row.device)
        strength = plan.subseed_strength
        rows.append(sub if strength >= 1 else slerp(strength, row[None], sub))
    return torch.cat(rows)


def varied(scheduler, plan: SeedPlan, indices):
    """A scheduler like `scheduler` (same class and config) whose add_noise blends in the variation noise."""
    base = type(scheduler)

    class Varied(base):  # type: ignore[misc, valid-type]
        def add_noise(self, original_samples, noise, timesteps):
            return super().add_noise(original_samples, blend(noise, plan, indices), timesteps)

        def scale_noise(self, sample, timestep, noise=None):  # flow matching's add_noise (Flux, SD3)
            return super().scale_noise(sample, timestep, blend(noise, plan, indices))

    Varied.__name__ = Varied.__qualname__ = f"Varied{base.__name__}"
    return Varied.from_config(scheduler.config)


def wanted(plan: SeedPlan) -> bool:
    return plan.subseed_strength > 0

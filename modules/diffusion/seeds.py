"""Seeds and initial noise, made on the CPU so a seed gives the same image on every device.

A1111 semantics: seed -1 is random; image i of a job gets seed+i (and subseed+i); a
variation seed blends the two noises by spherical interpolation (slerp) with
subseed_strength — 0 is the seed's noise, 1 the subseed's.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

MAX_SEED = 2**32 - 1


def resolve(seed: int) -> int:
    return random.randrange(MAX_SEED) if seed is None or seed == -1 else int(seed)


@dataclass
class SeedPlan:
    seeds: list[int]
    subseeds: list[int]
    subseed_strength: float

    @classmethod
    def for_request(cls, seed: int, subseed: int, strength: float, count: int) -> "SeedPlan":
        first = resolve(seed)
        first_sub = resolve(subseed) if strength > 0 else (subseed if subseed != -1 else 0)
        seeds = [(first + i) % (MAX_SEED + 1) for i in range(count)]
        subs = [(first_sub + i) % (MAX_SEED + 1) for i in range(count)] if strength > 0 else [first_sub] * count
        return cls(seeds, subs, strength)


def slerp(t: float, low, high):
    """Spherical interpolation per batch row (A1111's formula); falls back to lerp when nearly parallel."""
    import torch

    flat_low, flat_high = low.reshape(low.shape[0], -1), high.reshape(high.shape[0], -1)
    dot = (flat_low / flat_low.norm(dim=1, keepdim=True) * flat_high / flat_high.norm(dim=1, keepdim=True)).sum(1)
    if dot.mean() > 0.9995:
        return low * (1 - t) + high * t
    omega = torch.acos(dot)
    so = torch.sin(omega)
    a = (torch.sin((1.0 - t) * omega) / so).reshape(-1, *([1] * (low.dim() - 1)))
    b = (torch.sin(t * omega) / so).reshape(-1, *([1] * (low.dim() - 1)))
    return a * low + b * high


def make_noise(plan: SeedPlan, indices: range, shape: tuple[int, ...], dtype):
    """Initial noise for the images `indices` of the plan, and their CPU generators.

    The generators are returned after drawing the noise, so the pipeline's own later draws
    (ancestral samplers, img2img noise) continue the same stream as plain diffusers would.
    """
    import torch

    noises, generators = [], []
    for i in indices:
        gen = torch.Generator("cpu").manual_seed(plan.seeds[i])
        noise = torch.randn((1, *shape), generator=gen, dtype=dtype)
        if plan.subseed_strength > 0:
            sub = torch.randn((1, *shape), generator=torch.Generator("cpu").manual_seed(plan.subseeds[i]), dtype=dtype)
            noise = sub if plan.subseed_strength >= 1 else slerp(plan.subseed_strength, noise, sub)
        noises.append(noise)
        generators.append(gen)
    return torch.cat(noises), generators


def generators(plan: SeedPlan, indices: range) -> list:
    import torch

    return [torch.Generator("cpu").manual_seed(plan.seeds[i]) for i in indices]

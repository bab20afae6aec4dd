"""Aspect-ratio bucketing that never upscales (kohya's `bucket_no_upscale`): each image gets the
largest size, in steps of 64 px, that keeps its aspect ratio, fits its own pixels and holds at
most resolution² pixels. Images of the same bucket size are batched together. No torch here."""
from __future__ import annotations

import math
from collections import Counter

STEP = 64  # the VAE's 8x and the UNet's 8x downsampling: sides that are multiples of 64 fit every SD model


def bucket_for(width: int, height: int, resolution: int, bucketing: bool = True, step: int = STEP) -> tuple[int, int]:
    """(bucket width, bucket height) for one image."""
    if not bucketing:
        return resolution, resolution
    scale = min(1.0, math.sqrt(resolution * resolution / (width * height)))
    bw = max(step, int(width * scale) // step * step)
    bh = max(step, int(height * scale) // step * step)
    return bw, bh


def crop_box(width: int, height: int, bucket: tuple[int, int]) -> tuple[tuple[int, int], tuple[int, int]]:
    """The resize (to cover the bucket, aspect kept) and the centre crop's top-left corner."""
    bw, bh = bucket
    scale = max(bw / width, bh / height)
    rw, rh = max(bw, round(width * scale)), max(bh, round(height * scale))
    return (rw, rh), ((rh - bh) // 2, (rw - bw) // 2)


def bucket_counts(sizes: list[tuple[int, int, int]], resolution: int, bucketing: bool = True) -> dict:
    """{bucket: samples per epoch} for [(width, height, repeats)]."""
    counts: Counter = Counter()
    for width, height, repeats in sizes:
        counts[bucket_for(width, height, resolution, bucketing)] += repeats
    return dict(sorted(counts.items()))

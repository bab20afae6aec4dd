"""Tile-wise inference for image-to-image models: a 4x of a 2048 image runs tile by tile.

Tiles overlap by `overlap` pixels; where two overlap, their outputs are blended with linear weights
that fall to the tile's inner edges, so no seam shows. Hand-written (30 lines): spandrel runs a model
on one tensor and has no tiler; ComfyUI's `tiled_scale` is inside ComfyUI.
"""
from __future__ import annotations

from typing import Callable


def starts(length: int, tile: int, overlap: int) -> list[int]:
    """Where the tiles begin along one side: every tile - overlap pixels, the last one flush with the end."""
    if length <= tile:
        return [0]
    step = max(1, tile - overlap)
    out = list(range(0, length - tile, step))
    return out + [length - tile]


def _ramp(size: int, fade_start: int, fade_end: int):
    """1 inside, falling linearly towards a side that borders another tile (0 fade: that side is the image edge)."""
    import torch

    w = torch.ones(size)
    if fade_start:
        w[:fade_start] = torch.arange(1, fade_start + 1) / (fade_start + 1)
    if fade_end:
        w[size - fade_end:] = torch.minimum(w[size - fade_end:], torch.arange(fade_end, 0, -1) / (fade_end + 1))
    return w


def run_tiled(fn: Callable, image, scale: int, tile: int, overlap: int,
              on_tile: Callable[[int, int], None] | None = None):
    """`fn(tensor (1, C, h, w)) -> (1, C, h*scale, w*scale)`, applied tile by tile (tile <= 0: in one piece).
    `on_tile(done, total)` is called after each tile (progress, interrupt: it may raise)."""
    import torch

    _, channels, height, width = image.shape
    if tile <= 0 or (height <= tile and width <= tile):
        out = fn(image)
        if on_tile:
            on_tile(1, 1)
        return out
    overlap = min(overlap, tile // 2)
    ys, xs = starts(height, tile, overlap), starts(width, tile, overlap)
    out = torch.zeros((1, channels, height * scale, width * scale), dtype=torch.float32)
    weight = torch.zeros((1, 1, height * scale, width * scale), dtype=torch.float32)
    total, done = len(ys) * len(xs), 0
    for y in ys:
        th = min(tile, height - y)
        for x in xs:
            tw = min(tile, width - x)
            piece = fn(image[:, :, y:y + th, x:x + tw]).float().cpu()
            fade = overlap * scale
            wy = _ramp(th * scale, fade if y > 0 else 0, fade if y + th < height else 0)
            wx = _ramp(tw * scale, fade if x > 0 else 0, fade if x + tw < width else 0)
            w = (wy[:, None] * wx[None, :])[None, None]
            ys_, xs_ = y * scale, x * scale
            out[:, :, ys_:ys_ + th * scale, xs_:xs_ + tw * scale] += piece * w
            weight[:, :, ys_:ys_ + th * scale, xs_:xs_ + tw * scale] += w
            done += 1
            if on_tile:
                on_tile(done, total)
    return out.div_(weight)  # in place: a 4x of a 2048 image is 800 MB of float32 already

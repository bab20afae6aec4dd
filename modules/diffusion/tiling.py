"""Tiling (A1111's `tiling: true`): seamless textures by circular padding.

For one job, every Conv2d of the UNet and the VAE pads by wrapping around (`padding_mode =
"circular"`, a constructor option of torch's Conv2d that its forward reads) instead of with zeros,
so the picture's left edge continues its right edge and its top its bottom. The modes are put back
when the job ends, failed or not. The VAE's tiled decoding (a memory setting) is off meanwhile: it
decodes tiles on their own, and each would wrap around itself.
"""
from __future__ import annotations

import contextlib


def _convs(*models):
    import torch

    for model in models:
        if model is None:
            continue
        for module in model.modules():
            if isinstance(module, torch.nn.Conv2d):
                yield module


@contextlib.contextmanager
def circular(pipe):
    """Circular padding in `pipe`'s UNet and VAE while the block runs; the previous modes afterwards."""
    unet, vae = getattr(pipe, "unet", None), getattr(pipe, "vae", None)
    saved = [(conv, conv.padding_mode) for conv in _convs(unet, vae)]
    vae_tiling = getattr(vae, "use_tiling", None)
    try:
        for conv, _ in saved:
            conv.padding_mode = "circular"
        if vae_tiling:
            vae.use_tiling = False
        yield pipe
    finally:
        for conv, mode in saved:
            conv.padding_mode = mode
        if vae_tiling is not None:
            vae.use_tiling = vae_tiling


def maybe(pipe, enabled: bool):
    """circular(pipe) when `enabled`, else nothing."""
    return circular(pipe) if enabled else contextlib.nullcontext(pipe)

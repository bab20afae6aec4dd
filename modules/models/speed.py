"""The speed settings (Settings: channels_last, attention, cpu_bf16, cpu_threads) applied to a pipeline.

Applied on every use of a checkpoint (DiffusionAdapter.prepare) and only when they differ from
what the pipeline has, so an unchanged setting costs nothing. Each acts or is refused where it is
set (settings.py refuses cpu_bf16 on a CPU without native bf16); none is accepted and ignored.
"""
from __future__ import annotations

import contextlib

from modules import cpu_features


def apply(pipe, settings, device_type: str, move_weights: bool = True) -> None:
    if move_weights:
        _memory_format(pipe, settings.channels_last)
    _attention(pipe, settings.attention)
    if device_type == "cpu":
        set_threads(settings.cpu_threads)


def set_threads(wanted: int) -> int:
    """torch's intra-op threads: `wanted`, or one per physical core for 0 (hyper-threads only contend)."""
    import torch

    n = wanted or cpu_features.physical_cores()
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


def _modules(pipe) -> list:
    return [m for m in (getattr(pipe, "unet", None), getattr(pipe, "vae", None)) if m is not None]


def _memory_format(pipe, channels_last: bool) -> None:
    import torch

    fmt = torch.channels_last if channels_last else torch.contiguous_format
    for module in _modules(pipe):
        probe = next((p for p in module.parameters() if p.dim() == 4), None)
        if probe is not None and not probe.is_contiguous(memory_format=fmt):
            module.to(memory_format=fmt)


def is_channels_last(module) -> bool:
    import torch

    convs = [p for p in module.parameters() if p.dim() == 4]
    return bool(convs) and all(p.is_contiguous(memory_format=torch.channels_last) for p in convs)


def _attention(pipe, kind: str) -> None:
    from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

    cls = AttnProcessor2_0 if kind == "sdpa" else AttnProcessor
    for module in _modules(pipe):
        processors = module.attn_processors
        # Only the standard processors are swapped: a LoRA / IP-adapter / extension processor stays as it is.
        if processors and all(type(p) in (AttnProcessor, AttnProcessor2_0) for p in processors.values()) \
                and any(type(p) is not cls for p in processors.values()):
            module.set_attn_processor(cls())


@contextlib.contextmanager
def autocast(settings, pipe, device_type: str):
    """bf16 autocast around one generation on the CPU when the setting is on (settings.py refused it where
    the CPU lacks native bf16); fp16/bf16 weights already are what they are."""
    import torch

    unet = getattr(pipe, "unet", None)
    if settings.cpu_bf16 and device_type == "cpu" and unet is not None and unet.dtype == torch.float32:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            yield True
    else:
        yield False

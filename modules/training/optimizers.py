"""The optimizer a request names, over parameter groups (UNet and text encoder have their own rates)."""
from __future__ import annotations


def build_optimizer(name: str, groups: list[dict], weight_decay: float):
    """AdamW (torch), AdamW 8-bit (bitsandbytes, CUDA), Prodigy (prodigyopt), Adafactor (transformers)."""
    if name == "adamw":
        import torch

        return torch.optim.AdamW(groups, betas=(0.9, 0.999), weight_decay=weight_decay, eps=1e-8)
    if name == "adamw8bit":
        import bitsandbytes as bnb

        return bnb.optim.AdamW8bit(groups, betas=(0.9, 0.999), weight_decay=weight_decay, eps=1e-8)
    if name == "prodigy":
        from prodigyopt import Prodigy

        # Prodigy estimates the step size itself: its learning rate is a multiplier, 1.0 as its authors advise.
        return Prodigy(groups, weight_decay=weight_decay, safeguard_warmup=True, use_bias_correction=True)
    if name == "adafactor":
        from transformers.optimization import Adafactor

        # A fixed learning rate (the request's), not Adafactor's own relative-step schedule.
        return Adafactor(groups, scale_parameter=False, relative_step=False, warmup_init=False,
                         weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}")

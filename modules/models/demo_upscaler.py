"""A random-weights RRDBNet (ESRGAN / Real-ESRGAN's network) in Real-ESRGAN's own key layout, for the
tests and the benchmark: spandrel detects and loads it like a downloaded RealESRGAN_x4plus.pth."""
from __future__ import annotations


def realesrgan_state_dict(seed: int = 0, num_feat: int = 8, num_block: int = 1, num_grow_ch: int = 32) -> dict:
    """A 4x RRDBNet with random weights in Real-ESRGAN's own key layout (basicsr's RRDBNet: conv_first,
    body.N.rdbK.convM, conv_body, conv_up1/2, conv_hr, conv_last) — what RealESRGAN_x4plus.pth holds
    (64 features, 23 blocks there; the growth of 32 channels is fixed by the architecture)."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    sd: dict = {}

    def conv(name: str, cin: int, cout: int, bias: float = 0.0) -> None:
        sd[f"{name}.weight"] = torch.randn(cout, cin, 3, 3, generator=gen) / (cin * 9) ** 0.5  # keeps the scale
        sd[f"{name}.bias"] = torch.full((cout,), bias)

    conv("conv_first", 3, num_feat)
    for b in range(num_block):
        for r in (1, 2, 3):
            for m in range(1, 6):
                cin = num_feat + (m - 1) * num_grow_ch
                conv(f"body.{b}.rdb{r}.conv{m}", cin, num_feat if m == 5 else num_grow_ch)
    for name in ("conv_body", "conv_up1", "conv_up2", "conv_hr"):
        conv(name, num_feat, num_feat)
    conv("conv_last", num_feat, 3, bias=0.5)  # mid-grey plus what the network makes: not clamped to black
    return sd

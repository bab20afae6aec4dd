"""Live preview: latents → RGB by a fixed linear map, no VAE decode (A1111's "Approx cheap").

The factors are least-squares fits of the VAE decoder published with A1111 / ComfyUI,
one table per latent space.
"""
from __future__ import annotations

# rows: latent channels, columns: R, G, B
LATENT_RGB = {
    "sd1": ((0.298, 0.207, 0.208), (0.187, 0.286, 0.173), (-0.158, 0.189, 0.264), (-0.184, -0.271, -0.473)),
    "sdxl": ((0.3448, 0.4168, 0.4395), (-0.1953, -0.0290, 0.0250), (0.1074, 0.0886, -0.0163), (-0.3730, -0.2499, -0.2088)),
}


def latents_to_image(latents, arch: str = "sd1"):
    """The first latent of a batch as a small PIL image (1/8 of the output size)."""
    import torch
    from PIL import Image

    if arch not in ("sd1", "sd2", "sdxl"):
        return None  # Flux / SD3: 16-channel (Flux: packed) latents, no RGB table here yet
    table = LATENT_RGB["sdxl" if arch == "sdxl" else "sd1"]
    sample = latents[0].detach().float().cpu()
    if sample.shape[0] != 4:
        return None
    factors = torch.tensor(table, dtype=torch.float32)
    rgb = torch.einsum("chw,cr->hwr", sample, factors)
    rgb = ((rgb + 1) / 2).clamp(0, 1).mul(255).round().to(torch.uint8).numpy()
    return Image.fromarray(rgb, "RGB")


def wanted(step: int, every: int) -> bool:
    """Preview at step `step` (1-based) when every N steps is on."""
    return every > 0 and step % every == 0

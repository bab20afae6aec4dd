"""Small datasets and requests the training tests share (images are generated, captions written)."""
from __future__ import annotations

from pathlib import Path

SIZES = [(128, 128), (192, 96), (128, 128)]  # two buckets at resolution 128: 128x128 and 128x64


def make_dataset(folder: Path, sizes=SIZES, repeats: int = 2, seed: int = 0) -> Path:
    """`folder/<repeats>_red cat/` with noise images, one with a .txt caption, one with a .caption."""
    import numpy as np
    from PIL import Image

    group = folder / f"{repeats}_red cat"
    group.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i, (w, h) in enumerate(sizes):
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(group / f"{i}.png")
    (group / "0.txt").write_text("a red cat, sitting\n", encoding="utf-8")
    (group / "1.caption").write_text("a red cat, lying", encoding="utf-8")
    return folder


def sd_request(name: str, **overrides) -> dict:
    """A few fast steps on the demo model; a high learning rate so that the LoRA visibly changes images."""
    base = {"kind": "sd_lora", "output_name": name, "dataset": "datasets/cats", "resolution": 128, "rank": 4,
            "unet_lr": 1e-2, "max_steps": 6, "seed": 7}
    return {**base, **overrides}

"""Small datasets and requests the training tests share (images are generated, captions written)."""
from __future__ import annotations

from pathlib import Path

DEADLINE_S = 600


def open_training_studio(data: Path):
    """A loaded Studio on the CPU over `data` (made with conftest's make_data_dir), no demo building."""
    from modules.studio import Studio, StudioOptions

    studio = Studio(StudioOptions(data_dir=data, device="cpu", build_demo=False))
    studio.load()
    assert studio.load_error is None, studio.load_error
    return studio


def run_training(studio, kind: str, request: dict):
    """A training job to its end (done or stopped), its log shown when it failed."""
    from modules.jobs import JobState
    from modules.training.params import parse

    job = studio.jobs.run(f"train_{kind}", parse(request), timeout=DEADLINE_S)
    assert job.state in (JobState.DONE, JobState.INTERRUPTED), f"{job.error}\n" + "\n".join(list(job.logs)[-30:])
    return job

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


def make_instance_images(folder: Path, sizes=SIZES, seed: int = 3) -> Path:
    """DreamBooth's instance images: a flat folder, no captions (the instance prompt captions them)."""
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i, (w, h) in enumerate(sizes):
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(folder / f"sks-{i}.png")
    return folder


def dreambooth_request(name: str, **overrides) -> dict:
    """DreamBooth on the demo model: 3 class images made in 2 sampling steps, a few training steps."""
    base = {"kind": "dreambooth", "output_name": name, "dataset": "datasets/sks", "resolution": 128,
            "instance_prompt": "a photo of sks cat", "class_prompt": "a photo of a cat", "num_class_images": 3,
            "class_steps": 2, "unet_lr": 1e-2, "max_steps": 4, "seed": 7}
    return {**base, **overrides}

"""In-process studios over throw-away data folders, for the figures that call the engine directly."""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from bench.sd15 import cache_root, link_copy


def demo_folder() -> Path:
    """The demo checkpoint, built once per machine into the bench cache (the studio's own factory)."""
    from modules.models.demo import DEMO_NAME, save_demo_checkpoint

    folder = cache_root() / DEMO_NAME
    if not (folder / "model_index.json").exists():
        shutil.rmtree(folder, ignore_errors=True)
        save_demo_checkpoint(folder)
    return folder


def make_data_dir(*checkpoints: Path, name: str = "data") -> Path:
    """A fresh data folder whose models/Stable-diffusion holds the given checkpoints (hard links)."""
    root = Path(tempfile.mkdtemp(prefix=f"atelier-bench-{name}-"))
    ckpt_dir = root / "models" / "Stable-diffusion"
    ckpt_dir.mkdir(parents=True)
    for ckpt in checkpoints:
        target = ckpt_dir / ckpt.name
        if ckpt.is_dir():
            link_copy(ckpt, target)
        else:
            try:
                target.hardlink_to(ckpt)
            except OSError:
                shutil.copy2(ckpt, target)
    return root


def open_studio(data_dir: Path, device: str):
    """A loaded Studio (no demo building: the data folder says what is there)."""
    from modules.studio import Studio, StudioOptions

    studio = Studio(StudioOptions(data_dir=data_dir, device=device, build_demo=False))
    studio.load()
    if studio.load_error:
        studio.shutdown()
        raise RuntimeError(f"the studio did not load: {studio.load_error}")
    return studio


def generate(studio, req):
    """Run a txt2img request through the studio's job engine; its first image (a failed job raises)."""
    from modules.jobs import JobState

    job = studio.jobs.run("txt2img", req)
    if job.state != JobState.DONE:
        raise RuntimeError(f"the Atelier job ended {job.state.value}: {job.error}")
    return job.result.images[0].image

"""The compile_unet rows' compile time: the first process (cold cache) and a second process on the same data
folder (the FX graph / AOTAutograd / inductor caches in data/cache/torch-compile warm), each as its own row.

The second process is `python -m bench.speed_compile DATA_DIR DEVICE SIDE` — a studio on the same data folder,
compile_unet on, one job of the same request; it prints one JSON line with its compile seconds."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from bench.common import Figure

PROMPT, SEED = "a lighthouse on a cliff at dusk, oil painting", 1234
FIRST = ("speed_compile_seconds_first", "torch.compile of the SD1.5 UNet: seconds compiling, first process")
CACHED = ("speed_compile_seconds_cached", "torch.compile of the SD1.5 UNet: seconds compiling, second process (cached)")
ROWS = [(*FIRST, "— (reported)"), (*CACHED, "— (reported)")]


def request(side: int, steps: int, sampler: str):
    from modules.diffusion.params import Txt2ImgRequest

    return Txt2ImgRequest(prompt=PROMPT, steps=steps, width=side, height=side, seed=SEED, sampler_name=sampler,
                          cfg_scale=7.0, save_images=False)


def cache_is_cold(studio_cache: Path) -> bool:
    """Whether the compile about to happen finds the studio's cache folder empty (the bench's data folder is new)."""
    return not (studio_cache.is_dir() and any(studio_cache.iterdir()))


def first_row(ckpt, first_job_s: float, cold: bool) -> Figure:
    return Figure.from_samples(*FIRST, [round(ckpt.compile_seconds, 3)], unit="s", target="— (reported)",
                               first_job_s=round(first_job_s, 3), cache_was_cold=cold,
                               cache_dir=os.environ.get("TORCHINDUCTOR_CACHE_DIR", ""))


def cached_row(data_dir: Path, device: str, side: int, sampler: str, log) -> Figure:
    """The second process: the same graph compiled again, from the disk caches the first one wrote."""
    log("  compile_unet in a second process on the same data folder …")
    repo = Path(__file__).resolve().parent.parent
    done = subprocess.run([sys.executable, "-m", "bench.speed_compile", str(data_dir), device, str(side), sampler],
                          cwd=repo, capture_output=True, text=True, timeout=3600, env=dict(os.environ))
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
    if done.returncode != 0 or not lines:
        return Figure.missing(*CACHED, f"the second process failed ({done.returncode}): {done.stderr[-300:]}")
    got = json.loads(lines[-1])
    return Figure.from_samples(*CACHED, [got["compile_s"]], unit="s",
                               target="— (reported)", first_job_s=got["first_job_s"], process_s=got["process_s"])


def _child(data_dir: str, device: str, side: str, sampler: str) -> None:
    from bench.studio_setup import generate, open_studio

    start = time.perf_counter()
    studio = open_studio(Path(data_dir), device)
    try:
        studio.settings.update({"compile_unet": "default"}, save=False)
        t0 = time.perf_counter()
        generate(studio, request(int(side), 1, sampler))
        first = time.perf_counter() - t0
        seconds = studio.models.active.compile_seconds
    finally:
        studio.shutdown()
    print(json.dumps({"compile_s": round(seconds, 3), "first_job_s": round(first, 3),
                      "process_s": round(time.perf_counter() - start, 3)}))


if __name__ == "__main__":
    _child(*sys.argv[1:5])

"""The allocator row: plain diffusers' SD1.5 call in a process with Atelier's allocator setting
(modules/allocator.py, what `python -m webui` applies at start) vs one with glibc's default, side by side.

The setting must be made before any thread allocates, so each side is its own child process
(`python -m bench.allocator MODE FOLDER SIDE STEPS`) holding the pipeline; the parent asks each for one
call at a time, alternating, and the children answer with the seconds and a digest of the image (the same
image on both sides, or the row says so)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from bench.common import Figure

KEY = "speed_allocator"
TITLE = "Atelier's allocator setting (freed memory kept) vs glibc's default, plain diffusers SD1.5 call"


def run(device: str, quick: bool, log=print) -> list[Figure]:
    if device != "cpu" or not sys.platform.startswith("linux"):
        return [Figure.missing(KEY, TITLE, "glibc's malloc: the CPU on Linux (a GPU has torch's caching allocator)")]
    from bench.sd15 import ensure_sd15_folder

    side, steps, reps = (256, 4, 2) if quick else (256, 8, 4)
    return [_measure(ensure_sd15_folder(log), side, steps, reps, log)]


def _measure(folder: Path, side: int, steps: int, reps: int, log) -> Figure:
    log(f"  allocator: two processes, {reps} pairs of {steps} steps at {side}x{side} …")
    repo = Path(__file__).resolve().parent.parent
    children = {mode: subprocess.Popen([sys.executable, "-m", "bench.allocator", mode, str(folder), str(side),
                                        str(steps)], cwd=repo, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                       text=True, env=dict(os.environ))
                for mode in ("kept", "default")}
    try:
        for child in children.values():
            _ask(child)  # the warm-up call: loads, maps the first pages
        times: dict[str, list[float]] = {"kept": [], "default": []}
        digests, faults = set(), {"kept": [], "default": []}
        for i in range(2 * reps):
            order = ("kept", "default") if i % 4 in (0, 3) else ("default", "kept")  # ABBA
            for mode in order:
                got = _ask(children[mode])
                times[mode].append(got["s"])
                faults[mode].append(got["minor_faults"])
                digests.add(got["digest"])
    finally:
        for child in children.values():
            child.stdin.close()
            child.wait(60)
    speedup = [d / k for k, d in zip(times["kept"], times["default"])]
    fig = Figure.from_samples(KEY, TITLE, speedup, target="— (reported)", kept_s=times["kept"],
                              default_s=times["default"], minor_faults_kept=faults["kept"],
                              minor_faults_default=faults["default"], same_image=len(digests) == 1,
                              steps=steps, size=f"{side}x{side}")
    if len(digests) != 1:
        fig.met = False
        fig.detail["problem"] = "the two processes made different images"
    return fig


def _ask(child: subprocess.Popen) -> dict:
    child.stdin.write("go\n")
    child.stdin.flush()
    line = child.stdout.readline()
    if not line:
        raise RuntimeError(f"the allocator child exited with {child.wait(10)}")
    return json.loads(line)


def _child(mode: str, folder: str, side: str, steps: str) -> None:
    if mode == "kept":
        from modules.allocator import keep_freed_memory

        if not keep_freed_memory():
            raise SystemExit("the allocator setting did not apply here")
    import hashlib
    import resource
    import time

    import diffusers
    import torch

    from bench.overhead import SAMPLER
    from bench.speed_compile import PROMPT, SEED

    pipe = diffusers.StableDiffusionPipeline.from_pretrained(folder, safety_checker=None, requires_safety_checker=False,
                                                             local_files_only=True)
    pipe.scheduler = getattr(diffusers, SAMPLER[1]).from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    for _ in sys.stdin:
        faults, start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.perf_counter()
        with torch.inference_mode():
            image = pipe(prompt=PROMPT, negative_prompt="", num_inference_steps=int(steps), guidance_scale=7.0,
                         width=int(side), height=int(side), generator=torch.Generator("cpu").manual_seed(SEED)).images[0]
        seconds = time.perf_counter() - start
        print(json.dumps({"s": round(seconds, 4), "digest": hashlib.sha256(image.tobytes()).hexdigest()[:16],
                          "minor_faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults}), flush=True)


if __name__ == "__main__":
    _child(*sys.argv[1:5])

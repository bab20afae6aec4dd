"""Figure 3, single files: cold same-architecture switches between A1111-layout SD1.5 .safetensors files.

The bench's random SD1.5 folder written once as one LDM-key-name file (modules/models/singlefile.py)
with its configs beside it (`<stem>.config/`), cached next to the folder. Three names (hard links, each
with its own copy of the sidecar) are cycled with the cache limited to one checkpoint, so every switch
reads the disk: the first load of the architecture is the ordinary from_single_file, the rest go
through the kept skeleton (skeleton_file.py). The plain side reads the same file with safetensors.
A1111's sha256 of each file is computed before timing (once per file, then cached, as in use).
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from bench.common import Figure, ratios, side_by_side

TITLE = "cold checkpoint switch, same architecture, single file, vs plain safetensors load"


def ensure_sd15_single_file(folder: Path, log=print) -> Path:
    """`folder` (the bench's SD1.5 diffusers folder) as an A1111 single file with a sidecar config; built once."""
    path = folder.with_name(folder.name + "-single.safetensors")
    if path.exists():
        return path
    from diffusers import StableDiffusionPipeline
    from safetensors.torch import save_file

    from modules.models.singlefile import copy_configs, ldm_state_dict

    log(f"writing the SD1.5-size checkpoint as an A1111 single file {path} (once) …")
    pipe = StableDiffusionPipeline.from_pretrained(str(folder), safety_checker=None, requires_safety_checker=False,
                                                   local_files_only=True)
    state = ldm_state_dict(pipe)
    del pipe
    copy_configs(folder, sidecar(path))
    tmp = path.with_name("." + path.name + ".tmp")
    save_file(state, str(tmp), metadata={"format": "pt"})
    tmp.rename(path)
    return path


def sidecar(path: Path) -> Path:
    return path.with_name(path.stem + ".config")


def single_file_figure(models, src: Path, data: Path, device: str, reps: int, log, switch, touch) -> Figure:
    """`switch(models, name, device)` -> built_from; `touch(tensors, device)` reads every page (bench/switching.py)."""
    from safetensors.torch import load_file

    from bench.switching import _spread

    path = ensure_sd15_single_file(src, log)
    ckpts = data / "models" / "Stable-diffusion"
    names = []
    for c in "abc":
        dst = ckpts / f"{path.stem}-{c}.safetensors"
        if not dst.exists():
            os.link(path, dst)
            shutil.copytree(sidecar(path), sidecar(dst))
        names.append(dst.name)
    models.registry.refresh("checkpoint")
    for name in names:
        models.registry.ensure_hash(models.registry.get("checkpoint", name))
    switch(models, names[2], device)  # the first load of this architecture: the ordinary one, the skeleton kept
    cycle = iter(range(10**6))
    built: set[str] = set()

    def plain():
        tensors = list(load_file(str(path), device=device).values())
        touch(tensors, device)

    log(f"  cold switch, single files: {reps} switches alternating with {reps} plain safetensors loads …")
    ta, tb = side_by_side(lambda: built.add(switch(models, names[next(cycle) % 3], device)), plain, reps, device,
                          warmup=0)
    fig = Figure.from_samples("switch_cold_single_file", TITLE, ratios(ta, tb), target="<= 1.3x plain safetensors",
                              ok=lambda r: r <= 1.3, cold_s=_spread(ta), plain_s=_spread(tb), built_from=sorted(built))
    if built != {"skeleton"}:
        fig.met = False
        fig.detail["problem"] = "the same-architecture single-file switches did not all go through the skeleton"
    return fig

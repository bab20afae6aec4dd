"""Can ultralytics run beside this studio's torch? The answer decides where YOLO's worker runs: None →
the studio's own Python (ultralytics installed into it on enable, torch kept pinned); a reason → the
extension's own environment (environment.txt). Read from the installed packages' metadata, never by
importing torch or torchvision (a mismatched torchvision fails half-way through registering its
operators, and this runs at every load).

Measured (2026-12, Python 3.11): PyPI's torchvision 0.28.0 is built for PyPI's torch 2.13.0 (a CUDA build
that also runs on the CPU); beside the CPU-only torch 2.13.0+cpu, `import ultralytics` and building a model
work, and predicting fails with `RuntimeError: operator torchvision::nms does not exist`. PyPI has no
torchvision for a +cpu torch, so `pip install ultralytics` beside it would bring that broken one (or,
unpinned, replace the studio's torch with the newest CUDA one).
"""
from __future__ import annotations

from importlib.metadata import PackageNotFoundError, requires, version

CPU_INDEX = "https://download.pytorch.org/whl/cpu"


def problem(read_version=version, read_requires=requires) -> str | None:
    """Why ultralytics cannot run in the studio's Python, with how to make it able to; None when it can."""
    from packaging.requirements import Requirement

    try:
        torch_v = read_version("torch")
    except PackageNotFoundError:
        return "torch is not installed in the studio's Python."
    torch_base, torch_build = torch_v.partition("+")[::2]
    instead = (f"To run YOLO in the studio's Python instead, install the torchvision built for this torch "
               f"(pip install torchvision=={{vision}}+{torch_build or 'cpu'} --index-url {CPU_INDEX}) or run the "
               f"studio on PyPI's torch {torch_base} (its CUDA build, which also runs on the CPU).")
    try:
        vision_v = read_version("torchvision")
    except PackageNotFoundError:
        if not torch_build:
            return None  # PyPI's torch: pip brings the matching torchvision with ultralytics
        return (f"torch {torch_v} is a {_build_name(torch_build)} build and PyPI has no torchvision for it: the one "
                f"pip would bring with ultralytics is built for PyPI's CUDA torch and fails beside this one "
                f"(operator torchvision::nms does not exist). " + instead.format(vision="<its version>"))
    vision_base, vision_build = vision_v.partition("+")[::2]
    instead = instead.format(vision=vision_base)
    if torch_build != vision_build:
        made_for = f"torch +{vision_build}" if vision_build else "PyPI's CUDA torch"
        return (f"torch {torch_v} is a {_build_name(torch_build)} build and torchvision {vision_v} was built for "
                f"{made_for}, so torchvision fails to import (operator torchvision::nms does not exist) and "
                f"ultralytics needs it. " + instead)
    for text in read_requires("torchvision") or []:
        req = Requirement(text)
        if req.name == "torch" and not req.marker and req.specifier and not req.specifier.contains(torch_base):
            return (f"torchvision {vision_v} needs torch {req.specifier} and the studio runs torch {torch_v}. "
                    + instead)
    return None


def _build_name(build: str) -> str:
    return "CPU-only (+cpu)" if build == "cpu" else f"+{build}" if build else "PyPI"

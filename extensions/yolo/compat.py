"""Can ultralytics run beside this studio's torch? Read from the installed packages' metadata, never by
importing torchvision (a mismatched one fails half-way through registering its operators).

Measured (2026-12, Python 3.11): PyPI's torchvision 0.28.0 is built for PyPI's torch 2.13.0 (a CUDA build
that also runs on the CPU); beside the CPU-only torch 2.13.0+cpu, `import ultralytics` and building a model
work, and predicting fails with `RuntimeError: operator torchvision::nms does not exist`. An unpinned
`pip install ultralytics` beside the +cpu torch replaces it with the newest CUDA torch (the studio pins
torch when it installs an extension's requirements).
"""
from __future__ import annotations

from importlib.metadata import PackageNotFoundError, requires, version

CPU_INDEX = "https://download.pytorch.org/whl/cpu"


def problem(read_version=version, read_requires=requires) -> str | None:
    """Why ultralytics cannot run here, with what to install; None when torch and torchvision match."""
    from packaging.requirements import Requirement

    try:
        torch_v = read_version("torch")
    except PackageNotFoundError:
        return "torch is not installed in the studio's Python; install requirements.txt first"
    try:
        vision_v = read_version("torchvision")
    except PackageNotFoundError:
        return None  # pip brings the matching one with ultralytics
    torch_base, torch_build = torch_v.partition("+")[::2]
    vision_base, vision_build = vision_v.partition("+")[::2]
    fix = (f"install the torchvision built for this torch (pip install torchvision=={vision_base}+{torch_build or 'cpu'} "
           f"--index-url {CPU_INDEX}), or run the studio on PyPI's torch {torch_base} (its CUDA build, which also "
           f"runs on the CPU) with PyPI's torchvision {vision_base}; then enable YOLO again")
    if torch_build != vision_build:
        what = "a CPU-only build (+cpu)" if torch_build == "cpu" else f"the {torch_build or 'PyPI'} build"
        made_for = f"torch +{vision_build}" if vision_build else "PyPI's CUDA torch"
        return (f"YOLO cannot run beside this studio's torch: torch {torch_v} is {what} and torchvision {vision_v} "
                f"was built for {made_for}, so torchvision fails to import (operator torchvision::nms does not "
                f"exist) and ultralytics needs it. To fix it, {fix}.")
    for text in read_requires("torchvision") or []:
        req = Requirement(text)
        if req.name == "torch" and not req.marker and req.specifier and not req.specifier.contains(torch_base):
            return (f"YOLO cannot run beside this studio's torch: torchvision {vision_v} needs torch {req.specifier}, "
                    f"this studio runs torch {torch_v}. To fix it, {fix}.")
    return None

"""The dataset caption editor's file work: image folders under `datasets/` in the data dir, images
copied in, `.txt` captions beside them (what dataset.py reads first), written atomically. Every
name from the browser is resolved inside the datasets folder (modules/paths.py)."""
from __future__ import annotations

import shutil
from pathlib import Path

from modules import atomic
from modules.errors import InvalidRequest
from modules.paths import resolve_inside
from modules.training.dataset import CAPTION_SUFFIXES, IMAGE_SUFFIXES

DATASETS = "datasets"  # the data dir's folder the Train tab lists datasets from


def datasets_root(root: Path) -> Path:
    return Path(root) / DATASETS


def folders(root: Path, depth: int = 2) -> list[str]:
    """Folders under datasets/ (kohya's `N_name` sub-folders too), as names relative to it."""
    base = datasets_root(root)
    found: list[str] = []

    def walk(folder: Path, level: int) -> None:
        for sub in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
            found.append(sub.relative_to(base).as_posix())
            if level < depth:
                walk(sub, level + 1)

    if base.is_dir():
        walk(base, 1)
    return found


def folder_path(root: Path, name: str, create: bool = False) -> Path:
    name = (name or "").strip().rstrip("/")
    if not name:
        raise InvalidRequest("choose a dataset folder, or type a new folder's name", "folder")
    base = datasets_root(root)
    base.mkdir(parents=True, exist_ok=True)
    folder = resolve_inside(base, name, field_name="folder", must_exist=False)
    if create:
        folder.mkdir(parents=True, exist_ok=True)
    elif not folder.is_dir():
        raise InvalidRequest(f"there is no folder {name!r} in {DATASETS}/", "folder")
    return folder


def images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES)


def caption_of(image: Path) -> str:
    for suffix in CAPTION_SUFFIXES:
        sidecar = image.with_suffix(suffix)
        if sidecar.is_file():
            return sidecar.read_text(encoding="utf-8", errors="replace").strip()
    return ""


def image_in(folder: Path, name: str) -> Path:
    image = resolve_inside(folder, name, field_name="image")
    if image.parent != folder.resolve() or image.suffix.lower() not in IMAGE_SUFFIXES:
        raise InvalidRequest(f"{name!r} is not an image of this folder", "image")
    return image


def write_caption(folder: Path, name: str, caption: str) -> Path:
    """The image's `.txt` caption (a `.caption` beside it is replaced: the .txt is what the trainer reads first)."""
    image = image_in(folder, name)
    target = image.with_suffix(".txt")
    atomic.write_text(target, " ".join((caption or "").split()) + "\n")
    return target


def add_images(folder: Path, files: list[str]) -> list[str]:
    """Copy uploaded files in (an existing name gets a number); returns the names written. A file that is
    not an image (by its suffix) is refused, naming it."""
    written = []
    for source in files:
        src = Path(source)
        if src.suffix.lower() not in IMAGE_SUFFIXES:
            raise InvalidRequest(f"{src.name} is not an image ({', '.join(IMAGE_SUFFIXES)})", "images")
        target = folder / src.name
        n = 1
        while target.exists():
            target = folder / f"{src.stem}-{n}{src.suffix}"
            n += 1
        tmp = folder / f".{target.name}.upload.tmp"
        shutil.copyfile(src, tmp)
        tmp.replace(target)
        written.append(target.name)
    return written

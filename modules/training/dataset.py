"""An image dataset folder: images with `.txt` / `.caption` captions, kohya's `N_name` repeat folders.

Read on the server (validation, step math) and again in the training process; no torch here.
Images are listed in a fixed order (by relative path), so both sides see the same dataset.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
CAPTION_SUFFIXES = (".txt", ".caption")
MIN_SIDE = 64  # smaller images would have to be upscaled to the smallest bucket: they are skipped instead
_REPEAT_FOLDER = re.compile(r"^(\d+)_(.*)$")  # kohya: "10_sks dog" = 10 repeats, "sks dog" as the fallback caption


@dataclass(frozen=True)
class DatasetItem:
    path: str  # relative to the dataset folder, with forward slashes
    caption: str
    repeats: int
    width: int
    height: int


@dataclass
class DatasetScan:
    folder: Path
    items: list[DatasetItem] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (relative path, why)
    folders: dict[str, dict] = field(default_factory=dict)  # folder -> {"n_repeats", "img_count"} (kohya's ss_dataset_dirs)

    @property
    def samples_per_epoch(self) -> int:
        """Images x repeats: what one epoch shows the model."""
        return sum(item.repeats for item in self.items)

    def digest(self) -> str:
        """Changes when an image, caption or repeat count changes (a resume refuses a changed dataset)."""
        h = hashlib.sha256()
        for item in self.items:
            st = (self.folder / item.path).stat()
            h.update(f"{item.path}\0{item.caption}\0{item.repeats}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        return h.hexdigest()[:16]

    def skipped_text(self, limit: int = 5) -> str:
        shown = "; ".join(f"{path}: {why}" for path, why in self.skipped[:limit])
        more = f" and {len(self.skipped) - limit} more" if len(self.skipped) > limit else ""
        return shown + more


def _caption(image: Path, fallback: str) -> str:
    for suffix in CAPTION_SUFFIXES:
        sidecar = image.with_suffix(suffix)
        if sidecar.is_file():
            try:
                return " ".join(sidecar.read_text(encoding="utf-8").split())
            except (OSError, UnicodeDecodeError):
                return fallback
    return fallback


def _image_size(path: Path) -> tuple[int, int]:
    """The size from the header, after a structural check (truncated and foreign files are refused)."""
    from PIL import Image

    with Image.open(path) as image:
        image.verify()  # must come first after open; the image cannot be used after it
    with Image.open(path) as image:
        width, height = image.size
        if image.getexif().get(0x0112) in (5, 6, 7, 8):  # EXIF says "rotated by 90°": the trainer turns it upright
            width, height = height, width
    return width, height


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES)


def scan_dataset(folder: Path, default_caption: str = "", check_images: bool = True) -> DatasetScan:
    """Images at the top of `folder` (1 repeat) and in its sub-folders (`N_name`: N repeats, else 1)."""
    folder = Path(folder)
    scan = DatasetScan(folder)
    groups: list[tuple[Path, int, str]] = [(folder, 1, default_caption)]
    for sub in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        match = _REPEAT_FOLDER.match(sub.name)
        repeats, name = (int(match.group(1)), match.group(2).strip()) if match else (1, "")
        groups.append((sub, repeats, name or default_caption))
    for group, repeats, fallback in groups:
        count = 0
        for image in _images_in(group):
            rel = image.relative_to(folder).as_posix()
            if repeats <= 0:
                scan.skipped.append((rel, "its folder asks for 0 repeats"))
                continue
            try:
                width, height = _image_size(image) if check_images else (0, 0)
            except Exception as exc:  # PIL raises many kinds for broken files; each is one skipped image
                scan.skipped.append((rel, f"unreadable ({type(exc).__name__})"))
                continue
            if check_images and min(width, height) < MIN_SIDE:
                scan.skipped.append((rel, f"{width}x{height} is smaller than {MIN_SIDE} px on a side"))
                continue
            scan.items.append(DatasetItem(rel, _caption(image, fallback), repeats, width, height))
            count += 1
        if count:
            scan.folders[group.relative_to(folder).as_posix() if group != folder else "."] = {
                "n_repeats": repeats, "img_count": count}
    return scan

"""Where generated images go: outputs/<kind>/<YYYY-MM-DD>/NNNNN-<seed>.<png|jpg|webp>, written atomically."""
from __future__ import annotations

import re
import threading
import time
from pathlib import Path

from modules import atomic

_NUMBERED = re.compile(r"^(\d{5})-")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


class OutputWriter:
    def __init__(self, outputs_dir: Path):
        self.root = Path(outputs_dir)
        self._lock = threading.Lock()

    def folder_for(self, subdir: str, when: float | None = None) -> Path:
        return self.root / subdir / time.strftime("%Y-%m-%d", time.localtime(when))

    def _next_number(self, folder: Path) -> int:
        highest = 0
        if folder.is_dir():
            for p in folder.iterdir():
                m = _NUMBERED.match(p.name)
                if m:
                    highest = max(highest, int(m.group(1)))
        return highest + 1

    def save_png(self, image, subdir: str, seed: int, infotext: str | None) -> Path:
        return self.save(image, subdir, seed, infotext, "png")

    def save(self, image, subdir: str, seed: int, infotext: str | None, fmt: str = "png", quality: int = 80) -> Path:
        """Save in A1111's samples_format (png, jpg, webp) with the infotext inside (PNG chunk or EXIF)."""
        from modules.images import encode_image, extension

        data = encode_image(image, infotext, fmt, quality)
        with self._lock:  # numbering and the write together, so two jobs never take one number
            folder = self.folder_for(subdir)
            path = folder / f"{self._next_number(folder):05d}-{seed}.{extension(fmt)}"
            atomic.write_bytes(path, data)
        return path

    def save_files(self, subdir: str, name: str, files: dict[str, bytes]) -> dict[str, Path]:
        """Files that belong together under one number: {".png": …, ".json": …} → NNNNN-<name>.png / .json."""
        stem = _UNSAFE.sub("_", name).strip("._")[:60] or "file"
        with self._lock:
            folder = self.folder_for(subdir)
            number = self._next_number(folder)
            out = {}
            for suffix, data in files.items():
                out[suffix] = folder / f"{number:05d}-{stem}{suffix}"
                atomic.write_bytes(out[suffix], data)
        return out

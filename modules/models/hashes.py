"""AUTOMATIC1111-style model hashes: the full file's sha256, shown as its first 10 hex digits.

Hashes are cached in the data dir's cache.json (A1111 keeps one too) keyed by path, mtime and
size, so a multi-GB file is read once; the file is written atomically. A diffusers folder has
no single file, so its hash is the sha256 of its files' relative names and bytes, in order.
"""
from __future__ import annotations

import hashlib
import json
import logging
import threading
from pathlib import Path

from modules import atomic

log = logging.getLogger("atelier.models")

CHUNK = 1024 * 1024
EAGER_LIMIT = 64 * 1024 * 1024  # files up to this size are hashed during a scan; bigger ones when first used


def _signature(path: Path) -> tuple[float, int]:
    """(newest mtime, total size) of a file or of every file in a folder."""
    if path.is_file():
        st = path.stat()
        return st.st_mtime, st.st_size
    files = [p for p in path.rglob("*") if p.is_file()]
    return (max((p.stat().st_mtime for p in files), default=0.0), sum(p.stat().st_size for p in files))


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    if path.is_file():
        files = [(None, path)]
    else:
        files = sorted((p.relative_to(path).as_posix(), p) for p in path.rglob("*") if p.is_file())
    for rel, p in files:
        if rel is not None:
            h.update(rel.encode("utf-8") + b"\0")
        with open(p, "rb") as f:
            while block := f.read(CHUNK):
                h.update(block)
    return h.hexdigest()


class HashCache:
    """sha256 per path, valid while the path's mtime and size are unchanged."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._lock = threading.Lock()
        self._data: dict | None = None

    def _load(self) -> dict:
        if self._data is None:
            try:
                data = json.loads(self.path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                data = {}
            if not isinstance(data, dict):
                data = {}
            if not isinstance(data.get("hashes"), dict):
                data["hashes"] = {}
            self._data = data
        return self._data

    def cached(self, path: Path) -> str | None:
        """The cached hash when the file is unchanged, else None (no reading of the file)."""
        try:
            mtime, size = _signature(path)
        except OSError:
            return None
        with self._lock:
            row = self._load()["hashes"].get(str(path))
        if isinstance(row, dict) and row.get("mtime") == mtime and row.get("size") == size:
            return row.get("sha256")
        return None

    def get(self, path: Path) -> str:
        """The hash, computed (and cached) when the cache has none for this version of the file."""
        found = self.cached(path)
        if found:
            return found
        mtime, size = _signature(path)
        digest = sha256_of(path)
        with self._lock:
            data = self._load()
            data["hashes"][str(path)] = {"mtime": mtime, "size": size, "sha256": digest}
            try:
                atomic.write_json(self.path, data)
            except OSError as exc:  # a read-only data dir: hashes still work, only uncached
                log.warning("could not write %s: %s", self.path, exc)
        return digest

"""Atomic file writes: a reader (or a kill -9) never sees half a file."""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path


def write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # The temporary file starts with a dot and ends in .tmp, so gallery scans skip it.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def write_text(path: Path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: Path, obj) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


def replace_dir(temp: Path, final: Path) -> Path:
    """Rename a completely written folder into place; an existing one is swapped out, then removed, so a
    reader sees the old folder or the new one, never a mix (a folder cannot be replaced in one rename)."""
    temp, final = Path(temp), Path(final)
    if final.exists():
        old = final.with_name(f".{final.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
        os.replace(temp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(temp, final)
    return final


def remove_stale_temporaries(folder: Path) -> int:
    """Delete `.name.xxx.tmp` leftovers of a write that a kill interrupted."""
    count = 0
    if not Path(folder).is_dir():
        return 0
    for tmp in Path(folder).rglob(".*.tmp"):
        try:
            tmp.unlink()
            count += 1
        except OSError:
            pass
    return count

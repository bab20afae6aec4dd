"""Jobs of long kinds (training) persisted in the data dir, so they are listed again after a restart.

One JSON file per job, `<folder>/<id>.json`, written atomically. A record is a plain dict:
    id, kind, state ("queued" | "running" | "done" | "interrupted" | "cancelled" | "failed"),
    step, total, text (progress), metrics {name: [[step, value], …]}, results [paths], error,
    created_at, started_at, finished_at (Unix times or null), request (the request as JSON).
The store checks only what it needs (the id, a JSON-able dict); the engine owns the shape.
"""
from __future__ import annotations

import json
import logging
import re
import threading
import time
from pathlib import Path

from modules import atomic
from modules.errors import PathRefused

log = logging.getLogger("atelier.jobs")

DIED_WITH_SERVER = "the server stopped while this job was running"
UNFINISHED = ("queued", "running")

# An id is a file name: nothing that could climb out of the folder or hide as a dot-file.
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")


class JobStore:
    """At most `keep` records: past it the oldest finished ones are dropped; unfinished ones never are."""

    def __init__(self, folder: Path, keep: int = 200):
        self.folder = Path(folder)
        self.keep = keep
        self._lock = threading.Lock()
        # id → (finished, when): what pruning needs, so a save need not read every other file.
        self._index: dict[str, tuple[bool, float]] | None = None

    def save(self, record: dict) -> None:
        job_id = _checked_id(record.get("id"))
        atomic.write_json(self._path(job_id), record)  # a record that is not JSON fails before any write
        with self._lock:
            index = self._ensure_index()
            index[job_id] = _index_entry(record)
            self._prune(index)

    def load_all(self) -> list[dict]:
        """Every readable record, oldest first; a job left queued or running by a dead server is marked failed."""
        # This is the restart path: leftovers of writes a kill interrupted go now.
        atomic.remove_stale_temporaries(self.folder)
        records = []
        for path in sorted(self.folder.glob("*.json")) if self.folder.is_dir() else []:
            record = self._read(path)
            if record is None:
                continue
            if record.get("state") in UNFINISHED:
                record["state"] = "failed"
                record["error"] = DIED_WITH_SERVER
                # Its file was last written while the job was alive: the best guess of when it ended.
                record["finished_at"] = record.get("finished_at") or path.stat().st_mtime
                try:
                    atomic.write_json(path, record)
                except OSError as exc:  # a read-only data dir: list it as failed all the same
                    log.warning("could not mark the job record %s failed: %s", path, exc)
            records.append(record)
        records.sort(key=lambda r: (_number(r.get("created_at")), r["id"]))
        with self._lock:
            self._index = {r["id"]: _index_entry(r) for r in records}
            dropped = self._prune(self._index)
        return [r for r in records if r["id"] not in dropped]

    def remove(self, job_id: str) -> None:
        job_id = _checked_id(job_id)
        try:
            self._path(job_id).unlink()
        except FileNotFoundError:
            pass
        with self._lock:
            if self._index is not None:
                self._index.pop(job_id, None)

    # -- inside ---------------------------------------------------------
    def _path(self, job_id: str) -> Path:
        return self.folder / f"{job_id}.json"

    def _read(self, path: Path) -> dict | None:
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            log.warning("skipping the unreadable job record %s: %s", path, exc)
            return None
        if not isinstance(record, dict) or record.get("id") != path.stem:
            log.warning("skipping the job record %s: not a record of job %r", path, path.stem)
            return None
        return record

    def _ensure_index(self) -> dict[str, tuple[bool, float]]:
        if self._index is None:
            self._index = {}
            for path in self.folder.glob("*.json"):
                record = self._read(path)
                if record is not None:
                    self._index[record["id"]] = _index_entry(record)
        return self._index

    def _prune(self, index: dict[str, tuple[bool, float]]) -> set[str]:
        finished = sorted((when, job_id) for job_id, (done, when) in index.items() if done)
        dropped = set()
        for _, job_id in finished[:max(0, len(index) - self.keep)]:
            try:
                self._path(job_id).unlink()
            except FileNotFoundError:
                pass
            index.pop(job_id)
            dropped.add(job_id)
        return dropped


def _checked_id(job_id: object) -> str:
    if not isinstance(job_id, str) or not _ID.fullmatch(job_id):
        raise PathRefused(f"not a job id: {job_id!r}", "id")
    return job_id


def _index_entry(record: dict) -> tuple[bool, float]:
    finished = record.get("state") not in UNFINISHED
    when = record.get("finished_at") or record.get("created_at")
    return finished, _number(when, default=time.time())


def _number(value: object, default: float = 0.0) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else default

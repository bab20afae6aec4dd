"""Workers for tests/unit/test_jobs_worker.py (imported in the worker process, by module or by file path)."""
from __future__ import annotations

import os
import signal
import time

from modules.errors import InvalidRequest


class Counter:
    """State kept between calls, a person's error, a crash and a hang."""

    def __init__(self):
        self.total = 0

    def add(self, n: int) -> dict:
        self.total += n
        return {"total": self.total, "pid": os.getpid()}

    def refuse(self, field: str) -> None:
        raise InvalidRequest("not like that", field)

    def fail(self) -> None:
        raise RuntimeError("a bug in the worker")

    def crash(self) -> None:
        print("about to crash", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)

    def hang(self, seconds: float) -> None:
        time.sleep(seconds)

    def _private(self) -> None:
        raise AssertionError("never called from the parent")


class Broken:
    def __init__(self):
        raise ValueError("cannot build the worker")

"""Who may run on the device now: many ordinary jobs together, or one exclusive job alone.

Ordinary jobs (generation, chat, vision) share the device, and the model manager's memory
budget decides whether their models fit side by side. An exclusive job (training) waits
until the running ones finish, and from the moment it waits no new ordinary job starts,
so a stream of short jobs cannot starve it.
"""
from __future__ import annotations

import contextlib
import threading
from typing import Callable

POLL_S = 0.2  # how often a waiting job looks at its own interrupt flag


class DeviceGate:
    def __init__(self):
        self._cond = threading.Condition()
        self._shared = 0  # ordinary jobs running
        self._exclusive = False  # an exclusive job running
        self._exclusive_waiting = 0

    @contextlib.contextmanager
    def enter(self, exclusive: bool, cancelled: Callable[[], bool] = lambda: False):
        """Hold the device shared (or exclusively) for the block; gives up waiting when `cancelled()`."""
        entered = self._acquire(exclusive, cancelled)
        try:
            yield entered
        finally:
            if entered:
                self._release(exclusive)

    def _acquire(self, exclusive: bool, cancelled: Callable[[], bool]) -> bool:
        with self._cond:
            if exclusive:
                self._exclusive_waiting += 1
                try:
                    while self._exclusive or self._shared:
                        if cancelled():
                            return False
                        self._cond.wait(POLL_S)
                    self._exclusive = True
                finally:
                    self._exclusive_waiting -= 1
                    self._cond.notify_all()
            else:
                while self._exclusive or self._exclusive_waiting:
                    if cancelled():
                        return False
                    self._cond.wait(POLL_S)
                self._shared += 1
            return True

    def _release(self, exclusive: bool) -> None:
        with self._cond:
            if exclusive:
                self._exclusive = False
            else:
                self._shared -= 1
            self._cond.notify_all()

    def held_exclusively(self) -> bool:
        """An exclusive job runs or waits: an ordinary job would wait for it."""
        with self._cond:
            return self._exclusive or self._exclusive_waiting > 0

    def busy(self) -> dict:
        with self._cond:
            return {"shared": self._shared, "exclusive": self._exclusive, "exclusive_waiting": self._exclusive_waiting}

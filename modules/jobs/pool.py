"""Several devices for one queue: which queued job a device's worker takes next.

With a pool (`--device cuda` on a machine with several GPUs), a device-bound queue (a kind with
`model_key`) has one worker per device. A job goes to the device where its model is resident
or being used, and waits for that device rather than loading a second copy elsewhere; a job
whose model is on no device goes to the first worker free (a free worker is the least busy).
"""
from __future__ import annotations

import collections
from dataclasses import dataclass
from typing import Any, Callable, ContextManager, Hashable

from modules.jobs.job import Job


@dataclass(frozen=True)
class DevicePool:
    """The devices (their lane names) and the model manager's two answers the engine needs."""

    lanes: tuple[str, ...]
    bind: Callable[[str], ContextManager[Any]]  # the worker thread's models go on this device for the block
    locate: Callable[[Hashable], str | None]  # the device a model (a model_key) is resident on, or None


def pick(queued: collections.deque[Job], lane: str, busy: dict[Hashable, str], pool: DevicePool) -> Job | None:
    """The first queued job that may run on `lane`; `busy` maps the model key of each running job to its device."""
    for job in queued:
        if job.model_key is None:
            return job
        home = busy.get(job.model_key) or pool.locate(job.model_key)
        if home is None or home == lane or home not in pool.lanes:
            return job
    return None

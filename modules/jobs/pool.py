"""Several devices for one queue: which queued job a device's worker takes next.

With a pool (`--device cuda` on a machine with several GPUs), a device-bound queue (a kind with
`model_key`) has one worker per device. A job goes to the device where its model is resident
or being used, and waits for that device rather than loading a second copy elsewhere. A job
whose model is on no device goes to the least busy free device: the one fewest queued jobs
wait for, then the one holding the fewest models (so it does not push out a model another
job is about to use).
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
    holding: Callable[[str], int]  # how many models a device holds now


def pick(queued: collections.deque[Job], lane: str, busy: dict[Hashable, str], idle: set[str],
         pool: DevicePool) -> Job | None:
    """The first queued job that `lane` (free) should run; `busy` maps the model key of each running job to
    its device, `idle` is the free devices (`lane` among them)."""
    homes = [_home(job, busy, pool) for job in queued]
    waiting_for = collections.Counter(h for h in homes if h is not None)
    least_busy = min(idle, key=lambda d: (waiting_for[d], pool.holding(d), d != lane))
    for job, home in zip(queued, homes):
        if home == lane or (home is None and least_busy == lane):
            return job
    return None


def _home(job: Job, busy: dict[Hashable, str], pool: DevicePool) -> str | None:
    """The device a job must run on (its model is there), or None: any."""
    if job.model_key is None:
        return None
    home = busy.get(job.model_key) or pool.locate(job.model_key)
    return home if home in pool.lanes else None

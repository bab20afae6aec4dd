"""The job engine: every heavy operation (generation, chat, vision, training) is a Job.

One FIFO queue and one worker thread per device queue. A job has an id, a state,
progress (step/total/ETA, an optional preview), a result, and can be interrupted
(stops after the current step, keeps what is done) or skipped (drops the current
item of a batch, goes on with the next). Runners write their results to disk
before returning, so "done" always means "on disk".
"""
from __future__ import annotations

import collections
import itertools
import logging
import threading
import time
import traceback
import uuid
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Callable

from modules.errors import AtelierError, NotFound

log = logging.getLogger("atelier.jobs")


class JobState(str, Enum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    INTERRUPTED = "interrupted"  # stopped early on request; `result` holds what was done
    CANCELLED = "cancelled"  # interrupted before it started
    FAILED = "failed"

    @property
    def finished(self) -> bool:
        return self not in (JobState.QUEUED, JobState.RUNNING)


@dataclass
class Progress:
    step: int = 0
    total: int = 0
    # Multi-part jobs (batch count, hires pass) report which part they are on.
    part: int = 0
    parts: int = 1
    text: str = ""

    @property
    def fraction(self) -> float:
        if self.total <= 0:
            return 0.0
        return min(1.0, (self.part + self.step / self.total) / max(1, self.parts))


@dataclass
class Job:
    kind: str
    request: Any
    queue: str = "default"
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:16])
    state: JobState = JobState.QUEUED
    progress: Progress = field(default_factory=Progress)
    preview: Any = None  # a PIL image, set every N steps when previews are on
    result: Any = None
    error: str | None = None
    error_field: str | None = None
    error_status: int = 500
    created_at: float = field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None
    version: int = 0  # bumped on every change, so watchers can wait for the next one
    interrupt_requested: bool = False
    skip_requested: bool = False
    _cond: threading.Condition = field(default_factory=threading.Condition, repr=False)

    @property
    def eta(self) -> float | None:
        """Seconds left, from the average pace so far."""
        frac = self.progress.fraction
        if self.started_at is None or frac <= 0:
            return None
        if self.state.finished:
            return 0.0
        elapsed = time.time() - self.started_at
        return max(0.0, elapsed / frac - elapsed)

    def _touch(self) -> None:
        with self._cond:
            self.version += 1
            self._cond.notify_all()

    def wait(self, timeout: float | None = None) -> "Job":
        """Block until the job is finished (or the timeout passes)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self.state.finished:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    break
                self._cond.wait(left)
        return self

    def wait_for_change(self, seen_version: int, timeout: float) -> int:
        with self._cond:
            if self.version == seen_version and not self.state.finished:
                self._cond.wait(timeout)
            return self.version

    def raise_for_error(self) -> None:
        if self.state == JobState.FAILED:
            err = AtelierError(self.error or "job failed", self.error_field)
            err.status = self.error_status
            raise err

    def snapshot(self) -> dict:
        return {
            "id": self.id,
            "kind": self.kind,
            "state": self.state.value,
            "step": self.progress.step,
            "total": self.progress.total,
            "part": self.progress.part,
            "parts": self.progress.parts,
            "progress": self.progress.fraction,
            "eta": self.eta,
            "text": self.progress.text,
            "error": self.error,
        }


class JobContext:
    """What a running job sees: report progress, publish a preview, check for interrupts."""

    def __init__(self, job: Job, engine: "JobEngine"):
        self.job = job
        self._engine = engine

    @property
    def interrupted(self) -> bool:
        return self.job.interrupt_requested

    @property
    def skip_requested(self) -> bool:
        return self.job.skip_requested

    def take_skip(self) -> bool:
        """True once per skip request: the runner drops the current item and goes on."""
        if self.job.skip_requested:
            self.job.skip_requested = False
            return True
        return False

    @property
    def should_stop_item(self) -> bool:
        """The sampling loop stops after this step when the job is interrupted or skipped."""
        return self.job.interrupt_requested or self.job.skip_requested

    def set_parts(self, parts: int) -> None:
        self.job.progress.parts = max(1, parts)
        self.job._touch()

    def progress(self, step: int, total: int, part: int | None = None, text: str | None = None) -> None:
        p = self.job.progress
        p.step, p.total = step, total
        if part is not None:
            p.part = part
        if text is not None:
            p.text = text
        self.job._touch()

    def preview(self, image) -> None:
        self.job.preview = image
        self.job._touch()


Runner = Callable[[JobContext, Any], Any]


class JobEngine:
    """Queues per device, one worker thread each; job kinds are registered by name."""

    def __init__(self, history: int = 500):
        self._runners: dict[str, tuple[Runner, str]] = {}
        self._queues: dict[str, collections.deque[Job]] = {}
        self._current: dict[str, Job | None] = {}
        self._jobs: collections.OrderedDict[str, Job] = collections.OrderedDict()
        self._history = history
        self._lock = threading.Condition()
        self._workers: dict[str, threading.Thread] = {}
        self._stopping = False
        self._counter = itertools.count(1)

    # -- registration -------------------------------------------------
    def register_kind(self, kind: str, runner: Runner, queue: str = "default") -> None:
        """Register a job kind (built-in or from an extension); `queue` names the device queue."""
        with self._lock:
            self._runners[kind] = (runner, queue)
            self._queues.setdefault(queue, collections.deque())
            self._current.setdefault(queue, None)

    def kinds(self) -> list[str]:
        return sorted(self._runners)

    # -- submission ---------------------------------------------------
    def submit(self, kind: str, request: Any) -> Job:
        if kind not in self._runners:
            raise NotFound(f"unknown job kind {kind!r}", "kind")
        _, queue = self._runners[kind]
        job = Job(kind=kind, request=request, queue=queue)
        with self._lock:
            if self._stopping:
                raise AtelierError("the studio is shutting down", None)
            self._jobs[job.id] = job
            while len(self._jobs) > self._history:
                oldest_id, oldest = next(iter(self._jobs.items()))
                if not oldest.state.finished:
                    break
                self._jobs.pop(oldest_id)
            self._queues[queue].append(job)
            self._ensure_worker(queue)
            self._lock.notify_all()
        return job

    def run(self, kind: str, request: Any, timeout: float | None = None) -> Job:
        """Submit and wait: the convenience the API and tests use."""
        return self.submit(kind, request).wait(timeout)

    # -- inspection ---------------------------------------------------
    def get(self, job_id: str) -> Job:
        job = self._jobs.get(job_id)
        if job is None:
            raise NotFound(f"no job with id {job_id!r}", "id")
        return job

    def current(self, queue: str = "default") -> Job | None:
        return self._current.get(queue)

    def last(self) -> Job | None:
        """The running job if any, else the most recently submitted one."""
        for job in self._current.values():
            if job is not None:
                return job
        return next(reversed(self._jobs.values()), None) if self._jobs else None

    def pending(self, queue: str = "default") -> int:
        with self._lock:
            return len(self._queues.get(queue, ()))

    # -- control ------------------------------------------------------
    def interrupt(self, job_id: str | None = None) -> list[Job]:
        """Interrupt one job, or (no id) every running job. Queued ones are cancelled."""
        targets = [self.get(job_id)] if job_id else [j for j in self._current.values() if j]
        for job in targets:
            job.interrupt_requested = True
            job._touch()
        return targets

    def skip(self, job_id: str | None = None) -> list[Job]:
        targets = [self.get(job_id)] if job_id else [j for j in self._current.values() if j]
        for job in targets:
            if job.state == JobState.RUNNING:
                job.skip_requested = True
                job._touch()
        return targets

    def shutdown(self, timeout: float = 5.0) -> None:
        with self._lock:
            self._stopping = True
            self._lock.notify_all()
        for job in list(self._current.values()):
            if job:
                job.interrupt_requested = True
        for worker in self._workers.values():
            worker.join(timeout)

    # -- the workers --------------------------------------------------
    def _ensure_worker(self, queue: str) -> None:
        worker = self._workers.get(queue)
        if worker is None or not worker.is_alive():
            worker = threading.Thread(target=self._work, args=(queue,), name=f"atelier-jobs-{queue}", daemon=True)
            self._workers[queue] = worker
            worker.start()

    def _next(self, queue: str) -> Job | None:
        with self._lock:
            while not self._queues[queue] and not self._stopping:
                self._lock.wait()
            if self._stopping:
                return None
            job = self._queues[queue].popleft()
            self._current[queue] = job
            return job

    def _work(self, queue: str) -> None:
        while True:
            job = self._next(queue)
            if job is None:
                return
            try:
                self._execute(job)
            finally:
                with self._lock:
                    self._current[queue] = None

    def _execute(self, job: Job) -> None:
        if job.interrupt_requested:
            self._finish(job, JobState.CANCELLED)
            return
        runner, _ = self._runners[job.kind]
        job.state = JobState.RUNNING
        job.started_at = time.time()
        job._touch()
        try:
            job.result = runner(JobContext(job, self), job.request)
        except AtelierError as exc:
            job.error, job.error_field, job.error_status = exc.message, exc.field, exc.status
            log.warning("job %s (%s) failed: %s", job.id, job.kind, exc)
            self._finish(job, JobState.FAILED)
            return
        except Exception as exc:  # the job boundary: a machine error never takes the server down
            job.error = f"{type(exc).__name__}: {exc}"
            log.error("job %s (%s) crashed:\n%s", job.id, job.kind, traceback.format_exc())
            self._finish(job, JobState.FAILED)
            return
        self._finish(job, JobState.INTERRUPTED if job.interrupt_requested else JobState.DONE)

    def _finish(self, job: Job, state: JobState) -> None:
        job.finished_at = time.time()
        job.state = state
        job._touch()

"""The job engine: every heavy operation (generation, chat, vision, training) is a Job.

A job kind is registered once (`JobKind`: runner, queue, validation, exclusivity,
persistence). Each queue has one FIFO and one worker thread, so kinds on different queues
run side by side (a chat reply while an image batch renders); whether their models fit
together is the model manager's call, not the engine's. An exclusive kind (training)
takes the whole device: it waits for running jobs to finish and holds new ones back.
With several devices (a DevicePool, pool.py), a device-bound queue (its kinds have a
`model_key`) has one worker per device instead, and a job goes where its model is.

A job carries progress (step/total/ETA), an optional preview (throttled: readers see
the latest), an append-only stream of pieces (tokens: every reader sees every piece, in
order, through its own cursor), metric series (loss, learning rate), log lines and a
result. Interrupt stops after the current step and keeps what is done; skip drops the
current item of a batch. Runners write results to disk before returning, so "done"
means "on disk".
"""
from __future__ import annotations

import collections
import contextlib
import logging
import threading
import time
import traceback
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from modules.errors import AtelierError, NotFound
from modules.jobs.context import JobContext
from modules.jobs.gate import DeviceGate
from modules.jobs.job import Job, JobKind, JobState, Runner
from modules.jobs.pool import DevicePool, pick

if TYPE_CHECKING:
    from modules.jobs.store import JobStore

log = logging.getLogger("atelier.jobs")

POOL_POLL_S = 0.2  # a pooled worker looks again this often: where models are can change without a job ending

WorkerKey = tuple[str, "str | None"]  # (queue, device lane); lane None: the queue's one worker


class JobEngine:
    """Queues, one worker thread each (one per device for a device-bound queue with a pool); kinds by name."""

    def __init__(self, history: int = 500, store: "JobStore | None" = None):
        self._kinds: dict[str, JobKind] = {}
        self._services: dict[str, Any] = {}  # owner -> what that owner's runners see as ctx.services
        self._queues: dict[str, collections.deque[Job]] = {}
        self._current: dict[WorkerKey, Job | None] = {}
        self._jobs: collections.OrderedDict[str, Job] = collections.OrderedDict()
        self._history = history
        self._lock = threading.Condition()
        self._workers: dict[WorkerKey, threading.Thread] = {}
        self._pool: DevicePool | None = None
        self._stopping = False
        self._gate = DeviceGate()
        self._store = store
        self._stored: list[dict] = store.load_all() if store is not None else []  # long jobs of earlier runs

    # -- registration -------------------------------------------------
    def add_kind(self, kind: JobKind, services: Any = None) -> None:
        """Register a job kind (a task's or an extension's). `services` is what its runner's
        ctx.services holds (the task's narrow view of the studio)."""
        with self._lock:
            self._kinds[kind.name] = kind
            self._services[kind.name] = services
            self._queues.setdefault(kind.queue, collections.deque())

    def register_kind(self, kind: str, runner: Runner, queue: str = "default", **options) -> None:
        """Shorthand for add_kind(JobKind(kind, runner, queue, …))."""
        services = options.pop("services", None)
        self.add_kind(JobKind(kind, runner, queue, **options), services)

    def remove_kind(self, kind: str) -> None:
        with self._lock:
            self._kinds.pop(kind, None)
            self._services.pop(kind, None)

    def kinds(self) -> list[str]:
        return sorted(self._kinds)

    def use_pool(self, pool: DevicePool) -> None:
        """Several devices: device-bound queues get one worker per device from now on (the studio's start-up)."""
        with self._lock:
            self._pool = pool
            for queue in [q for q in self._queues if self._pooled(q) and self._queues[q]]:
                self._ensure_worker(queue)
            self._lock.notify_all()  # a queue's single worker ends once it is idle; the device workers take over

    def _pooled(self, queue: str) -> bool:
        return self._pool is not None and any(k.queue == queue and k.model_key is not None
                                              for k in self._kinds.values())

    def services_of(self, kind: str) -> Any:
        """What `kind`'s runners see as ctx.services (e.g. the chat task's conversation store, for its tab)."""
        self.kind(kind)
        return self._services.get(kind)

    def kind(self, name: str) -> JobKind:
        if name not in self._kinds:
            raise NotFound(f"unknown job kind {name!r}; known: {', '.join(self.kinds())}", "kind")
        return self._kinds[name]

    # -- submission ---------------------------------------------------
    def submit(self, kind: str, request: Any) -> Job:
        spec = self.kind(kind)
        if spec.parse is not None:
            request = spec.parse(request)  # raises InvalidRequest naming the field
        if spec.validate is not None:
            spec.validate(request)  # raises AtelierError naming the field; nothing is queued
        job = Job(kind=kind, request=request, queue=spec.queue)
        if self._pool is not None and spec.model_key is not None:
            job.model_key = spec.model_key(request)
        with self._lock:
            if self._stopping:
                raise AtelierError("the studio is shutting down", None)
            self._jobs[job.id] = job
            self._trim_history()
            self._queues[spec.queue].append(job)
            self._ensure_worker(spec.queue)
            self._lock.notify_all()
        self._persist(job)
        return job

    def _trim_history(self) -> None:
        while len(self._jobs) > self._history:
            oldest_id, oldest = next(iter(self._jobs.items()))
            if not oldest.state.finished:
                break
            self._jobs.pop(oldest_id)

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
        """The running job of `queue` (with one worker per device: the first device's that runs one)."""
        for (name, _lane), job in list(self._current.items()):
            if job is not None and name == queue:
                return job
        return None

    def on_devices(self, queue: str) -> dict[str, Job | None]:
        """Each pool device's running job of `queue` (None: idle); empty when the queue has one worker."""
        if not self._pooled(queue):
            return {}
        return {lane: self._current.get((queue, lane)) for lane in self._pool.lanes}

    def last(self, queue: str | None = None) -> Job | None:
        """The running job (of `queue`, or of any) if any, else the most recently submitted one."""
        for (name, _lane), job in list(self._current.items()):
            if job is not None and queue in (None, name):
                return job
        for job in reversed(list(self._jobs.values())):
            if queue in (None, job.queue):
                return job
        return None

    def pending(self, queue: str | None = None) -> int:
        """Jobs waiting (not running) in `queue`, or in every queue."""
        with self._lock:
            if queue is not None:
                return len(self._queues.get(queue, ()))
            return sum(len(q) for q in self._queues.values())

    def listing(self, kind: str | None = None) -> list[dict]:
        """The jobs of long (persisted) kinds: this run's and earlier runs', newest first."""
        live = [j.snapshot() | _record_extras(j) for j in list(self._jobs.values())
                if j.kind in self._kinds and self._kinds[j.kind].persist]
        seen = {r["id"] for r in live}
        rows = live + [r for r in self._stored if r["id"] not in seen]
        rows = [r for r in rows if kind in (None, r["kind"])]
        return sorted(rows, key=lambda r: r.get("created_at") or 0, reverse=True)

    # -- control ------------------------------------------------------
    def interrupt(self, job_id: str | None = None) -> list[Job]:
        """Interrupt one job, or (no id) every running job. Queued ones are cancelled."""
        targets = [self.get(job_id)] if job_id else [j for j in list(self._current.values()) if j]
        for job in targets:
            job.interrupt_requested = True
            job._touch()
        return targets

    def skip(self, job_id: str | None = None) -> list[Job]:
        targets = [self.get(job_id)] if job_id else [j for j in list(self._current.values()) if j]
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
                job._touch()
        for worker in list(self._workers.values()):
            worker.join(timeout)

    # -- the workers --------------------------------------------------
    def _ensure_worker(self, queue: str) -> None:
        for lane in self._pool.lanes if self._pooled(queue) else (None,):
            key = (queue, lane)
            worker = self._workers.get(key)
            if worker is None or not worker.is_alive():
                name = f"atelier-jobs-{queue}" + (f"@{lane}" if lane else "")
                worker = threading.Thread(target=self._work, args=(queue, lane), name=name, daemon=True)
                self._workers[key] = worker
                self._current.setdefault(key, None)
                worker.start()

    def _next(self, queue: str, lane: str | None) -> Job | None:
        with self._lock:
            while not self._stopping:
                if lane is None and self._pooled(queue):
                    return None  # a pool came after this worker started: the device workers take over
                job = self._pick(queue, lane)
                if job is not None:
                    self._queues[queue].remove(job)
                    job.device = lane
                    self._current[(queue, lane)] = job
                    return job
                self._lock.wait(POOL_POLL_S if lane is not None else None)
            return None

    def _pick(self, queue: str, lane: str | None) -> Job | None:
        queued = self._queues[queue]
        if lane is None:
            return queued[0] if queued else None
        busy = {job.model_key: running_lane for (name, running_lane), job in self._current.items()
                if name == queue and job is not None and job.model_key is not None}
        idle = {running_lane for (name, running_lane), job in self._current.items()
                if name == queue and running_lane is not None and job is None} | {lane}
        return pick(queued, lane, busy, idle, self._pool)

    def _work(self, queue: str, lane: str | None) -> None:
        while True:
            job = self._next(queue, lane)
            if job is None:
                return
            try:
                with self._pool.bind(lane) if lane is not None else contextlib.nullcontext():
                    self._execute(job)
            finally:
                with self._lock:
                    self._current[(queue, lane)] = None
                    self._lock.notify_all()  # a device is free, and its model may be what a queued job waits for

    def _execute(self, job: Job) -> None:
        if job.interrupt_requested:
            self._finish(job, JobState.CANCELLED)
            return
        spec = self._kinds.get(job.kind)
        if spec is None:  # its extension was disabled while the job waited
            job.error, job.error_field, job.error_status = f"the job kind {job.kind!r} is gone", "kind", 404
            self._finish(job, JobState.FAILED)
            return
        if spec.prepare is not None and not self._prepare(job, spec):
            return
        if not spec.exclusive and self._gate.held_exclusively():
            job.progress.text = "waiting: a training job has the device; this starts when it ends"
            job._touch()
        with self._gate.enter(spec.exclusive, lambda: job.interrupt_requested):
            if job.interrupt_requested:  # stopped while waiting for the device
                self._finish(job, JobState.CANCELLED)
                return
            self._run(job, spec)

    def _prepare(self, job: Job, spec: JobKind) -> bool:
        """The kind's step before the device gate; False when the job ended there (failed or stopped)."""
        if not self._call(job, spec, spec.prepare):
            return False
        if job.interrupt_requested:
            self._finish(job, JobState.INTERRUPTED)
            return False
        return True

    def _run(self, job: Job, spec: JobKind) -> None:
        if self._call(job, spec, spec.runner):
            self._finish(job, JobState.INTERRUPTED if job.interrupt_requested else JobState.DONE)

    def _call(self, job: Job, spec: JobKind, runner: Runner) -> bool:
        """Run one step of the job (its result kept); False when it failed (the job is finished as failed)."""
        if job.state != JobState.RUNNING:
            job.state = JobState.RUNNING
            job.started_at = time.time()
            job._touch()
            self._persist(job)
        watcher = _Persister(self, job) if spec.persist and self._store is not None else None
        try:
            job.result = runner(JobContext(job, self._services.get(job.kind)), job.request)
        except AtelierError as exc:
            job.error, job.error_field, job.error_status = exc.message, exc.field, exc.status
            log.warning("job %s (%s) failed: %s", job.id, job.kind, exc)
            self._finish(job, JobState.FAILED)
            return False
        except Exception as exc:  # the job boundary: a machine error never takes the server down
            job.error = f"{type(exc).__name__}: {exc}"
            log.error("job %s (%s) crashed:\n%s", job.id, job.kind, traceback.format_exc())
            self._finish(job, JobState.FAILED)
            return False
        finally:
            if watcher is not None:
                watcher.stop()
        return True

    def _finish(self, job: Job, state: JobState) -> None:
        job.finished_at = time.time()
        job.state = state
        job._touch()
        self._persist(job)

    # -- persistence of long kinds ---------------------------------------
    def _persist(self, job: Job) -> None:
        spec = self._kinds.get(job.kind)
        if self._store is None or spec is None or not spec.persist:
            return
        try:
            self._store.save(job.snapshot() | _record_extras(job))
        except OSError as exc:  # a full disk must not fail the job itself
            log.warning("could not save job %s: %s", job.id, exc)


def _record_extras(job: Job) -> dict:
    """What a persisted record holds beyond the snapshot: metric series, the result's paths, the request."""
    with job._cond:
        metrics = {name: [list(p) for p in series] for name, series in job.metrics.items()}
    result = job.result if isinstance(job.result, (dict, list, str, int, float, type(None))) else str(job.result)
    request = job.request
    if isinstance(request, BaseModel):
        request = request.model_dump(mode="json", exclude_none=True)
    elif not isinstance(request, (dict, list, str, int, float, type(None))):
        request = str(request)
    return {"metrics": metrics, "result": result, "request": request, "files": list(job.files)}


class _Persister:
    """Saves a long job's record every few seconds while it runs (progress survives a kill)."""

    INTERVAL_S = 5.0

    def __init__(self, engine: JobEngine, job: Job):
        self._engine, self._job = engine, job
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"atelier-persist-{job.id}", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.INTERVAL_S):
            self._engine._persist(self._job)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2)

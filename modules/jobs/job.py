"""A job and what it carries: state, progress, the latest preview, an append-only stream,
metric series, log lines, files and the result; JobKind says what a kind needs from the engine."""
from __future__ import annotations

import collections
import threading
import time
import uuid
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any, Callable

from modules.errors import AtelierError

if TYPE_CHECKING:
    from modules.jobs.context import JobContext

LOG_LINES_KEPT = 2000  # a training log can run for hours; the newest lines are what a reader wants


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


Runner = Callable[["JobContext", Any], Any]


@dataclass(frozen=True)
class JobKind:
    """What a kind of job needs from the engine; tasks and extensions register these."""

    name: str
    runner: Runner
    queue: str = "default"  # one worker per queue: kinds on different queues run side by side
    validate: Callable[[Any], None] | None = None  # refuses a bad request at submit, before it waits in a queue
    exclusive: bool = False  # takes the whole device (training): waits for others, holds new ones back
    persist: bool = False  # kept in the job store and listed again after a restart (long jobs)
    owner: str = "studio"
    # A plain dict (another task, an extension, a client submitting by kind name) → the kind's typed request.
    parse: Callable[[Any], Any] | None = None
    # Runs first, with the job running but holding no share of the device: work the job hands to other
    # jobs (DreamBooth's class images, made by txt2img jobs), which an exclusive hold would starve.
    prepare: Runner | None = None
    # The model a job of this kind uses (the manager's model_key), from its request: with several devices
    # the kind's queue has one worker per device and the job goes where that model is (see pool.py).
    model_key: Callable[[Any], Any] | None = None


@dataclass
class Job:
    kind: str
    request: Any
    queue: str = "default"
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:16])
    state: JobState = JobState.QUEUED
    progress: Progress = field(default_factory=Progress)
    preview: Any = None  # the latest preview (a PIL image); readers may miss earlier ones by design
    stream: list = field(default_factory=list)  # append-only pieces; read with a cursor (read_stream)
    metrics: dict = field(default_factory=dict)  # name -> [(step, value), …]
    logs: collections.deque = field(default_factory=lambda: collections.deque(maxlen=LOG_LINES_KEPT))
    files: list = field(default_factory=list)  # paths the job wrote to show (samples), in order
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
    device: str | None = None  # the pool device it runs on, when its queue has one worker per device
    model_key: Any = None  # its kind's model_key of its request (set at submit when there is a pool)
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

    def read_stream(self, cursor: int, timeout: float = 0.0) -> tuple[list, int, bool]:
        """The pieces after `cursor`, the new cursor, and whether the stream has ended.

        Waits up to `timeout` for a new piece. Every reader keeps its own cursor, so two
        readers (an SSE client and the Chat tab) each get the whole sequence in order."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.stream) <= cursor and not self.state.finished:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            pieces = self.stream[cursor:]
            ended = self.state.finished and cursor + len(pieces) == len(self.stream)
            return pieces, cursor + len(pieces), ended

    def details(self, log_lines: int = 200) -> dict:
        """The snapshot plus metric series, the newest log lines, files, the stream's length and the
        result when it is plain JSON (a training's paths; an image job's result is not)."""
        with self._cond:
            return self.snapshot() | {
                "metrics": {name: [list(p) for p in series] for name, series in self.metrics.items()},
                "log": list(self.logs)[-log_lines:], "files": list(self.files), "stream_length": len(self.stream),
                "result": self.result if isinstance(self.result, (dict, list, str, int, float)) else None}

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
            "device": self.device,
            "error": self.error,
            "created_at": self.created_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
        }

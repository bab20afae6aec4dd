"""What a running job sees: progress, preview, stream, metrics, log, interrupt — and the
services its task registered, never the Studio."""
from __future__ import annotations

from typing import Any

from modules.jobs.job import Job

class JobContext:
    """What a running job sees: progress, preview, stream, metrics, log, interrupt — and the
    services its task was registered with (models, outputs, settings…), never the Studio."""

    def __init__(self, job: Job, services: Any = None):
        self.job = job
        self.services = services

    # -- stop requests ----------------------------------------------------
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

    # -- reporting --------------------------------------------------------
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

    def emit(self, piece: Any) -> None:
        """Append one piece to the job's stream (a token, a JSON event); never dropped."""
        with self.job._cond:
            self.job.stream.append(piece)
        self.job._touch()

    def metric(self, name: str, value: float, step: int) -> None:
        with self.job._cond:
            self.job.metrics.setdefault(name, []).append((int(step), float(value)))
        self.job._touch()

    def log(self, line: str) -> None:
        with self.job._cond:
            self.job.logs.append(str(line).rstrip("\n"))
        self.job._touch()

    def preview_path(self, path: str) -> None:
        """A file the job wrote to show (a training sample): listed in `job.files`, shown as the preview."""
        from PIL import Image

        with self.job._cond:
            self.job.files.append(str(path))
        try:
            with Image.open(path) as image:
                self.preview(image.copy())
        except OSError:  # not an image (a sample reply, a checkpoint): listed only
            self.job._touch()

    def run_child(self, target: str, request: dict, **options) -> Any:
        """Run `target` ("package.module:function") in a child process with this job's events relayed;
        see modules/jobs/child.py (launcher, memory_limit_mb, stop_grace_s, env, cwd)."""
        from modules.jobs.child import run_in_child

        return run_in_child(self, target, request, **options)

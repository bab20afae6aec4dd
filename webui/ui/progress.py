"""Following a running Job from a Gradio generator: throttled snapshots and the progress bar.

The engine may report hundreds of steps a second; the browser gets at most
`ui_updates_per_second` updates, so it never falls behind (A1111's UI lags here).
"""
from __future__ import annotations

import html
import time
from dataclasses import dataclass
from typing import Any, Iterator

from modules.jobs import Job, JobState


@dataclass
class Snapshot:
    """What the UI shows of a job at one moment."""

    state: JobState
    step: int
    total: int
    part: int
    parts: int
    fraction: float
    eta: float | None
    text: str
    preview: Any  # PIL image or None
    finished: bool
    device: str | None = None  # the device it runs on, with several (`--device cuda` on a multi-GPU machine)


def snapshot(job: Job) -> Snapshot:
    p = job.progress
    return Snapshot(state=job.state, step=p.step, total=p.total, part=p.part, parts=p.parts,
                    fraction=p.fraction, eta=job.eta, text=p.text, preview=job.preview,
                    finished=job.state.finished, device=job.device)


def follow(job: Job, updates_per_second: float = 5.0, clock=time.monotonic) -> Iterator[Snapshot]:
    """Yield snapshots as the job changes, never faster than `updates_per_second`; the last is final."""
    interval = 1.0 / max(0.1, updates_per_second)
    version = -1
    last_sent = 0.0
    while True:
        version = job.wait_for_change(version, timeout=interval)
        if job.state.finished:
            yield snapshot(job)
            return
        wait = interval - (clock() - last_sent)
        if wait > 0:
            # Too soon: sleep the rest of the interval (the job keeps running), then send the newest state.
            job.wait(wait)
            if job.state.finished:
                continue
        last_sent = clock()
        version = job.version
        yield snapshot(job)


def _eta_text(eta: float | None) -> str:
    if eta is None:
        return ""
    eta = int(round(eta))
    return f"ETA {eta // 60}m {eta % 60:02d}s" if eta >= 60 else f"ETA {eta}s"


def devices_text(by_device: dict[str, Job | None]) -> str:
    """Each device's job, with several (`cuda:0: step 3/20 · cuda:1: idle`); empty with one device."""
    rows = []
    for device, job in by_device.items():
        if job is None:
            rows.append(f"{device}: idle")
        else:
            p = job.progress
            rows.append(f"{device}: {job.kind} step {p.step}/{p.total}" if p.total else f"{device}: {job.kind}")
    return " · ".join(rows)


def progress_html(s: Snapshot | None, message: str = "", devices: str = "") -> str:
    """A calm one-line bar: `Step 3/20 · batch 1/2 · ETA 4s`; `devices` (devices_text) below it while queued."""
    if s is None:
        if not message:
            return "<div class='atelier-progress idle'></div>"
        return f"<div class='atelier-progress'><div class='atelier-progress-text'>{html.escape(message)}</div></div>"
    if s.state == JobState.QUEUED:
        label = message or "Waiting in the queue…"
        if devices:
            label += f" ({devices})"
        pct = 0.0
    else:
        parts = [f"Step {s.step}/{s.total}" if s.total else "Starting…"]
        if s.parts > 1:
            parts.append(f"batch {min(s.part + 1, s.parts)}/{s.parts}")
        if s.text:
            parts.append(s.text)
        if s.device:
            parts.append(f"on {s.device}")
        eta = _eta_text(s.eta) if not s.finished else ""
        if eta:
            parts.append(eta)
        label = message or " · ".join(parts)
        pct = 100.0 * (1.0 if s.state == JobState.DONE else s.fraction)
    return (
        "<div class='atelier-progress'>"
        f"<div class='atelier-progress-bar'><div class='atelier-progress-fill' style='width:{pct:.1f}%'></div></div>"
        f"<div class='atelier-progress-text'>{html.escape(label)}</div></div>"
    )

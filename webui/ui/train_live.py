"""The Train tab's live panel: one training job as the person watches it — step / total with ETA, the
kind's two plots of its metric series (loss and learning rate for the built-in kinds; an extension's kind
names its own, e.g. YOLO's losses and mAP per epoch; a series per metric), the sample images as they are written, the
log, and what the end left (the LoRA, or the checkpoint a Stop saved). Updates are throttled by
progress.follow (the settings' ui_updates_per_second); a plot or the gallery is re-sent only when
it has new points or files."""
from __future__ import annotations

import html
from dataclasses import dataclass, field
from typing import Iterator

from modules.jobs import Job, JobState
from modules.training.kinds import DEFAULT_PLOTS
from webui.ui.progress import follow, progress_html, snapshot

LOG_LINES = 200


@dataclass
class Sent:
    """What this browser already has (so unchanged plots and galleries are not sent again)."""

    points: dict = field(default_factory=dict)  # metric -> how many points
    files: int = -1


def series_frame(points: list, series: str = "") -> "object":
    import pandas as pd

    return pd.DataFrame({"step": [int(p[0]) for p in points], "value": [float(p[1]) for p in points],
                         "series": [series] * len(points)})


def plot_frame(metrics: dict, names: tuple[str, ...]) -> "object":
    """One plot's series side by side (a line per metric, told apart by "series"); None while it has no point
    (an empty frame would fix the plot's colour domain to no series, and no line would ever be drawn)."""
    import pandas as pd

    frames = [series_frame(metrics[name], name) for name in names if metrics.get(name)]
    return pd.concat(frames, ignore_index=True) if frames else None


def metrics_line(metrics: dict, names: tuple[str, ...] = ("loss", "lr")) -> str:
    parts = []
    for name in names:
        points = metrics.get(name) or []
        if points:
            step, value = points[-1]
            parts.append(f"{name} {value:.4g} (step {int(step)})")
    if not parts:
        return "No metrics yet."
    return " · ".join(parts) + f" · {len(metrics.get(names[0]) or [])} {names[0]} points"


def result_text(job: Job) -> str:
    """The end of a job in one paragraph: the output, or where a Stop left the run, or the error."""
    r = job.result if isinstance(job.result, dict) else {}
    if job.state == JobState.FAILED:
        where = f"{job.error_field}: " if job.error_field else ""
        return f"⚠️ Training failed: {where}{job.error}"
    if job.state == JobState.CANCELLED:
        return "Cancelled before it started."
    if job.state == JobState.INTERRUPTED:
        saved = f" Checkpoint saved: `{r['checkpoint']}`." if r.get("checkpoint") else " No checkpoint was saved."
        return (f"⏹ Stopped at step {r.get('steps', job.progress.step)} of {r.get('total_steps', job.progress.total)}."
                f"{saved} Resume it from the runs list.")
    if job.state == JobState.DONE:
        speed = f" ({r['steps_per_s']:.2f} steps/s)" if r.get("steps_per_s") else ""
        out = f" Saved `{r['output']}`." if r.get("output") else ""
        if r.get("outcome") == "stopped":  # stop_after_steps: ended with a checkpoint, as Stop does
            out = f" Stopped as asked; checkpoint `{r.get('checkpoint')}`."
        return f"✅ Done: {r.get('steps', job.progress.step)} steps{speed}.{out}"
    return f"Running: {html.escape(job.kind)} ({job.id})" if job.state == JobState.RUNNING else "Waiting in the queue…"


def panel(job: Job, sent: Sent, skip, plots=DEFAULT_PLOTS) -> tuple:
    """(progress, metrics line, first plot, second plot, samples, log, result) for `job` now; `skip` (gr.skip)
    stands for an output that has not changed; `plots` the kind's (title, metric names) pairs."""
    d = job.details(log_lines=LOG_LINES)
    metrics = d["metrics"]
    frames = []
    for _, names in plots:
        count = sum(len(metrics.get(name) or []) for name in names)
        if count != sent.points.get(names):
            sent.points[names] = count
            frames.append(plot_frame(metrics, names))
        else:
            frames.append(skip())
    files = d["files"]
    gallery = skip()
    if len(files) != sent.files:
        sent.files = len(files)
        gallery = list(files)
    shown = tuple(name for _, names in plots for name in names)
    return (progress_html(snapshot(job)), metrics_line(metrics, shown), *frames, gallery, "\n".join(d["log"]),
            result_text(job))


def watch(job: Job, updates_per_second: float, skip, plots=DEFAULT_PLOTS) -> Iterator[tuple]:
    """The panel, again each time the job changes (throttled), until it ends; the last is final."""
    sent = Sent()
    yield panel(job, sent, skip, plots)
    for _ in follow(job, updates_per_second):
        yield panel(job, sent, skip, plots)

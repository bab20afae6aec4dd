"""The training kinds the Train tab, POST /atelier/v1/train and the training job read: one registry for the
built-in kinds (modules/training/task.py adds them) and the kinds extensions add (api.add_training_kind).

A kind is its typed request (the Train tab's form is built from it), its check (the data dir and the device,
at submit and again when the job starts), its child-process entry (where the training runs: under accelerate
with the studio's Python, or with an extension's own interpreter), the metrics its live plots show, and
what runs in the server once the child returned (an extension trusting the weights it made). No torch here.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from modules.errors import InvalidRequest

if TYPE_CHECKING:
    from modules.training.params import BaseTrainingRequest, Checked
    from modules.training.task import TrainingServices

# The live panel's two plots for the built-in kinds: (title, metric names drawn in it).
DEFAULT_PLOTS: tuple[tuple[str, tuple[str, ...]], ...] = (("loss", ("loss",)), ("learning rate", ("lr",)))


@dataclass(frozen=True)
class TrainingKindSpec:
    kind: str
    request: type["BaseTrainingRequest"]
    check: Callable[["BaseTrainingRequest", "TrainingServices", bool], "Checked"]
    child: str  # "package.module:function" or "/abs/path/file.py:function": train(ctx, child_request) -> dict
    python: Path | None = None  # None: the studio's Python under `accelerate launch`; else this interpreter alone
    plots: tuple[tuple[str, tuple[str, ...]], ...] = DEFAULT_PLOTS
    layout: dict[str, tuple[str, ...]] = field(default_factory=dict)  # form group -> field names (train_form)
    env: dict[str, str] = field(default_factory=dict)  # the child's extra environment
    finish: Callable[[dict], None] | None = None  # in the server, with the child's result, before the refresh
    prepare: Callable | None = None  # the job kind's prepare step (DreamBooth's class images)
    stop_grace_s: float = 10.0  # after Stop, how long the child may take to save and return before SIGTERM
    owner: str = "builtin"

    @property
    def metric_names(self) -> tuple[str, ...]:
        return tuple(name for _, names in self.plots for name in names)


class TrainingKindRegistry:
    def __init__(self):
        self._kinds: dict[str, TrainingKindSpec] = {}
        self._lock = threading.Lock()

    def add(self, spec: TrainingKindSpec) -> None:
        with self._lock:
            existing = self._kinds.get(spec.kind)
            if existing is not None and existing.owner != spec.owner:
                raise ValueError(f"training kind {spec.kind!r} already belongs to {existing.owner}")
            self._kinds[spec.kind] = spec

    def remove_owner(self, owner: str) -> list[str]:
        with self._lock:
            gone = [k for k, v in self._kinds.items() if v.owner == owner]
            for kind in gone:
                del self._kinds[kind]
            return gone

    def get(self, kind: Any) -> TrainingKindSpec:
        with self._lock:
            spec = self._kinds.get(kind) if isinstance(kind, str) else None
            if spec is None:
                raise InvalidRequest(f"unknown training kind {kind!r}; known: {', '.join(self._kinds)}", "kind")
            return spec

    def names(self) -> list[str]:
        with self._lock:
            return list(self._kinds)

    def models(self) -> dict[str, type["BaseTrainingRequest"]]:
        with self._lock:
            return {k: v.request for k, v in self._kinds.items()}


@dataclass(frozen=True)
class TrainingInputs:
    """What an extension's training check found (api.types.TrainingInputs); the studio adds the output-name
    check, the run folder and the step math (modules/training/params.py checked_from)."""

    dataset_dir: Path  # the dataset folder, inside the data dir
    images: list[tuple[str, int, int]]  # (path relative to dataset_dir, width, height) of each training image
    output: Path  # the result's file, inside a models folder
    base: dict  # {"name": …} (and "path" when it is a file) of the base model
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, why) the check left out
    extra: dict = field(default_factory=dict)  # JSON-able: what the child process needs beside the request

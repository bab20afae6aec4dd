"""A training run's folder, `training/<run name>/`:

    request.json            the request as submitted (a resume must match it)
    run.json                what the studio resolved: base model (name, path, hash), dataset, step math
    checkpoints/step-000120/  the full state (accelerate's save_state: LoRA weights, optimizer, scheduler,
                            RNG; trainer_state.json: step, epoch, data order), written whole or not at all
    samples/step-000120-0.png
    logs/train.log          (and TensorBoard event files when tensorboard is installed)

No torch here: the server prepares the folder, the training process fills it.
"""
from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from modules import atomic

_STEP_DIR = re.compile(r"^step-(\d+)$")
TEMP_PREFIX = "."  # a checkpoint being written is `.step-000120.tmp`, renamed when complete


@dataclass(frozen=True)
class RunFolder:
    root: Path

    @property
    def name(self) -> str:
        return self.root.name

    @property
    def request_file(self) -> Path:
        return self.root / "request.json"

    @property
    def info_file(self) -> Path:
        return self.root / "run.json"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def samples(self) -> Path:
        return self.root / "samples"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    def prepare(self, request: dict, info: dict, fresh: bool) -> None:
        """Create (or, when `fresh`, recreate) the folder and write the request and run info."""
        if fresh and self.root.exists():
            shutil.rmtree(self.root)
        for folder in (self.checkpoints, self.samples, self.logs):
            folder.mkdir(parents=True, exist_ok=True)
        for stale in self.checkpoints.glob(TEMP_PREFIX + "step-*"):  # a checkpoint a crash left half-written
            shutil.rmtree(stale, ignore_errors=True)
        atomic.write_json(self.request_file, request)
        atomic.write_json(self.info_file, info)

    def checkpoint_dir(self, step: int) -> Path:
        return self.checkpoints / f"step-{step:06d}"

    def temp_checkpoint_dir(self, step: int) -> Path:
        return self.checkpoints / f"{TEMP_PREFIX}step-{step:06d}.tmp"

    def checkpoint_list(self) -> list[tuple[int, Path]]:
        """Complete checkpoints, oldest first."""
        if not self.checkpoints.is_dir():
            return []
        found = [(int(m.group(1)), p) for p in self.checkpoints.iterdir() if (m := _STEP_DIR.match(p.name))]
        return sorted(found)

    def latest_checkpoint(self) -> Path | None:
        listed = self.checkpoint_list()
        return listed[-1][1] if listed else None

    def publish_checkpoint(self, temp: Path, step: int) -> Path:
        """The rename that makes a written checkpoint visible, whole (a same-step one is replaced)."""
        return atomic.replace_dir(temp, self.checkpoint_dir(step))

    def prune(self, keep: int) -> None:
        for _, path in self.checkpoint_list()[:-keep]:
            shutil.rmtree(path, ignore_errors=True)

    def sample_path(self, step: int, index: int) -> Path:
        return self.samples / f"step-{step:06d}-{index}.png"

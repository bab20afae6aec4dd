"""The "yolo" model kind for Atelier's model manager: .pt (after trust), .onnx, counted in the one
memory budget like every other model. Ultralytics is imported only when a model loads."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

from .trust import PICKLE_SUFFIXES, NotTrusted, TrustStore, sha256_of

TASK_NAMES = ("detect", "segment", "pose", "classify")


class YoloAdapter:
    """ModelAdapter (modules/models/adapters.py) for ultralytics YOLO files in models/yolo."""

    def __init__(self, trust: TrustStore, work_dir: Path, types):
        self.trust, self.work_dir = trust, Path(work_dir)
        self.invalid, self.loaded_record = types.InvalidRequest, types.Loaded

    def residency(self, settings) -> dict:
        return {}

    def load(self, actx, entry, options):
        Loaded = self.loaded_record
        path = Path(entry.path)
        suffix = path.suffix.lower()
        device = actx.device.name
        if suffix == ".onnx":  # a graph and weights, no code: runs in ONNX Runtime on the CPU
            from ultralytics import YOLO

            model = YOLO(str(path), task=_task_from_name(path.name))
            return Loaded(kind=entry.kind, entry=entry, options=options, handle=model,
                          footprint=path.stat().st_size, device="cpu", movable=False)
        if suffix not in PICKLE_SUFFIXES:
            raise self.invalid(f"{entry.name}: models/yolo takes ultralytics .pt and .onnx files", "model")
        data = path.read_bytes()
        digest = sha256_of(data)
        if not self.trust.trusted(digest):
            raise self.invalid(str(NotTrusted(entry.name, digest)), "model")
        from ultralytics import YOLO

        # Load the very bytes that were hashed (a private copy), so a file swapped after the check never loads.
        self.work_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.work_dir, suffix=suffix)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            model = YOLO(tmp)
        finally:
            os.unlink(tmp)
        model.to(device)
        footprint = sum(t.numel() * t.element_size() for t in (*model.model.parameters(), *model.model.buffers()))
        return Loaded(kind=entry.kind, entry=entry, options=options, handle=model, footprint=int(footprint),
                      device=device, movable=True, extra={"sha256": digest})

    def to(self, actx, loaded, device: str) -> None:
        if not loaded.movable:
            raise self.invalid(f"{loaded.entry.name} runs in ONNX Runtime and stays where it is", "device")
        loaded.handle.to(device)
        loaded.device = device

    def prepare(self, actx, loaded) -> None:
        return None

    def release(self, actx, loaded) -> None:
        loaded.handle = None


def _task_from_name(name: str) -> str:
    """ONNX exports lose the task; ultralytics' file names carry it (yolov8n-seg, -pose, -cls)."""
    lowered = name.lower()
    for marker, task in (("-seg", "segment"), ("-pose", "pose"), ("-cls", "classify")):
        if marker in lowered:
            return task
    return "detect"

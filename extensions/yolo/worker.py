"""The YOLO worker: the only code that imports ultralytics. It runs in a child process of its own
(modules/jobs/worker.py), one per loaded model, under the studio's Python when its torch and
torchvision can run ultralytics, else under this extension's own environment (environment.txt) —
so Ultralytics (AGPL-3.0) and its torch never live in the studio's process, and a crash in them
fails one job, not the studio.

Loaded as a file, not as part of the extension's package: it imports only the standard library,
numpy, PIL and ultralytics. Every method answers JSON. Masks travel as polygons (ultralytics gives
them in original-image pixels, so no letterbox arithmetic); the studio rasterises them (convert.py).
"""
from __future__ import annotations

import os
from pathlib import Path

TASK_BY_SUFFIX = (("-seg", "segment"), ("-pose", "pose"), ("-cls", "classify"))


def task_from_name(name: str) -> str:
    """ONNX exports lose the task; ultralytics' file names carry it (yolov8n-seg, -pose, -cls)."""
    lowered = name.lower()
    for marker, task in TASK_BY_SUFFIX:
        if marker in lowered:
            return task
    return "detect"


class YoloWorker:
    """One model: load it, move it, predict with it."""

    def __init__(self):
        self.model = None
        self.onnx = False

    def load(self, path: str, name: str, device: str) -> dict:
        from ultralytics import YOLO

        self.onnx = Path(name).suffix.lower() == ".onnx" or name.endswith("_openvino_model")
        if self.onnx:  # a graph and weights, no code: ONNX Runtime (or OpenVINO) on the CPU
            self.model = YOLO(path, task=task_from_name(name))
            files = [p for p in Path(path).rglob("*") if p.is_file()] if Path(path).is_dir() else [Path(path)]
            footprint, device = sum(p.stat().st_size for p in files), "cpu"
        else:
            self.model = YOLO(path)
            self.model.to(device)
            net = self.model.model
            footprint = sum(t.numel() * t.element_size() for t in (*net.parameters(), *net.buffers()))
        return {"task": self.model.task, "names": {str(k): v for k, v in (self.model.names or {}).items()},
                "footprint": int(footprint), "device": device, "pid": os.getpid()}

    def to(self, device: str) -> dict:
        self.model.to(device)
        return {"device": device}

    def predict(self, image_path: str, width: int, height: int, options: dict) -> dict:
        from PIL import Image

        with open(image_path, "rb") as f:
            image = Image.frombytes("RGB", (width, height), f.read())
        device = "cpu" if self.onnx else str(next(self.model.model.parameters()).device)
        results = self.model.predict(image, verbose=False, device=device, **options)
        return to_wire(results[0], self.model.task)

    def track(self, image_path: str, width: int, height: int, options: dict, tracker: dict, persist: bool) -> dict:
        """One video frame through ultralytics' tracker (`model.track`; persist=False starts new tracks): the
        tracker settings are written over ultralytics' own bytetrack.yaml / botsort.yaml."""
        import tempfile

        import yaml
        from PIL import Image
        from ultralytics.utils.checks import check_yaml

        with open(image_path, "rb") as f:
            image = Image.frombytes("RGB", (width, height), f.read())
        with open(check_yaml(f"{tracker['tracker_type']}.yaml")) as f:
            config = {**yaml.safe_load(f), **tracker}
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
            yaml.safe_dump(config, f)
        try:
            device = "cpu" if self.onnx else str(next(self.model.model.parameters()).device)
            results = self.model.track(image, persist=persist, tracker=f.name, verbose=False, device=device,
                                       **options)
        finally:
            os.unlink(f.name)
        return to_wire(results[0], self.model.task)


def _array(value):
    import numpy as np

    if value is None:
        return None
    if hasattr(value, "detach"):  # a torch tensor (ultralytics keeps them on the model's device)
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def to_wire(result, task: str) -> dict:
    """One image's ultralytics Results → the vision JSON shape, masks as polygons: {"text", "objects":
    [{"label", "box" (pixels, clipped), "score", "polygon"? [[x, y], …], "keypoints"? [[x, y, conf], …]}],
    "classes"? [{"label", "score"}], "width", "height"}. Only attributes are read, so a look-alike converts too."""
    height, width = (int(v) for v in result.orig_shape)
    names = dict(result.names or {})
    base = {"width": width, "height": height}
    if task == "classify":
        probs = result.probs
        if probs is None:
            return {**base, "text": "", "objects": [], "classes": []}
        top = [int(i) for i in list(probs.top5)]
        conf = [float(c) for c in _array(probs.top5conf)]
        classes = [{"label": names.get(i, str(i)), "score": round(c, 4)} for i, c in zip(top, conf)]
        return {**base, "text": classes[0]["label"] if classes else "", "objects": [], "classes": classes}
    boxes = result.boxes
    if boxes is None:
        return {**base, "text": "", "objects": []}
    xyxy, conf, cls = _array(boxes.xyxy).reshape(-1, 4), _array(boxes.conf).reshape(-1), _array(boxes.cls).reshape(-1)
    ids = getattr(boxes, "id", None)  # track ids, after model.track (None before a track is confirmed)
    ids = _array(ids).reshape(-1) if ids is not None else None
    polygons = list(result.masks.xy) if task == "segment" and result.masks is not None else []
    points = _array(result.keypoints.data) if task == "pose" and result.keypoints is not None else None
    objects = []
    for i in range(len(xyxy)):
        x1, y1, x2, y2 = (float(v) for v in xyxy[i])
        box = [max(0, int(x1)), max(0, int(y1)), min(width, int(round(x2))), min(height, int(round(y2)))]
        obj = {"label": names.get(int(cls[i]), str(int(cls[i]))), "box": box, "score": float(conf[i])}
        if ids is not None:
            obj["track_id"] = int(ids[i])
        if task == "segment":
            polygon = _array(polygons[i]).reshape(-1, 2) if i < len(polygons) else []
            obj["polygon"] = [[float(x), float(y)] for x, y in polygon]
        if points is not None and i < len(points):
            obj["keypoints"] = [[float(p[0]), float(p[1]), float(p[2]) if len(p) > 2 else 1.0] for p in points[i]]
        objects.append(obj)
    counts: dict[str, int] = {}
    for obj in objects:
        counts[obj["label"]] = counts.get(obj["label"], 0) + 1
    return {**base, "text": ", ".join(f"{n} {label}" for label, n in counts.items()), "objects": objects}

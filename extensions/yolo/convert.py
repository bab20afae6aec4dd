"""An ultralytics Results object → the vision JSON shape every detector shares (Atelier's results.py):
pixel boxes of the original image, scores, full-size masks (from the polygons ultralytics gives in
original-image coordinates, so no letterbox arithmetic here), pose keypoints, classes for classify.
Only attributes are read (no ultralytics import), so a look-alike object converts the same way."""
from __future__ import annotations


def _array(value):
    import numpy as np

    if value is None:
        return None
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def to_vision(result, task: str) -> dict:
    """{"text", "objects": […], "classes"?} for `result` (one image's Results) of a detect / segment / pose /
    classify model; boxes in pixels (Atelier adds PaliGemma's bins), masks as bool arrays (it encodes them)."""
    height, width = (int(v) for v in result.orig_shape)
    names = dict(result.names or {})
    if task == "classify":
        probs = result.probs
        if probs is None:
            return {"text": "", "objects": [], "classes": []}
        top = [int(i) for i in list(probs.top5)]
        conf = [float(c) for c in _array(probs.top5conf)]
        classes = [{"label": names.get(i, str(i)), "score": round(c, 4)} for i, c in zip(top, conf)]
        return {"text": classes[0]["label"] if classes else "", "objects": [], "classes": classes}
    boxes = result.boxes
    if boxes is None:
        return {"text": "", "objects": []}
    xyxy, conf, cls = _array(boxes.xyxy).reshape(-1, 4), _array(boxes.conf).reshape(-1), _array(boxes.cls).reshape(-1)
    polygons = list(result.masks.xy) if task == "segment" and result.masks is not None else []
    points = _array(result.keypoints.data) if task == "pose" and result.keypoints is not None else None
    objects = []
    for i in range(len(xyxy)):
        x1, y1, x2, y2 = (float(v) for v in xyxy[i])
        box = [max(0, int(x1)), max(0, int(y1)), min(width, int(round(x2))), min(height, int(round(y2)))]
        obj = {"label": names.get(int(cls[i]), str(int(cls[i]))), "box": box, "score": float(conf[i]), "mask": None}
        if i < len(polygons):
            obj["mask"] = polygon_mask(polygons[i], width, height)
        if points is not None and i < len(points):
            obj["keypoints"] = [[float(p[0]), float(p[1]), float(p[2]) if len(p) > 2 else 1.0] for p in points[i]]
        objects.append(obj)
    counts: dict[str, int] = {}
    for obj in objects:
        counts[obj["label"]] = counts.get(obj["label"], 0) + 1
    return {"text": ", ".join(f"{n} {label}" for label, n in counts.items()), "objects": objects}


def polygon_mask(polygon, width: int, height: int):
    """A polygon (N x 2, pixels) → a bool [height, width] mask."""
    import numpy as np
    from PIL import Image, ImageDraw

    canvas = Image.new("1", (width, height), 0)
    pts = [(float(x), float(y)) for x, y in _array(polygon).reshape(-1, 2)]
    if len(pts) >= 3:
        ImageDraw.Draw(canvas).polygon(pts, fill=1)
    return np.asarray(canvas, dtype=bool)

"""The worker's answer (worker.py `to_wire`: the vision JSON shape with masks as polygons) → what a vision
task answers Atelier (results.py): the same dict with each polygon drawn into a full-size bool mask.
Runs in the studio's process: numpy and PIL only, never ultralytics."""
from __future__ import annotations


def to_vision(wire: dict) -> dict:
    """{"text", "objects": [{"label", "box", "score", "mask"?, "keypoints"?}], "classes"?} for Atelier, which
    adds PaliGemma's bins, encodes the masks as COCO RLE and draws the overlay."""
    width, height = int(wire["width"]), int(wire["height"])
    objects = []
    for raw in wire.get("objects", []):
        obj = {key: value for key, value in raw.items() if key != "polygon"}
        obj["mask"] = polygon_mask(raw["polygon"], width, height) if "polygon" in raw else None
        objects.append(obj)
    out = {"text": wire.get("text", ""), "objects": objects}
    if "classes" in wire:
        out["classes"] = wire["classes"]
    return out


def polygon_mask(polygon, width: int, height: int):
    """A polygon ([[x, y], …] in pixels) → a bool [height, width] mask."""
    import numpy as np
    from PIL import Image, ImageDraw

    canvas = Image.new("1", (width, height), 0)
    pts = [(float(x), float(y)) for x, y in polygon]
    if len(pts) >= 3:
        ImageDraw.Draw(canvas).polygon(pts, fill=1)
    return np.asarray(canvas, dtype=bool)

"""The one JSON shape every detector answers in (PaliGemma, Gemma 3, YOLO, any extension):

  {"model", "task", "prompt", "text", "width", "height",
   "objects": [{"label", "box": [x1, y1, x2, y2] pixels, "box_normalized": [y1, x1, y2, x2] in 1024 bins
                (as PaliGemma writes them), "score": number or null,
                "mask": {"size": [h, w], "counts": COCO RLE} or null,
                "keypoints": [[x, y, confidence], …] (pose only), "track_id" (a tracker's, in a video)}],
   "invalid": n}

plus "classes" ([{"label", "score"}], classification) and "notes" (e.g. a demo decoder) when there are
any. Masks stay bool arrays in memory (the overlay draws them) and become RLE only in the JSON.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from modules.errors import InvalidRequest


@dataclass
class VisionObject:
    label: str
    box: list[int] | None  # x1, y1, x2, y2 in pixels
    box_normalized: list[int] | None  # y1, x1, y2, x2 in 1024 bins
    score: float | None = None
    mask: Any = None  # bool [h, w] numpy array
    keypoints: list[list[float]] | None = None
    track_id: int | None = None  # a tracker's identity of the object across a video's frames

    def mask_image(self):
        """The mask as a PIL "L" image, white where the object is (an inpaint mask), or None."""
        if self.mask is None:
            return None
        import numpy as np
        from PIL import Image

        return Image.fromarray(np.asarray(self.mask, dtype=np.uint8) * 255, "L")

    def to_json(self) -> dict:
        from modules.vision.masks import encode_rle

        out = {"label": self.label, "box": self.box, "box_normalized": self.box_normalized,
               "score": None if self.score is None else round(float(self.score), 4),
               "mask": None if self.mask is None else encode_rle(self.mask)}
        if self.keypoints is not None:
            out["keypoints"] = [[round(float(v), 2) for v in point] for point in self.keypoints]
        if self.track_id is not None:
            out["track_id"] = self.track_id
        return out


@dataclass
class VisionResult:
    """One image's answer: what the JSON holds, plus the overlay image when one was drawn."""

    model: str
    task: str
    prompt: str
    text: str
    width: int
    height: int
    objects: list[VisionObject] = field(default_factory=list)
    invalid: int = 0
    classes: list[dict] | None = None
    notes: list[str] = field(default_factory=list)
    overlay: Any = None  # PIL image, or None
    seconds: float | None = None
    saved: dict = field(default_factory=dict)  # "png" / "json" -> path under outputs/, when saved
    adapter: str | None = None  # the PEFT adapter applied to the model, when one was chosen

    def to_json(self) -> dict:
        out = {"model": self.model, "task": self.task, "prompt": self.prompt, "text": self.text,
               "width": self.width, "height": self.height, "objects": [o.to_json() for o in self.objects],
               "invalid": int(self.invalid)}
        if self.adapter is not None:
            out["adapter"] = self.adapter
        if self.classes is not None:
            out["classes"] = self.classes
        if self.notes:
            out["notes"] = list(self.notes)
        if self.seconds is not None:
            out["seconds"] = round(self.seconds, 3)
        return out


def from_extension(value: Any, *, model: str, task: str, prompt: str, width: int, height: int) -> VisionResult:
    """An extension task's answer (a str, or a dict in the JSON shape whose masks may be bool arrays or
    RLE) → a VisionResult, checked, so every task's JSON comes out in one shape."""
    from modules.vision.masks import decode_rle
    from modules.vision.parse import to_bins

    base = dict(model=model, task=task, prompt=prompt, width=width, height=height)
    if isinstance(value, str):
        return VisionResult(text=value, **base)
    if not isinstance(value, dict):
        raise InvalidRequest(f"the vision task {task!r} answered {type(value).__name__}; a task answers a str "
                             "or a dict in the vision JSON shape", "task")
    objects = []
    for i, raw in enumerate(value.get("objects") or []):
        if not isinstance(raw, dict) or not isinstance(raw.get("label", ""), str):
            raise InvalidRequest(f"object {i} of {task!r} is not {{label, box, …}}", "task")
        mask = raw.get("mask")
        if isinstance(mask, dict):
            mask = decode_rle(mask)
        if mask is not None and tuple(mask.shape) != (height, width):
            raise InvalidRequest(f"object {i} of {task!r} has a {mask.shape} mask for a {width}x{height} image", "task")
        box = [int(round(float(v))) for v in raw["box"]] if raw.get("box") is not None else None
        bins = raw.get("box_normalized")
        if bins is None and box is not None:  # a detector that answers in pixels gets PaliGemma's bins too
            bins = to_bins(box, width, height)
        objects.append(VisionObject(
            label=raw.get("label", ""), box=box, box_normalized=list(bins) if bins is not None else None,
            score=raw.get("score"), mask=mask, keypoints=raw.get("keypoints"),
            track_id=int(raw["track_id"]) if raw.get("track_id") is not None else None))
    return VisionResult(text=str(value.get("text", "")), objects=objects, invalid=int(value.get("invalid", 0)),
                        classes=value.get("classes"), notes=list(value.get("notes", [])), **base)

"""The overlay: the image with each object's translucent mask, box, label (and score) and pose
keypoints drawn in one colour per class, at the image's own size. Drawn with PIL."""
from __future__ import annotations

import zlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from modules.vision.results import VisionObject

MASK_ALPHA = 110  # of 255: the image stays visible under a mask
# Tableau-like colours, far apart; a label always gets the same one (crc32, not hash(): stable across runs).
PALETTE = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
           (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207))
# COCO's 17-keypoint skeleton (what YOLO pose models predict), as pairs of keypoint indices.
COCO_SKELETON = ((15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12), (5, 6), (5, 7), (6, 8),
                 (7, 9), (8, 10), (1, 2), (0, 1), (0, 2), (1, 3), (2, 4), (3, 5), (4, 6))
KEYPOINT_MIN_CONFIDENCE = 0.5


def colour(label: str) -> tuple[int, int, int]:
    return PALETTE[zlib.crc32(label.encode("utf-8")) % len(PALETTE)]


def draw(image, objects: "list[VisionObject]", hidden: set[int] = frozenset()):
    """A new RGB image: `objects` drawn over `image`, except those whose index is in `hidden` (the tab's toggles)."""
    import numpy as np
    from PIL import Image, ImageDraw, ImageFont

    base = image.convert("RGB")
    shown = [(i, o) for i, o in enumerate(objects) if i not in hidden]
    masked = [(i, o) for i, o in shown if o.mask is not None]
    if masked:
        layer = np.zeros((base.height, base.width, 4), dtype=np.uint8)
        for _, obj in masked:
            layer[np.asarray(obj.mask, dtype=bool)] = (*colour(obj.label), MASK_ALPHA)
        base = Image.alpha_composite(base.convert("RGBA"), Image.fromarray(layer, "RGBA")).convert("RGB")
    pen = ImageDraw.Draw(base)
    line = max(1, round(min(base.size) / 200))
    font = ImageFont.load_default(size=max(10, round(min(base.size) / 30)))
    for _, obj in shown:
        rgb = colour(obj.label)
        if obj.keypoints:
            _keypoints(pen, obj.keypoints, rgb, line)
        if obj.box is None:
            continue
        x1, y1, x2, y2 = obj.box
        pen.rectangle([x1, y1, max(x1, x2 - 1), max(y1, y2 - 1)], outline=rgb, width=line)
        caption = obj.label or "?"
        if obj.score is not None:
            caption += f" {obj.score:.2f}"
        left, top, right, bottom = pen.textbbox((0, 0), caption, font=font)
        ty = y1 - (bottom - top) - 2 * line if y1 - (bottom - top) - 2 * line >= 0 else y1
        pen.rectangle([x1, ty, x1 + right - left + 2 * line, ty + bottom - top + 2 * line], fill=rgb)
        pen.text((x1 + line - left, ty + line - top), caption, fill=_ink(rgb), font=font)
    return base


def _keypoints(pen, points: list, rgb, line: int) -> None:
    visible = [len(p) < 3 or p[2] >= KEYPOINT_MIN_CONFIDENCE for p in points]
    if len(points) == 17:
        for a, b in COCO_SKELETON:
            if visible[a] and visible[b]:
                pen.line([tuple(points[a][:2]), tuple(points[b][:2])], fill=rgb, width=line)
    r = line + 1
    for point, ok in zip(points, visible):
        if ok:
            x, y = point[0], point[1]
            pen.ellipse([x - r, y - r, x + r, y + r], fill=(255, 255, 255), outline=rgb, width=1)


def _ink(rgb) -> tuple[int, int, int]:
    """Black or white text, whichever reads better on the label's colour."""
    return (0, 0, 0) if 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2] > 150 else (255, 255, 255)

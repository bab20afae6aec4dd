"""What PaliGemma writes for detect / segment, read as big_vision reads it.

An object is `<locYYYY><locXXXX><locYYYY><locXXXX>` (y_min, x_min, y_max, x_max in 1024 bins), for
segment followed by sixteen `<segNNN>` codes, then its label; objects are separated by " ; ".
The processor squashed the image to a square, so y scales by the original height and x by the
original width, separately. A prediction that is not whole or not a box (a bin out of range, too
few codes, y2 <= y1, x2 <= x1 — before or after rounding to pixels) is dropped and counted, as
big_vision's segmentation evaluator counts it, never raised.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

LOC_BINS = 1024  # <loc0000> … <loc1023>
SEG_CODES = 128  # <seg000> … <seg127>: the VQ-VAE codebook
SEG_TOKENS = 16  # a 4x4 grid of codes per mask
# One candidate object: up to four locations, any codes, then the label up to the next ';' or token.
_OBJECT = re.compile(r"(?P<locs>(?:<loc\d+>\s*){1,4})(?P<segs>(?:<seg\d+>\s*)*)(?P<label>[^;<]*)")
_NUMBER = re.compile(r"\d+")


@dataclass(frozen=True)
class ParsedObject:
    label: str
    bins: tuple[int, int, int, int]  # y1, x1, y2, x2 as the model wrote them
    box: tuple[int, int, int, int]  # x1, y1, x2, y2 in pixels of the original image
    codes: tuple[int, ...] | None  # the 16 segmentation codes, or None for a detection


@dataclass(frozen=True)
class Parsed:
    objects: list[ParsedObject]
    invalid: int


def parse_objects(text: str, width: int, height: int, segment: bool = False,
                  default_label: str = "") -> Parsed:
    """The valid objects in `text` with pixel boxes for a `width` x `height` image, and how many were dropped.

    `segment`: each object must carry its 16 codes. `default_label` names an object written without
    a label (the one object asked for, when only one was)."""
    objects, invalid = [], 0
    for match in _OBJECT.finditer(text or ""):
        bins = [int(n) for n in _NUMBER.findall(match["locs"])]
        codes = [int(n) for n in _NUMBER.findall(match["segs"])]
        if len(bins) != 4 or not all(0 <= b < LOC_BINS for b in bins):
            invalid += 1
            continue
        y1, x1, y2, x2 = bins
        if y2 <= y1 or x2 <= x1:
            invalid += 1
            continue
        if segment and (len(codes) != SEG_TOKENS or not all(0 <= c < SEG_CODES for c in codes)):
            invalid += 1
            continue
        box = to_pixels((y1, x1, y2, x2), width, height)
        if box[2] <= box[0] or box[3] <= box[1]:  # a sliver thinner than a pixel of this image
            invalid += 1
            continue
        label = match["label"].strip() or default_label
        objects.append(ParsedObject(label, (y1, x1, y2, x2), box, tuple(codes) if segment else None))
    return Parsed(objects, invalid)


def to_pixels(bins: tuple[int, int, int, int], width: int, height: int) -> tuple[int, int, int, int]:
    """(y1, x1, y2, x2) bins → (x1, y1, x2, y2) pixels, y by the height and x by the width.

    bin/1024 as the issue and PaliGemma's reference demos write it (big_vision's evaluator divides by
    1023, its encoder's inverse: under a pixel apart below 1024 px); truncated to whole pixels as there."""
    y1, x1, y2, x2 = (b / LOC_BINS for b in bins)
    return int(x1 * width), int(y1 * height), int(x2 * width), int(y2 * height)


def to_bins(box: tuple[float, float, float, float], width: int, height: int) -> list[int]:
    """Pixel (x1, y1, x2, y2) → PaliGemma's (y1, x1, y2, x2) bins, for detectors that answer in pixels (YOLO),
    so every detector's JSON carries the same `box_normalized`."""
    x1, y1, x2, y2 = box
    clip = lambda v: max(0, min(LOC_BINS - 1, int(round(v * LOC_BINS))))
    return [clip(y1 / height), clip(x1 / width), clip(y2 / height), clip(x2 / width)]

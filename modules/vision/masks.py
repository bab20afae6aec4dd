"""Masks: a 64x64 decoder map resized into its box and pasted into a full-size mask (as big_vision's
evaluator does it), and the COCO run-length encoding every detector's JSON carries (pycocotools,
the reference implementation that COCO tools read back)."""
from __future__ import annotations


def paste(map64, box: tuple[int, int, int, int], width: int, height: int):
    """A [64, 64] map in [-1, 1] → a [height, width] bool mask that is the map (> 0) inside `box` (x1, y1, x2, y2)."""
    import numpy as np
    from PIL import Image

    x1, y1, x2, y2 = box
    mask = np.zeros((height, width), dtype=bool)
    x1, y1, x2, y2 = max(0, x1), max(0, y1), min(width, x2), min(height, y2)
    if x2 <= x1 or y2 <= y1:
        return mask
    # Bilinear on the float map, then the threshold: big_vision's order (resizing a thresholded mask
    # would give blockier edges).
    inside = Image.fromarray(np.asarray(map64, dtype=np.float32), mode="F").resize((x2 - x1, y2 - y1),
                                                                                   Image.BILINEAR)
    mask[y1:y2, x1:x2] = np.asarray(inside) > 0.0
    return mask


def encode_rle(mask) -> dict:
    """A bool [h, w] mask → {"size": [h, w], "counts": "<COCO compressed RLE>"}."""
    import numpy as np
    from pycocotools import mask as coco_mask

    rle = coco_mask.encode(np.asfortranarray(np.asarray(mask, dtype=np.uint8)))
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": rle["counts"].decode("ascii")}


def decode_rle(rle: dict):
    """The inverse of encode_rle (also reads uncompressed counts lists): a bool [h, w] mask."""
    from pycocotools import mask as coco_mask

    counts = rle["counts"]
    if isinstance(counts, list):  # uncompressed, as some tools write it
        rle = coco_mask.frPyObjects({"size": list(rle["size"]), "counts": counts}, *rle["size"])
    else:
        rle = {"size": list(rle["size"]), "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
    return coco_mask.decode(rle).astype(bool)

"""Face restoration of a whole image: detect the faces, restore each, paste it back blended.

Detection is OpenCV's frontal-face Haar cascade, a data file inside opencv-python-headless (no download,
runs offline). A1111's facexlib aligns each face by five landmarks from RetinaFace, whose weights are a
download; here each detected face is cut as a square around the box with a margin (GFPGAN was trained on
faces that fill the middle of a 512 crop with hair and chin around them), resized to 512, restored,
resized back and pasted with a feathered edge. Pixels outside every face's square stay exactly as they
were; `visibility` blends the restored face over the original (A1111's GFPGAN visibility).
"""
from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from modules.models.face_restorers import FACE_SIZE

if TYPE_CHECKING:
    from modules.models.face_restorers import FaceRestorerModel

CASCADE = "haarcascade_frontalface_default.xml"
CROP_SCALE = 1.8  # the square cut around a detected box, as a multiple of its side
FEATHER = 0.1  # of the square's side: the paste fades to the original over this border
MIN_FACE = 32  # pixels: smaller detections are noise at these sizes
DETECTOR_MISSING = ("face detection needs OpenCV: pip install opencv-python-headless==4.14.0.94 "
                    "(its bundled Haar cascade finds the faces; see requirements.txt)")


def detector_problem() -> str | None:
    """Why faces cannot be detected here (None when they can)."""
    try:
        _cascade()
    except (ImportError, OSError) as exc:
        return f"{DETECTOR_MISSING} ({exc})"
    return None


@functools.lru_cache(maxsize=1)
def _cascade():
    import cv2

    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + CASCADE)
    if cascade.empty():
        raise OSError(f"{CASCADE} is missing from this OpenCV (opencv-python-headless 5 ships no cascades)")
    return cascade


def detect(image) -> list[tuple[int, int, int, int]]:
    """The faces of a PIL image as (x, y, width, height) boxes, largest first."""
    import cv2
    import numpy as np

    gray = cv2.cvtColor(np.asarray(image.convert("RGB")), cv2.COLOR_RGB2GRAY)
    boxes = _cascade().detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5, minSize=(MIN_FACE, MIN_FACE))
    return sorted((tuple(int(v) for v in box) for box in boxes), key=lambda b: -b[2] * b[3])


def crop_square(box: tuple[int, int, int, int], width: int, height: int) -> tuple[int, int, int]:
    """(left, top, side): the square cut around a face box, moved (and shrunk) to lie inside the image."""
    x, y, w, h = box
    side = min(int(round(max(w, h) * CROP_SCALE)), width, height)
    cx, cy = x + w / 2, y + h / 2
    left = int(round(min(max(cx - side / 2, 0), width - side)))
    top = int(round(min(max(cy - side / 2, 0), height - side)))
    return left, top, side


def restore_faces(image, restorer: "FaceRestorerModel", visibility: float = 1.0):
    """The image (PIL, its own size) with every detected face restored; the same image when none is found."""
    import numpy as np
    from PIL import Image

    image = image.convert("RGB")
    if visibility <= 0:
        return image
    out = np.asarray(image, dtype=np.float32).copy()
    for box in detect(image):
        left, top, side = crop_square(box, image.width, image.height)
        face = image.crop((left, top, left + side, top + side)).resize((FACE_SIZE, FACE_SIZE), Image.Resampling.LANCZOS)
        restored = restorer.restore(face).resize((side, side), Image.Resampling.LANCZOS)
        alpha = _feather(side)[..., None] * visibility
        region = out[top:top + side, left:left + side]
        region[:] = region * (1 - alpha) + np.asarray(restored, dtype=np.float32) * alpha
    return Image.fromarray(out.round().clip(0, 255).astype(np.uint8))


def _feather(side: int):
    """1 in the middle of the square, falling linearly to 0 at its edges."""
    import numpy as np

    border = max(1, int(side * FEATHER))
    ramp = np.clip((np.arange(side, dtype=np.float32) + 0.5) / border, 0, 1)
    ramp = np.minimum(ramp, ramp[::-1])
    return np.minimum.outer(ramp, ramp)


def restore_images(models, name: str, images: list, visibility: float, field: str) -> list:
    """Each image with its faces restored by the restorer `name` (GFPGAN), loaded once for all of them;
    a missing model or detector is refused naming `field`."""
    from modules.models import face_restorers

    entry = face_restorers.find(models.registry, name, field)
    with models.use(entry.kind, entry.name) as restorer:
        return [restore_faces(image, restorer, visibility) for image in images]

"""Image decoding shared by every request type: base64 or PIL in, PIL out, sizes bounded."""
from __future__ import annotations

import base64
import binascii
import io

MAX_INPUT_PIXELS = 4096 * 4096
MAX_INPUT_BYTES = 64 * 1024 * 1024


def decode_image(value):
    """Accept a PIL image, or base64 (optionally a data: URL) of a PNG/JPEG/WebP; return PIL.

    Raises ValueError with a message meant for a person.
    """
    from PIL import Image

    if isinstance(value, Image.Image):
        image = value
    elif isinstance(value, (bytes, bytearray)):
        image = _open(bytes(value))
    elif isinstance(value, str):
        text = value.strip()
        if not text:
            raise ValueError("is empty; send a base64-encoded PNG or JPEG")
        if text.startswith("data:"):
            text = text.split(",", 1)[-1]
        if len(text) > MAX_INPUT_BYTES * 4 // 3 + 4:
            raise ValueError(f"is larger than {MAX_INPUT_BYTES // 2**20} MiB")
        try:
            raw = base64.b64decode(text, validate=False)
        except (binascii.Error, ValueError):
            raise ValueError("is not valid base64; send a base64-encoded PNG or JPEG") from None
        image = _open(raw)
    else:
        raise ValueError("must be a base64-encoded image string")
    if image.width * image.height > MAX_INPUT_PIXELS:
        raise ValueError(f"is {image.width}x{image.height}; at most {MAX_INPUT_PIXELS} pixels are accepted")
    return image


def _open(raw: bytes):
    from PIL import Image, UnidentifiedImageError

    # Check the size from the header before decoding pixels: a decompression bomb stops here.
    try:
        image = Image.open(io.BytesIO(raw))
        if image.width * image.height > MAX_INPUT_PIXELS:
            raise ValueError(f"is {image.width}x{image.height}; at most {MAX_INPUT_PIXELS} pixels are accepted")
        image.load()
    except (UnidentifiedImageError, OSError, SyntaxError, Image.DecompressionBombError):
        raise ValueError("is not a readable image; send a base64-encoded PNG or JPEG") from None
    return image


def encode_png_base64(image, pnginfo_text: str | None = None) -> str:
    from PIL.PngImagePlugin import PngInfo

    info = None
    if pnginfo_text:
        info = PngInfo()
        info.add_text("parameters", pnginfo_text)
    buf = io.BytesIO()
    image.save(buf, format="PNG", pnginfo=info)
    return base64.b64encode(buf.getvalue()).decode("ascii")

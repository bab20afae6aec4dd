"""Image decoding shared by every request type: base64 or PIL in, PIL out, sizes bounded."""
from __future__ import annotations

import base64
import binascii
import io

MAX_INPUT_PIXELS = 4096 * 4096
MAX_INPUT_BYTES = 64 * 1024 * 1024
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")
MAX_FOLDER_IMAGES = 10_000


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


# -- saving with the infotext ---------------------------------------------------
FORMATS = {"png": "PNG", "jpg": "JPEG", "jpeg": "JPEG", "webp": "WEBP"}  # A1111's samples_format values
_EXIF_IFD, _USER_COMMENT = 0x8769, 0x9286
_UNICODE = b"UNICODE\x00"  # EXIF UserComment's character-code prefix (then UTF-16 BE, as A1111's piexif writes)


def extension(fmt: str) -> str:
    return "jpg" if fmt.lower() in ("jpg", "jpeg") else fmt.lower()


def encode_image(image, infotext: str | None = None, fmt: str = "png", quality: int = 80) -> bytes:
    """PNG with the infotext in its `parameters` chunk, or JPEG / WebP with it in EXIF UserComment
    (where A1111 puts it, and PNG Info reads it back)."""
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    kind = FORMATS.get(fmt.lower())
    if kind is None:
        raise ValueError(f"unknown image format {fmt!r}; one of {', '.join(FORMATS)}")
    buf = io.BytesIO()
    if kind == "PNG":
        info = None
        if infotext:
            info = PngInfo()
            info.add_text("parameters", infotext)
        image.save(buf, format="PNG", pnginfo=info)
        return buf.getvalue()
    exif = Image.Exif()
    if infotext:
        exif.get_ifd(_EXIF_IFD)[_USER_COMMENT] = _UNICODE + infotext.encode("utf-16-be")
    rgb = image if image.mode in ("RGB", "L") or kind == "WEBP" else image.convert("RGB")
    rgb.save(buf, format=kind, quality=int(quality), exif=exif)
    return buf.getvalue()


def read_infotext(image) -> str:
    """The generation parameters an image carries: PNG `parameters`, else EXIF UserComment."""
    text = (image.info or {}).get("parameters")
    if isinstance(text, str):
        return text
    try:
        raw = image.getexif().get_ifd(_EXIF_IFD).get(_USER_COMMENT)
    except Exception:  # a broken EXIF block is no parameters, never an error
        return ""
    if not isinstance(raw, bytes) or not raw:
        return raw if isinstance(raw, str) else ""
    prefix, body = raw[:8], raw[8:]
    if prefix == _UNICODE:
        for codec in ("utf-16-be", "utf-16-le"):
            try:
                return body.decode(codec)
            except UnicodeDecodeError:
                continue
    return body.decode("utf-8", errors="replace") if prefix.startswith(b"ASCII") else raw.decode("utf-8", "replace")


def folder_images(root, folder: str, field: str = "folder") -> list:
    """The images directly in `folder` (a path under `root`, the data dir), sorted by name; refusals name `field`."""
    from modules.errors import InvalidRequest
    from modules.paths import resolve_inside

    path = resolve_inside(root, folder, field_name=field)
    if not path.is_dir():
        raise InvalidRequest(f"{folder!r} is not a folder", field)
    found = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")
                   and p.suffix.lower() in IMAGE_SUFFIXES)
    if not found:
        raise InvalidRequest(f"{folder!r} holds no images ({', '.join(IMAGE_SUFFIXES)})", field)
    if len(found) > MAX_FOLDER_IMAGES:
        raise InvalidRequest(f"{folder!r} holds {len(found)} images; a batch takes at most {MAX_FOLDER_IMAGES}", field)
    return found

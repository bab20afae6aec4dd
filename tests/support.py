"""Small pieces several test folders share (fixtures live in conftest.py)."""
from __future__ import annotations

import base64
import io


class MaliciousPickle:
    """Unpickling this would create the marker file: the attack a malicious .ckpt carries."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('pwned')",))


def decode_png(b64: str):
    """The image a client gets: a whole PNG that decodes, or the test fails."""
    from PIL import Image

    raw = base64.b64decode(b64)
    assert raw[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    image = Image.open(io.BytesIO(raw))
    image.load()
    return image

"""Test videos made in the test: a coloured rectangle moving across a grey frame, encoded with PyAV."""
from __future__ import annotations

import base64
import io
from fractions import Fraction

RECT = 16  # the rectangle's side in pixels
RED = (220, 30, 30)


def rectangle_frames(count: int = 30, size: tuple[int, int] = (96, 64), step: int = 2):
    """PIL frames: a RECT x RECT red rectangle moving `step` pixels right per frame on grey."""
    from PIL import Image, ImageDraw

    out = []
    for i in range(count):
        image = Image.new("RGB", size, (128, 128, 128))
        x = 4 + step * i
        ImageDraw.Draw(image).rectangle([x, 24, x + RECT - 1, 24 + RECT - 1], fill=RED)
        out.append(image)
    return out


def encode(images, fps: int = 10, fmt: str = "mp4", codec: str = "libx264") -> bytes:
    """The frames as a video file's bytes (H.264 MP4 by default; e.g. fmt="webm", codec="libvpx-vp9")."""
    import av

    buf = io.BytesIO()
    with av.open(buf, mode="w", format=fmt) as container:
        stream = container.add_stream(codec, rate=Fraction(fps))
        stream.width, stream.height, stream.pix_fmt = images[0].width, images[0].height, "yuv420p"
        for image in images:
            for packet in stream.encode(av.VideoFrame.from_image(image)):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return buf.getvalue()


def rectangle_video(count: int = 30, fps: int = 10, **kwargs) -> bytes:
    return encode(rectangle_frames(count, **kwargs), fps=fps)


def b64_video(data: bytes) -> str:
    return base64.b64encode(data).decode()

"""Video in and out with PyAV (its wheel bundles FFmpeg, libx264 included: no system ffmpeg).

`open_video` reads an upload (bytes) or a file under the data dir and says what it holds (frames, fps,
duration, size) or refuses it naming the field; `frames` yields the chosen frames (a time range, a stride,
at most N) as PIL images; `VideoWriter` encodes frames into an H.264 MP4 (yuv420p, which every browser
plays) written to a hidden temporary beside its final name and renamed into place on close, so a reader
never sees half a video — and an interrupted job's partial video is still a whole, playable file.
"""
from __future__ import annotations

import io
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterator

from modules.errors import InvalidRequest

VIDEO_SUFFIXES = (".mp4", ".webm", ".mov", ".mkv", ".m4v", ".avi")
MAX_VIDEO_BYTES = 256 * 1024 * 1024
MAX_VIDEO_PIXELS = 3840 * 2160
OUTPUT_CODEC = "libx264"  # H.264 in MP4: Chromium, Firefox and Safari play it
OUTPUT_CRF = "20"


@dataclass(frozen=True)
class VideoInfo:
    width: int
    height: int
    fps: float
    frames: int  # the container's count, or estimated from duration x fps when it has none
    duration: float  # seconds
    codec: str

    def to_json(self) -> dict:
        return {"width": self.width, "height": self.height, "fps": round(self.fps, 3), "frames": self.frames,
                "duration": round(self.duration, 3), "codec": self.codec}


@dataclass(frozen=True)
class VideoSource:
    """Where a video's bytes are: an upload held in memory, or a file under the data dir."""

    data: bytes | None = None
    path: Path | None = None
    field: str = "video"

    def open(self):
        import av

        try:
            return av.open(io.BytesIO(self.data) if self.data is not None else str(self.path), mode="r")
        except (av.FFmpegError, OSError, ValueError):
            raise InvalidRequest("is not a video PyAV (FFmpeg) can read; send an MP4, WebM or MOV file",
                                 self.field) from None


def source_from(video: str | bytes | None, path: str | None, data_root: Path) -> VideoSource:
    """The request's `video` (base64, a data: URL, or bytes from the UI) or `path` (a file under the data dir)."""
    import base64
    import binascii

    from modules.paths import resolve_inside

    if path:
        file = resolve_inside(data_root, path, field_name="path")
        if not file.is_file() or file.suffix.lower() not in VIDEO_SUFFIXES:
            raise InvalidRequest(f"{path!r} is not a video file under the data dir ({', '.join(VIDEO_SUFFIXES)})",
                                 "path")
        if file.stat().st_size > MAX_VIDEO_BYTES:
            raise InvalidRequest(f"{path!r} is larger than {MAX_VIDEO_BYTES // 2**20} MiB", "path")
        return VideoSource(path=file, field="path")
    if isinstance(video, (bytes, bytearray)):
        raw = bytes(video)
    else:
        text = (video or "").strip()
        if text.startswith("data:"):
            text = text.split(",", 1)[-1]
        if len(text) > MAX_VIDEO_BYTES * 4 // 3 + 4:
            raise InvalidRequest(f"is larger than {MAX_VIDEO_BYTES // 2**20} MiB", "video")
        try:
            raw = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidRequest("is not base64; send the video file's bytes as base64 (or a data: URL)",
                                 "video") from None
    if not raw:
        raise InvalidRequest("is empty; send a video (MP4, WebM, MOV) as base64, or a path under the data dir",
                             "video")
    return VideoSource(data=raw, field="video")


def probe(source: VideoSource) -> VideoInfo:
    """What the video holds; refused (naming the field) when it has no video stream or one no decoder reads."""
    with source.open() as container:
        stream = _video_stream(container, source.field)
        ctx = stream.codec_context
        fps = float(stream.average_rate or stream.guessed_rate or 0) or 25.0
        duration = float(stream.duration * stream.time_base) if stream.duration and stream.time_base else (
            container.duration / 1e6 if container.duration else 0.0)
        frames = int(stream.frames) or int(round(duration * fps))
        width, height = int(ctx.width or 0), int(ctx.height or 0)
        if width * height > MAX_VIDEO_PIXELS:
            raise InvalidRequest(f"is {width}x{height}; at most {MAX_VIDEO_PIXELS} pixels a frame", source.field)
        try:  # a stream whose codec FFmpeg lists but cannot decode fails here, not halfway through the job
            next(container.decode(stream), None)
        except Exception as exc:
            raise InvalidRequest(f"its {ctx.name} video stream cannot be decoded ({type(exc).__name__}); send "
                                 "H.264, H.265, VP8/VP9, AV1 or MPEG-4", source.field) from None
        return VideoInfo(width, height, fps, frames, duration, ctx.name)


def _video_stream(container, field: str):
    if not container.streams.video:
        raise InvalidRequest("holds no video stream", field)
    stream = container.streams.video[0]
    if stream.codec_context is None or not stream.codec_context.name:
        raise InvalidRequest("its video stream has a codec this FFmpeg cannot decode", field)
    return stream


def _decoded(source: VideoSource) -> Iterator[tuple[int, float, "object"]]:
    """(frame number, time in seconds, PyAV frame) of every frame, in order; PIL conversion is the caller's."""
    with source.open() as container:
        stream = _video_stream(container, source.field)
        stream.thread_type = "AUTO"
        rate = float(stream.average_rate or 25)
        for index, frame in enumerate(container.decode(stream)):
            yield index, float(frame.time) if frame.time is not None else index / rate, frame


def frames(source: VideoSource, start: float = 0.0, end: float | None = None, stride: int = 1,
           limit: int | None = None) -> Iterator[tuple[int, float, "object"]]:
    """(frame number in the video, time in seconds, PIL RGB image) of every `stride`-th frame in [start, end)."""
    kept, first = 0, None
    for index, t, frame in _decoded(source):
        if t < start - 1e-6:
            continue
        if end is not None and t >= end - 1e-6:
            break
        first = index if first is None else first
        if (index - first) % stride:  # every stride-th frame from the range's first
            continue
        yield index, t, frame.to_image()
        kept += 1
        if limit is not None and kept >= limit:
            break


def sample_times(start: float, end: float, count: int) -> list[float]:
    """`count` times spread evenly over [start, end): the middle of each of `count` equal parts."""
    step = (end - start) / count
    return [start + step * (i + 0.5) for i in range(count)]


def frames_at(source: VideoSource, times: list[float]) -> list[tuple[int, float, "object"]]:
    """The first decoded frame at or after each time (one pass through the video, in order)."""
    wanted, out = sorted(times), []
    for index, t, frame in _decoded(source):
        if not wanted:
            break
        if t >= wanted[0] - 1e-6:
            while wanted and t >= wanted[0] - 1e-6:
                wanted.pop(0)
            out.append((index, t, frame.to_image()))
    return out


class VideoWriter:
    """Frames → an H.264 MP4 at `path`, atomically: written to .<name>.<pid>.tmp, renamed on close."""

    def __init__(self, path: Path, fps: float, width: int, height: int):
        import av

        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        self._container = av.open(str(self._tmp), mode="w", format="mp4")
        rate = Fraction(fps).limit_denominator(1001) if fps > 0 else Fraction(25)
        self._stream = self._container.add_stream(OUTPUT_CODEC, rate=rate, options={"crf": OUTPUT_CRF})
        # yuv420p halves the chroma: the frame's sides must be even (an odd last row / column is cropped).
        self.width, self.height = width - width % 2, height - height % 2
        self._stream.width, self._stream.height, self._stream.pix_fmt = self.width, self.height, "yuv420p"
        self.frames = 0

    def write(self, image) -> None:
        import av

        rgb = image.convert("RGB")
        if rgb.size != (self.width, self.height):
            rgb = rgb.crop((0, 0, self.width, self.height)) if rgb.width >= self.width and rgb.height >= self.height \
                else rgb.resize((self.width, self.height))
        for packet in self._stream.encode(av.VideoFrame.from_image(rgb)):
            self._container.mux(packet)
        self.frames += 1

    def close(self) -> Path | None:
        """Flush, fsync and rename into place; None (and nothing left behind) when no frame was written."""
        try:
            if self.frames:
                for packet in self._stream.encode(None):
                    self._container.mux(packet)
        finally:
            self._container.close()
        if not self.frames:
            self._tmp.unlink(missing_ok=True)
            return None
        with open(self._tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(self._tmp, self.path)
        return self.path

    def abandon(self) -> None:
        try:
            self._container.close()
        finally:
            self._tmp.unlink(missing_ok=True)

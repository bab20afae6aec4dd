"""Tracking through a video: each chosen frame goes to the tracking task (an extension's, e.g. yolo-track,
whose model keeps its tracker between frames: "reset" on the first frame, then persisted), is drawn with
its objects and track ids into the output MP4, and becomes one JSON line (the one detector shape plus
"frame", "time" and each object's "track_id"). At the end: a table of tracks and counts per class over
time, and the video and the JSONL under one number in outputs/vision/<date>/ (both written atomically,
also when the job was interrupted: what was done is kept)."""
from __future__ import annotations

import json
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from modules.vision import overlay
from modules.vision.engine import OUTPUT_SUBDIR, run_one
from modules.vision.params import VisionOptions
from modules.vision.video import VideoWriter, frames

if TYPE_CHECKING:
    from modules.jobs import JobContext
    from modules.vision.engine import VisionServices
    from modules.vision.video import VideoInfo, VideoSource
    from modules.vision.video_params import VideoRequest


def run_track(ctx: "JobContext", services: "VisionServices", req: "VideoRequest", source: "VideoSource",
              info: "VideoInfo", start: float, end: float) -> dict:
    started = time.perf_counter()
    total = min(req.max_frames, max(1, int(round((end - start) * info.fps / req.stride))))
    fps = info.fps / req.stride
    lines: list[dict] = []
    scratch = Path(tempfile.mkdtemp(prefix=".video-", suffix=".tmp", dir=services.outputs.root))
    writer = VideoWriter(scratch / "track.mp4", fps, info.width, info.height)
    try:
        for i, (index, t, image) in enumerate(frames(source, start, end, req.stride, req.max_frames)):
            if ctx.interrupted:
                break
            ctx.progress(i, total, text=f"frame {i + 1} of ~{total} ({t:.2f} s)")
            frame_req = VisionOptions(model=req.model, task=req.track_task, overlay=False,
                                      options={**req.options, "reset": i == 0})
            result = run_one(services, frame_req, image, stop=lambda: ctx.interrupted)
            writer.write(overlay.draw(image, [with_id(o) for o in result.objects]))
            lines.append({"frame": index, "time": round(t, 4), **result.to_json()})
            ctx.emit({"frame": index, "time": round(t, 4), "objects": len(result.objects)})
        video = writer.close()
        ctx.progress(len(lines), total, text=f"{len(lines)} frames tracked")
        files = {".jsonl": "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines).encode("utf-8")}
        if video is not None:
            files = {".mp4": video.read_bytes(), **files}
        written = services.outputs.save_files(OUTPUT_SUBDIR, "track", files)
    except BaseException:
        writer.abandon()
        raise
    finally:
        for leftover in scratch.iterdir():
            leftover.unlink()
        scratch.rmdir()
    root = services.outputs.root
    return {"output": written[".mp4"].relative_to(root).as_posix() if ".mp4" in written else None,
            "jsonl": written[".jsonl"].relative_to(root).as_posix(), "folder": str(written[".jsonl"].parent),
            "frames_done": len(lines), "frames_expected": total, "fps": round(fps, 3),
            "interrupted": ctx.interrupted, "seconds": round(time.perf_counter() - started, 3),
            "summary": summary(lines)}


def with_id(obj):
    """The object as drawn: its track id before its label (and so a colour per track)."""
    return obj if obj.track_id is None else replace(obj, label=f"#{obj.track_id} {obj.label}")


def summary(lines: list[dict]) -> dict:
    """{"tracks": [{id, class, first_frame, last_frame, first_time, last_time, frames}], "counts": [{frame,
    time, class, count}] for every class seen in every frame (0 where absent), "classes": {class: objects}}."""
    tracks: dict[int, dict] = {}
    classes: dict[str, int] = {}
    for line in lines:
        for obj in line["objects"]:
            classes[obj["label"]] = classes.get(obj["label"], 0) + 1
            tid = obj.get("track_id")
            if tid is None:
                continue
            row = tracks.setdefault(tid, {"id": tid, "class": obj["label"], "first_frame": line["frame"],
                                          "first_time": line["time"], "frames": 0})
            row.update(last_frame=line["frame"], last_time=line["time"], frames=row["frames"] + 1)
    counts = []
    for line in lines:
        per_class = {label: 0 for label in classes}
        for obj in line["objects"]:
            per_class[obj["label"]] += 1
        counts.extend({"frame": line["frame"], "time": line["time"], "class": label, "count": n}
                      for label, n in per_class.items())
    return {"tracks": sorted(tracks.values(), key=lambda r: r["id"]), "counts": counts, "classes": classes}

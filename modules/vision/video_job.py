"""Job kind "vision_video": a video, one task — track (an extension's tracking task, frame by frame: the
output video with boxes, masks, keypoints and track ids, per-frame JSON Lines, a table of tracks, counts per
class over time) or caption (N frames sampled evenly, a caption each, and optionally one description of the
whole clip by a chat model). Progress is per frame; Interrupt stops after the current frame and keeps what
is done (the partial video and JSONL are written and returned)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from modules.errors import AtelierError, InvalidRequest
from modules.vision import catalog
from modules.vision.video import VideoInfo, VideoSource, probe, source_from
from modules.vision.video_params import VideoRequest

if TYPE_CHECKING:
    from modules.jobs import JobContext
    from modules.vision.engine import VisionServices


def parse_video(data) -> VideoRequest:
    from modules.requests import parse_request

    return parse_request(VideoRequest, data)


def opened(services: "VisionServices", req: VideoRequest) -> tuple[VideoSource, VideoInfo, float, float]:
    """The video, what it holds, and the range to process inside it (refused when empty)."""
    source = source_from(req.video, req.path, services.paths.root)
    info = probe(source)
    end = min(req.end, info.duration) if req.end is not None and info.duration else (req.end or info.duration)
    if info.duration and req.start >= info.duration:
        raise InvalidRequest(f"the video is {info.duration:.2f} s long; start must be before that", "start")
    if end <= req.start:
        raise InvalidRequest(f"the range {req.start}–{end} s holds no frame", "end")
    return source, info, req.start, end


def validator(services: "VisionServices") -> Callable[[object], None]:
    """At submit: the video decodes, the range holds frames, the models run their tasks (before the queue)."""
    from modules.vision.engine import task_options
    from modules.vision.params import VisionOptions

    def validate(req) -> None:
        if not isinstance(req, VideoRequest):
            raise InvalidRequest("send a video request (video or path, task …)", "request")
        opened(services, req)
        if req.task == "track":
            if services.tasks.get(req.track_task) is None:
                raise InvalidRequest(f"no vision task {req.track_task!r}: tracking needs an extension's tracker — "
                                     "enable the YOLO extension (Extensions tab) for yolo-track", "track_task")
            spec = catalog.spec_of(services, req.track_task)
            entry = catalog.resolve_model(services, spec, req.model)
            if spec.check is not None:
                spec.check(task_options(spec, VisionOptions(task=req.track_task, options=req.options), entry))
        else:
            model_for(services, "caption", req.model, "model")
            if req.describe_model:
                model_for(services, "question", req.describe_model, "describe_model")
    return validate


def model_for(services: "VisionServices", task: str, name: str | None, field: str):
    """The model that runs a built-in task; a model that cannot is this request's `field` (not its task)."""
    try:
        return catalog.resolve_model(services, catalog.spec_of(services, task), name)
    except AtelierError as exc:  # its kind (and status) kept: a name outside the folder, a model that cannot
        exc.field = field
        raise


def run_video(ctx: "JobContext", req: VideoRequest) -> dict:
    from modules.vision.video_caption import run_caption
    from modules.vision.video_track import run_track

    services: VisionServices = ctx.services
    source, info, start, end = opened(services, req)
    run = run_track if req.task == "track" else run_caption
    return {"task": req.task, "source": info.to_json(), "start": start, "end": round(end, 3),
            **run(ctx, services, req, source, info, start, end)}


def relative(services: "VisionServices", path) -> str | None:
    return None if path is None else path.relative_to(services.outputs.root).as_posix()

"""yolo-track: ultralytics' trackers (ByteTrack, BoT-SORT) over a video's frames, one frame per call.

The Vision tab's Video section and POST /atelier/v1/vision/video (Atelier's job kind "vision_video") send
each frame as one run of this task, in order; the model's worker keeps the tracker between calls
(ultralytics' `model.track(persist=True)`), and "reset" (Atelier sets it on a video's first frame) starts new
tracks. Each answer is the vision JSON shape with a "track_id" per object. The tracker's settings are the
keys of ultralytics' own bytetrack.yaml / botsort.yaml; the worker writes the chosen ones over the defaults.
"""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

# ultralytics' tracker yaml keys this task sets (the rest keep ultralytics' defaults).
TRACKER_KEYS = ("track_high_thresh", "track_low_thresh", "new_track_thresh", "track_buffer", "match_thresh",
                "fuse_score")
BOTSORT_KEYS = ("proximity_thresh", "appearance_thresh", "gmc_method")


class TrackOptions(BaseModel):
    """The request's "options" for yolo-track: ultralytics' predict arguments and its trackers' settings."""

    model_config = ConfigDict(extra="forbid")

    tracker: Literal["bytetrack", "botsort"] = Field("bytetrack", description="ByteTrack or BoT-SORT")
    conf: float = Field(0.1, ge=0.0, le=1.0, description="the lowest detection confidence passed to the tracker "
                                                         "(ultralytics' track default: 0.1)")
    iou: float = Field(0.7, ge=0.0, le=1.0, description="the IoU above which non-maximum suppression merges boxes")
    imgsz: int = Field(640, ge=32, le=4096, description="the side frames are resized to (a multiple of 32)")
    max_det: int = Field(300, ge=1, le=3000, description="the most objects kept per frame")
    track_high_thresh: float = Field(0.25, ge=0.0, le=1.0, description="first association: detections above this")
    track_low_thresh: float = Field(0.1, ge=0.0, le=1.0, description="second association: detections above this")
    new_track_thresh: float = Field(0.25, ge=0.0, le=1.0, description="an unmatched detection above this starts a track")
    track_buffer: int = Field(30, ge=1, le=10000, description="frames a lost track is kept (persistence)")
    match_thresh: float = Field(0.8, ge=0.0, le=1.0, description="association cost threshold (1 - IoU)")
    fuse_score: bool = Field(True, description="fuse detection scores into the matching cost")
    proximity_thresh: float | None = Field(None, ge=0.0, le=1.0, description="BoT-SORT: IoU gate for re-identification")
    appearance_thresh: float | None = Field(None, ge=0.0, le=1.0, description="BoT-SORT: appearance similarity gate")
    gmc_method: Literal["sparseOptFlow", "orb", "sift", "ecc", "none"] | None = Field(
        None, description="BoT-SORT: camera motion compensation")
    reset: bool = Field(False, description="start new tracks (Atelier sets it on a video's first frame)")

    def split(self) -> tuple[dict, dict, bool]:
        """→ (predict arguments, tracker settings with "tracker_type", reset)."""
        predict = {k: getattr(self, k) for k in ("conf", "iou", "imgsz", "max_det")}
        tracker = {"tracker_type": self.tracker, **{k: getattr(self, k) for k in TRACKER_KEYS}}
        for key in BOTSORT_KEYS:
            value = getattr(self, key)
            if value is not None:
                if self.tracker != "botsort":  # accepted must mean used
                    raise ValueError(f"{key} is a BoT-SORT setting; choose tracker botsort or leave it out")
                tracker[key] = value
        return predict, tracker, self.reset


def add_tracking(api, parse_options) -> None:
    """Register yolo-track (main.py's setup calls this with its options parser)."""
    invalid = api.types.InvalidRequest

    def track_options(options: dict) -> tuple[dict, dict, bool]:
        try:
            return parse_options(TrackOptions, options).split()
        except ValueError as exc:  # split(): a BoT-SORT setting with ByteTrack
            raise invalid(str(exc), "options") from None

    def run(image, options: dict):
        from .convert import to_vision

        predict, tracker, reset = track_options(options)
        with api.use_model("yolo", options.get("model")) as model:
            if model.task == "classify":
                raise invalid(f"{options.get('model')} is a classify model: it finds no boxes to track; choose a "
                              "detect, segment or pose model", "model")
            wire = model.track(image, predict, tracker, persist=not reset)
        return to_vision(wire)

    defaults = {k: v for k, v in TrackOptions().model_dump().items() if v is not None and k != "reset"}
    api.add_vision_task("yolo-track", run, title="YOLO track", model_kind="yolo",
                        description="ultralytics' ByteTrack / BoT-SORT, one video frame per call (Vision tab → Video)",
                        options=defaults, check=track_options)

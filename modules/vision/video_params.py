"""The typed video request (job kind "vision_video") — the one place its input is validated.

The Vision tab's Video section and REST (POST /atelier/v1/vision/video) build the same object. What needs
the studio (is the video readable, is the range inside it, does the model run the task) is the job kind's
submit-time validator (video_job.py); every refusal names its field.
"""
from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema, field_validator, model_validator

from modules.errors import FieldError
from modules.vision.params import _LANGUAGE

VIDEO_TASKS = ("track", "caption")
DEFAULT_TRACK_TASK = "yolo-track"  # the shipped YOLO extension's; any extension may register another
VideoInput = Annotated[Any, WithJsonSchema({"type": "string", "format": "base64"})]  # or bytes from the UI
DEFAULT_DESCRIBE_PROMPT = ("These are frames of one short video, in order. Describe what happens in the clip "
                           "in a few sentences.")


class VideoRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    video: VideoInput = Field(None, description="the video file (MP4, WebM, MOV) as base64 or a data: URL (bytes from the UI)")
    path: str | None = Field(None, max_length=1024, description="or a video file under the data dir")
    task: Literal["track", "caption"] = Field(..., description="track: follow objects through the frames (an "
                                                               "extension's tracker, YOLO's); caption: caption N frames")
    model: str | None = Field(None, max_length=1024, description="track: a tracking model (models/yolo); caption: a "
                                                                 "captioning model (PaliGemma); empty: the first")
    track_task: str = Field(DEFAULT_TRACK_TASK, min_length=1, max_length=64,
                            description="track: the vision task that tracks (GET /atelier/v1/vision/tasks)")
    options: dict[str, Any] = Field(default_factory=dict, description="track: the tracking task's options (YOLO: "
                                    "tracker bytetrack / botsort, conf, iou, imgsz, track_buffer, match_thresh …)")
    start: float = Field(0.0, ge=0.0, le=24 * 3600, description="seconds into the video where processing starts")
    end: float | None = Field(None, gt=0.0, le=24 * 3600, description="seconds where it ends; empty: the end")
    stride: int = Field(1, ge=1, le=1000, description="track: every n-th frame (1: every frame)")
    max_frames: int = Field(900, ge=1, le=20000, description="track: at most this many frames processed")
    frames: int = Field(8, ge=1, le=64, description="caption: how many frames, sampled evenly over the range")
    language: str = Field("en", max_length=16, description="caption: the captions' language")
    max_new_tokens: int | None = Field(None, ge=1, le=1024, description="caption: tokens per caption / description")
    describe_model: str | None = Field(None, max_length=1024,
                                       description="caption: an image+text chat model (Gemma 3) that describes the "
                                                   "whole clip from the sampled frames; empty: no description")
    describe_prompt: str = Field(DEFAULT_DESCRIBE_PROMPT, min_length=1, max_length=4000,
                                 description="caption: what the chat model is asked about the frames")

    @field_validator("video", mode="before")
    @classmethod
    def _video_is_bytes_or_base64(cls, value):
        if value is None or isinstance(value, (str, bytes, bytearray)):
            return value
        raise ValueError("send the video file as base64 (a string) or a data: URL")

    @model_validator(mode="after")
    def _fields_of_the_task(self):
        has_video = self.video is not None and self.video != ""
        if has_video and self.path:
            raise FieldError("path", "send either a video (base64) or a path under the data dir, not both")
        if not has_video and not self.path:
            raise FieldError("video", "send a video (base64 of an MP4, WebM or MOV file) or a path under the data dir")
        if self.end is not None and self.end <= self.start:
            raise FieldError("end", f"the range {self.start}–{self.end} s is empty; end must be after start")
        if not _LANGUAGE.match(self.language):
            raise FieldError("language", f"{self.language!r} is not a language code; use one like en, de, pt-BR")
        fields = self.model_fields_set
        if self.task == "caption":  # accepted must mean used
            for name in ("options", "stride", "max_frames", "track_task"):
                if name in fields and getattr(self, name) != type(self).model_fields[name].get_default(
                        call_default_factory=True):
                    raise FieldError(name, f"{name} is for task track; caption samples `frames` frames evenly")
        else:
            for name in ("frames", "language", "max_new_tokens", "describe_model", "describe_prompt"):
                if name in fields and getattr(self, name) != type(self).model_fields[name].get_default(
                        call_default_factory=True):
                    raise FieldError(name, f"{name} is for task caption; track reads `options`, stride, max_frames")
        return self

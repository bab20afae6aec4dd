"""Typed vision requests — the one place their input is validated.

The Vision tab, REST (POST /atelier/v1/vision) and extensions build the same objects; every
refusal names its field. What needs the studio to check (does the model exist, can it run the
task, is the VQ-VAE file there) is the job kinds' submit-time validator (engine.py).
"""
from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from modules.errors import FieldError as _FieldError
from modules.requests import ImageInput, check_image_source, parse_request

# PaliGemma's own prompt prefixes (big_vision), plus "question": one chat turn about the image for
# image+text chat models such as Gemma 3. Extensions add tasks of their own by name (studio.vision_tasks).
PALIGEMMA_TASKS = ("caption", "describe", "ocr", "answer", "detect", "segment", "raw")
CHAT_TASKS = ("question",)
BUILTIN_TASKS = PALIGEMMA_TASKS + CHAT_TASKS
OBJECT_TASKS = ("detect", "segment")
# Enough for the task's usual answer; a caption is a sentence, a segmentation 20 tokens an object.
DEFAULT_MAX_NEW_TOKENS = {"caption": 32, "describe": 128, "ocr": 128, "answer": 32, "detect": 64,
                          "segment": 64, "raw": 128, "question": 256}
MAX_OBJECTS = 32
MAX_BATCH_IMAGES = 256
_BASE64 = re.compile(r"^\s*(data:[\w/+.-]+;base64,)?[A-Za-z0-9+/=_\s-]+$")  # standard or URL-safe alphabet
_LANGUAGE = re.compile(r"^[a-z]{2,3}([-_][A-Za-z0-9]{2,8})?$")  # en, de, pt-BR, zh_Hans: PaliGemma's codes




class VisionOptions(BaseModel):
    """What every vision request shares: the model, the task and the task's text inputs."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    model: str | None = Field(None, max_length=1024,
                              description="a model name as listed (models/VLM, or an extension's kind); "
                                          "empty: the first model that can run the task")
    adapter: str | None = Field(None, max_length=1024,
                                description="a PEFT adapter of models/LLM-loras made for the model (listed under it, "
                                            "e.g. a PaliGemma fine-tune from the Train tab); empty: the model alone")
    task: str = Field(..., min_length=1, max_length=64,
                      description="caption, describe, ocr, answer, detect, segment, raw, question, or an "
                                  "extension's task (GET /atelier/v1/vision/tasks lists them)")
    prompt: str = Field("", max_length=4000, description="raw: the whole prefix; question: the question")
    question: str = Field("", max_length=4000, description="answer / question: what to ask about the image")
    objects: list[str] = Field(default_factory=list, max_length=MAX_OBJECTS,
                               description='detect / segment: what to find, a list or "cat ; dog"')
    language: str = Field("en", max_length=16, description="caption / describe / answer: the answer's language")
    max_new_tokens: int | None = Field(None, ge=1, le=1024, description="empty: the task's usual length")
    options: dict[str, Any] = Field(default_factory=dict, description="an extension task's own options "
                                                                       "(e.g. YOLO's conf, iou, imgsz)")
    overlay: bool = Field(True, description="draw boxes, masks and labels over the image")
    save: bool = Field(False, description="write the overlay PNG and the JSON into outputs/vision/<date>/")

    @field_validator("objects", mode="before")
    @classmethod
    def _split_objects(cls, value):
        if isinstance(value, str):  # "cat ; dog", as PaliGemma's own prompt writes them
            value = value.split(";")
        if isinstance(value, list):
            value = [v.strip() if isinstance(v, str) else v for v in value]
            value = [v for v in value if v != ""]
        return value

    @field_validator("objects")
    @classmethod
    def _clean_objects(cls, value: list[str]) -> list[str]:
        for name in value:
            if len(name) > 200 or any(c in name for c in ";<>\n"):
                raise ValueError(f"{name[:40]!r}: an object name is a few words without ';', '<', '>' or line breaks")
        return value

    @field_validator("language")
    @classmethod
    def _language(cls, value: str) -> str:
        if not _LANGUAGE.match(value):
            raise ValueError(f"{value!r} is not a language code; use one like en, de, fr, pt-BR")
        return value

    @field_validator("task")
    @classmethod
    def _task_name(cls, value: str) -> str:
        value = value.strip().lower()
        if not re.match(r"^[a-z0-9][a-z0-9_.-]*$", value):
            raise ValueError(f"{value!r} is not a task name (see GET /atelier/v1/vision/tasks)")
        return value

    @model_validator(mode="after")
    def _inputs_of_the_task(self):
        task = self.task
        if task in BUILTIN_TASKS and task not in OBJECT_TASKS and self.objects:  # accepted must mean used
            raise _FieldError("objects", f"{task} looks for no objects; objects are for detect and segment")
        if task in OBJECT_TASKS and not self.objects:
            raise _FieldError("objects", f"{task} needs at least one object to look for, e.g. [\"cat\"] or \"cat ; dog\"")
        if task == "answer" and not self.question.strip():
            raise _FieldError("question", "answer needs a question about the image")
        if task == "raw" and not self.prompt.strip():
            raise _FieldError("prompt", "raw needs the whole prefix, e.g. \"caption es\" or a fine-tuned model's own")
        if task == "question" and not (self.question.strip() or self.prompt.strip()):
            raise _FieldError("question", "question needs something to ask about the image")
        return self

    @property
    def new_tokens(self) -> int:
        return self.max_new_tokens or DEFAULT_MAX_NEW_TOKENS.get(self.task, 128)

    @property
    def builtin(self) -> bool:
        return self.task in BUILTIN_TASKS


class VisionRequest(VisionOptions):
    """One image, one task (job kind "vision")."""

    image: ImageInput = Field(..., description="base64 PNG / JPEG / WebP, or a data: URL")


class VisionBatchRequest(VisionOptions):
    """Several images, or a folder under the data dir, one task (job kind "vision_batch").

    Images are decoded one at a time while the batch runs, so one unreadable image is reported
    and skipped instead of refusing the whole batch."""

    images: list[Any] = Field(default_factory=list, max_length=MAX_BATCH_IMAGES,
                              description="base64 images (or PIL images from the UI)")
    names: list[str] = Field(default_factory=list, max_length=MAX_BATCH_IMAGES,
                             description="a name per image for the results (default: image-1, image-2, …)")
    folder: str | None = Field(None, max_length=1024, description="a folder under the data dir (its images, "
                                                                   "sorted by name; not its sub-folders)")
    overlay: bool = Field(True, description="write each image's overlay PNG beside the JSONL (false: the JSONL only)")
    save: bool = Field(True, description="a batch always writes its results into outputs/vision/<date>/")

    @field_validator("save")
    @classmethod
    def _always_saved(cls, value: bool) -> bool:
        if not value:  # accepted must mean acted on: a batch's results are its files
            raise ValueError("a batch always writes its results (one JSONL file, and each image's overlay unless "
                             "overlay is false) into outputs/vision/DATE/; leave save out")
        return value

    @field_validator("images")
    @classmethod
    def _images_are_base64(cls, value: list) -> list:
        """What is plainly no image (not a string, empty, not base64) is refused now, naming it; whether a base64
        string decodes to an image is that image's outcome in the batch (skipped, reported, the rest go on)."""
        from PIL import Image

        for i, item in enumerate(value):
            if isinstance(item, str) and _BASE64.match(item):
                continue
            if isinstance(item, (bytes, bytearray, Image.Image)):  # the Vision tab's uploads
                continue
            raise _FieldError(f"images.{i}", "is not an image: send base64 of a PNG / JPEG / WebP file, or a data: URL")
        return value

    @model_validator(mode="after")
    def _one_source(self):
        check_image_source(self.images, self.names, self.folder)
        return self


def parse_vision(cls: type[VisionOptions], data: Any) -> VisionOptions:
    """A JSON body (or the UI's dict) → a vision request; InvalidRequest names the field."""
    return parse_request(cls, data)

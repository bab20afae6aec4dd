"""Typed Extras requests — the one place their input is validated.

Field names are AUTOMATIC1111's (/sdapi/v1/extra-single-image and extra-batch-images), so its JSON
bodies parse as they are; the Extras tab builds the same object. Which upscaler names exist is the
job kind's submit-time check (task.py): they live in the model registry.
"""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from modules.errors import FieldError
from modules.models.face_restorers import CODEFORMER_MISSING
from modules.requests import ImageInput, check_image_source

MAX_BATCH_IMAGES = 256
MAX_OUTPUT_SIDE = 8192  # a 4x of a 2048 image
RESIZE_MODES = ("Scale by", "Scale to")  # resize_mode 0 and 1, A1111's labels


class ExtrasRequest(BaseModel):
    """One image or several (uploads, or a folder under the data dir), upscaled alike (job kind "extras")."""

    model_config = ConfigDict(extra="ignore", arbitrary_types_allowed=True)  # A1111 clients send more

    images: list[ImageInput] = Field(default_factory=list, max_length=MAX_BATCH_IMAGES,
                                     description="base64 images (or PIL images from the UI)")
    names: list[str] = Field(default_factory=list, max_length=MAX_BATCH_IMAGES,
                             description="a name per image (default: image-1, image-2, …)")
    folder: str | None = Field(None, max_length=1024, description="a folder under the data dir: its images, by name")
    resize_mode: int = Field(0, ge=0, le=1, description="0: scale by upscaling_resize; 1: scale to width x height")
    upscaling_resize: float = Field(2.0, ge=1.0, le=8.0, description="scale by this factor (resize_mode 0)")
    upscaling_resize_w: int = Field(512, ge=1, le=MAX_OUTPUT_SIDE, description="target width (resize_mode 1)")
    upscaling_resize_h: int = Field(512, ge=1, le=MAX_OUTPUT_SIDE, description="target height (resize_mode 1)")
    upscaling_crop: bool = Field(True, description="resize_mode 1: crop to exactly width x height (else keep the aspect)")
    upscaler_1: str = Field("None", max_length=256, description="None, Lanczos, Nearest or an upscaler model's name")
    upscaler_2: str = Field("None", max_length=256, description="a second upscaler blended over the first")
    extras_upscaler_2_visibility: float = Field(0.0, ge=0.0, le=1.0, description="how much of upscaler 2 shows")
    gfpgan_visibility: float = Field(0.0, ge=0.0, le=1.0, description="restore faces with GFPGAN, blended this much")
    codeformer_visibility: float = Field(0.0, ge=0.0, le=1.0, description="CodeFormer: not available (refused above 0)")
    codeformer_weight: float = Field(0.0, ge=0.0, le=1.0, description="CodeFormer's fidelity (with codeformer_visibility)")
    upscale_first: bool = False
    save_images: bool = Field(True, description="write each result into outputs/extras-images/<date>/")

    @model_validator(mode="before")
    @classmethod
    def _nulls_are_defaults(cls, data: Any) -> Any:
        return {k: v for k, v in data.items() if v is not None} if isinstance(data, dict) else data

    @model_validator(mode="after")
    def _what_to_do(self):
        check_image_source(self.images, self.names, self.folder)
        if self.codeformer_visibility > 0:
            raise FieldError("codeformer_visibility", f"{CODEFORMER_MISSING}; set it to 0")
        if self.upscaler_1 == "None":
            if self.upscaler_2 != "None" and self.extras_upscaler_2_visibility > 0:
                raise FieldError("upscaler_1", "upscaler 2 is blended over upscaler 1: choose upscaler_1 too")
            if self.gfpgan_visibility == 0:
                raise FieldError("upscaler_1", "nothing to do: choose an upscaler (Lanczos, Nearest or a model) "
                                               "or restore faces (gfpgan_visibility)")
        for image in self.images:
            width, height = self.target_size(image.width, image.height)
            if max(width, height) > MAX_OUTPUT_SIDE:
                field = "upscaling_resize" if self.resize_mode == 0 else "upscaling_resize_w"
                raise FieldError(field, f"a {image.width}x{image.height} image would become {width}x{height}; "
                                        f"at most {MAX_OUTPUT_SIDE} pixels a side")
        return self

    def upscale_by(self, width: int, height: int) -> float:
        """A1111's factor: the one asked, or (scale to) the larger of the two ratios."""
        if self.resize_mode == 0:
            return self.upscaling_resize
        return max(self.upscaling_resize_w / width, self.upscaling_resize_h / height)

    @property
    def upscales(self) -> bool:
        return self.upscaler_1 != "None"  # A1111: upscaler "None" leaves the size alone (faces only)

    def target_size(self, width: int, height: int) -> tuple[int, int]:
        """The size of the result: scaled, or (scale to with crop) exactly the width x height asked."""
        if not self.upscales:
            return width, height
        if self.resize_mode == 1 and self.upscaling_crop:
            return self.upscaling_resize_w, self.upscaling_resize_h
        factor = self.upscale_by(width, height)
        return int(width * factor), int(height * factor)

    def infotext(self, width: int, height: int) -> str:
        """A1111's postprocessing parameters of one image."""
        parts = []
        if self.upscales:
            if self.resize_mode == 0:
                parts.append(f"Postprocess upscale by: {self.upscaling_resize:g}")
            else:
                parts.append(f"Postprocess upscale to: {self.upscaling_resize_w}x{self.upscaling_resize_h}")
                if self.upscaling_crop:
                    parts.append(f"Postprocess crop to: {self.upscaling_resize_w}x{self.upscaling_resize_h}")
            parts.append(f"Postprocess upscaler: {self.upscaler_1}")
        if self.upscaler_2 != "None" and self.extras_upscaler_2_visibility > 0:
            parts.append(f"Postprocess upscaler 2: {self.upscaler_2}")
            parts.append(f"Postprocess upscaler 2 visibility: {self.extras_upscaler_2_visibility:g}")
        if self.gfpgan_visibility > 0:
            parts.append(f"GFPGAN visibility: {self.gfpgan_visibility:g}")  # A1111's key
        return ", ".join(parts)

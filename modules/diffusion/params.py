"""Typed requests for image generation — the one place input is validated.

Field names are AUTOMATIC1111's API names, so its JSON bodies parse as they are; the UI
and extensions build the same objects. Unknown fields are ignored (A1111 clients send
many), known ones are range-checked and every refusal names its field.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from modules.diffusion.prompts import extract_loras
from modules.errors import InvalidRequest
from modules.requests import ImageInput

MAX_PROMPT_CHARS = 20_000
MAX_SIDE = 2048
MAX_SEED = 2**32 - 1
# img2img's resize_mode 0..3, A1111's labels (the UI shows them; img2img.py implements them).
RESIZE_MODES = ("Just resize", "Crop and resize", "Resize and fill", "Just resize (latent upscale)")




class GenerationRequest(BaseModel):
    """Parameters shared by txt2img and img2img (AUTOMATIC1111 names)."""

    model_config = ConfigDict(extra="ignore", arbitrary_types_allowed=True)

    prompt: str = Field("", max_length=MAX_PROMPT_CHARS)
    negative_prompt: str = Field("", max_length=MAX_PROMPT_CHARS)
    styles: list[str] = Field(default_factory=list, max_length=32)
    seed: int = Field(-1, ge=-1, le=MAX_SEED, description="-1 picks a random seed")
    subseed: int = Field(-1, ge=-1, le=MAX_SEED, description="variation seed")
    subseed_strength: float = Field(0.0, ge=0.0, le=1.0)
    sampler_name: str = Field("Euler a", max_length=64)
    scheduler: str = Field("Automatic", max_length=64, description="schedule type: Automatic, Karras, Exponential, …")
    batch_size: int = Field(1, ge=1, le=8)
    n_iter: int = Field(1, ge=1, le=100, description="batch count")
    steps: int = Field(20, ge=1, le=150)
    cfg_scale: float = Field(7.0, ge=0.0, le=30.0)
    distilled_cfg_scale: float = Field(3.5, ge=0.0, le=30.0, description="Flux-dev's distilled guidance "
                                       "(Forge's field); other checkpoints take only 3.5, its default")
    width: int = Field(512, ge=64, le=MAX_SIDE, multiple_of=8)
    height: int = Field(512, ge=64, le=MAX_SIDE, multiple_of=8)
    clip_skip: int | None = Field(None, ge=1, le=12, description="None: the CLIP_stop_at_last_layers setting")
    denoising_strength: float | None = Field(None, ge=0.0, le=1.0)
    enable_hr: bool = False
    hr_scale: float = Field(2.0, ge=1.0, le=4.0)
    hr_upscaler: str = Field("Latent", max_length=64)
    hr_second_pass_steps: int = Field(0, ge=0, le=150, description="0: same as steps")
    hr_resize_x: int = Field(0, ge=0, le=MAX_SIDE)
    hr_resize_y: int = Field(0, ge=0, le=MAX_SIDE)
    hr_sampler_name: str = Field("", max_length=64, description="hires pass sampler; empty: the same as the first pass")
    hr_scheduler: str = Field("", max_length=64, description="hires pass schedule type; empty: the same")
    hr_prompt: str = Field("", max_length=MAX_PROMPT_CHARS, description="hires pass prompt; empty: the same")
    hr_negative_prompt: str = Field("", max_length=MAX_PROMPT_CHARS, description="hires pass negative prompt; empty: the same")
    restore_faces: bool = Field(False, description="restore faces after generation (the face_restoration_model setting)")
    tiling: bool = Field(False, description="seamless: the picture wraps around (circular padding in UNet and VAE)")
    script_name: str = Field("", max_length=80, description='"x/y/z plot" (A1111\'s script); no other script exists')
    script_args: list[Any] = Field(default_factory=list, max_length=64, description="the script's arguments, A1111's order")
    override_settings: dict[str, Any] = Field(default_factory=dict)
    override_settings_restore_afterwards: bool = True
    send_images: bool = True
    save_images: bool = True

    # The validators below raise InvalidRequest itself (pydantic lets it through unchanged), so a request
    # built in Python (an extension, a test) is refused with the same error and field as a JSON body.
    @model_validator(mode="before")
    @classmethod
    def _a1111_conventions(cls, data: Any) -> Any:
        """A1111's: null means the default (an empty number box in the UI too); `sampler_index` is the old
        name of `sampler_name`; scripts are refused, not skipped."""
        if not isinstance(data, dict):
            return data
        data = {k: v for k, v in data.items() if v is not None}
        _refuse_scripts(data)
        index = data.get("sampler_index")
        if not data.get("sampler_name") and isinstance(index, str) and index:
            data["sampler_name"] = index
        return data

    @field_validator("prompt")
    @classmethod
    def _lora_tags(cls, prompt: str) -> str:
        """A malformed `<lora:name:weight>` is refused now, not when the job reaches it."""
        extract_loras(prompt)
        return prompt

    @property
    def checkpoint_override(self) -> str | None:
        value = self.override_settings.get("sd_model_checkpoint")
        return str(value) if value else None

    @property
    def additional_modules(self) -> tuple[str, ...] | None:
        """override_settings' forge_additional_modules (Forge's: file names or paths of the VAE / text encoders a
        transformer-only Flux / SD3 file takes); None when not given or empty."""
        value = self.override_settings.get("forge_additional_modules")
        if value in (None, [], ""):
            return None
        if not isinstance(value, list) or not all(isinstance(v, str) and 0 < len(v) <= 1024 for v in value) \
                or len(value) > 8:
            raise InvalidRequest("a list of up to 8 file names (models/text_encoder, models/VAE)",
                                 "forge_additional_modules")
        return tuple(value)

    def face_restorer(self, default: str) -> str:
        """The face restorer of `restore_faces`: override_settings' face_restoration_model, else the setting's."""
        value = self.override_settings.get("face_restoration_model")
        return str(value) if value else default

    @property
    def effective_clip_skip(self) -> int:
        if self.clip_skip is not None:
            return self.clip_skip
        value = self.override_settings.get("CLIP_stop_at_last_layers", 1)
        return int(value) if isinstance(value, (int, float)) and 1 <= value <= 12 else 1

    def hires_size(self) -> tuple[int, int]:
        if self.hr_resize_x or self.hr_resize_y:
            w = self.hr_resize_x or int(self.width * self.hr_resize_y / self.height)
            h = self.hr_resize_y or int(self.height * self.hr_resize_x / self.width)
        else:
            w, h = int(self.width * self.hr_scale), int(self.height * self.hr_scale)
        return (w // 8 * 8, h // 8 * 8)

    @model_validator(mode="after")
    def _check_hires(self):
        if self.enable_hr:
            w, h = self.hires_size()
            if w > MAX_SIDE or h > MAX_SIDE:
                raise ValueError(f"hires fix would make {w}x{h}; the largest side is {MAX_SIDE}: lower hr_scale")
        return self

    @model_validator(mode="after")
    def _check_script(self):
        """The X/Y/Z plot's arguments, and every cell they make, are checked with the request."""
        if self.script_name.strip():
            from modules.diffusion import xyz  # it builds requests of these types

            xyz.plan(self)
        elif self.script_args:
            raise InvalidRequest("script_args without a script_name; send script_name \"x/y/z plot\" or no "
                                 "script_args", "script_args")
        return self


XYZ_SCRIPT = "x/y/z plot"  # the one A1111 script Atelier runs (xyz.py); A1111 matches titles case-insensitively


def _refuse_scripts(data: dict) -> None:
    """A1111's script_name / alwayson_scripts: Atelier runs the X/Y/Z plot and no other script, and one skipped
    silently would make wrong pictures (A1111 answers 422 too)."""
    name = data.get("script_name")
    if isinstance(name, str) and name.strip() and name.strip().lower() != XYZ_SCRIPT:
        raise InvalidRequest(f"script {name[:80]!r} is not available in Atelier; the one script is "
                             f"\"x/y/z plot\" — or leave script_name empty", "script_name")
    scripts = data.get("alwayson_scripts")
    if isinstance(scripts, dict) and scripts:
        first = str(next(iter(scripts)))[:80]
        raise InvalidRequest(f"always-on script {first!r} is not available in Atelier; send alwayson_scripts {{}}",
                             "alwayson_scripts")


class Txt2ImgRequest(GenerationRequest):
    pass


class Img2ImgRequest(GenerationRequest):
    init_images: list[ImageInput] = Field(..., min_length=1, max_length=8)
    resize_mode: int = Field(0, ge=0, le=len(RESIZE_MODES) - 1,
                             description="0 just resize, 1 crop and resize, 2 resize and fill, 3 latent upscale")
    denoising_strength: float = Field(0.75, ge=0.0, le=1.0)
    mask: ImageInput | None = None
    mask_blur: int = Field(4, ge=0, le=64)
    inpainting_fill: int = Field(1, ge=0, le=3, description="0 fill, 1 original, 2 latent noise, 3 latent nothing")
    inpaint_full_res: bool = Field(False, description="inpaint only the masked area")
    inpaint_full_res_padding: int = Field(32, ge=0, le=256)
    inpainting_mask_invert: int = Field(0, ge=0, le=1)
    include_init_images: bool = False

    @field_validator("mask")
    @classmethod
    def _mask_fits_the_image(cls, mask, info: ValidationInfo):
        inits = info.data.get("init_images")  # validated first; absent when they were refused
        if mask is None or not inits:
            return mask
        init = inits[0]
        if mask.width * mask.height == 0:
            raise InvalidRequest("the mask is empty", "mask")
        if abs(mask.width / mask.height - init.width / init.height) > 0.01:
            raise InvalidRequest(f"the mask is {mask.width}x{mask.height} but the image is "
                                 f"{init.width}x{init.height}; send a mask with the image's aspect ratio", "mask")
        return mask

    @property
    def is_inpaint(self) -> bool:
        return self.mask is not None


@dataclass
class GeneratedImage:
    image: Any  # PIL.Image
    infotext: str
    seed: int
    subseed: int
    path: Path | None = None  # where it was saved under outputs/, if it was


@dataclass
class GenerationResult:
    images: list[GeneratedImage] = field(default_factory=list)
    request: GenerationRequest | None = None
    info: dict = field(default_factory=dict)  # the A1111 `info` object (all_seeds, infotexts, …)
    interrupted: bool = False

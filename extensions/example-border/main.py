"""Border: post-processes every generated image in after_generate, before it is saved.

Shows api.add_settings_section (typed, persisted in config.json), api.after_generate
and two routes under /ext/example-border/. Deterministic and cheap: a rectangle drawn
inside the image, so the size stays what was asked for.
"""
import base64
import io
import re

from pydantic import BaseModel, Field, field_validator


class BorderSettings(BaseModel):
    enabled: bool = Field(False, description="Draw a border on every generated image")
    width: int = Field(4, ge=1, le=64, description="Border width in pixels")
    color: str = Field("#000000", description="Border colour, #RRGGBB")

    @field_validator("color")
    @classmethod
    def _hex(cls, value: str) -> str:
        if not re.fullmatch(r"#[0-9a-fA-F]{6}", value):
            raise ValueError("use #RRGGBB, e.g. #ff0000")
        return value.lower()


def draw_border(image, width: int, color: str):
    from PIL import ImageDraw

    out = image.convert("RGB").copy()
    w = min(width, out.width // 2, out.height // 2)
    ImageDraw.Draw(out).rectangle([0, 0, out.width - 1, out.height - 1], outline=color, width=w)
    return out


class ApplyBody(BaseModel):
    image: str = Field(..., description="a base64 PNG or JPEG")


def setup(api):
    api.add_settings_section(BorderSettings, title="Border")

    @api.after_generate
    def add_border(result):
        s = api.settings
        if not s.enabled:
            return None  # None: leave the result as it is
        for g in result.images:
            g.image = draw_border(g.image, s.width, s.color)
            g.infotext += f", Border: {s.width}px {s.color}"
        return result

    @api.get("/settings")
    def current() -> dict:
        return api.settings.model_dump()

    @api.post("/apply")
    def apply(body: ApplyBody) -> dict:
        """Border one image with the current settings (whether or not enabled)."""
        from PIL import Image, UnidentifiedImageError

        try:
            image = Image.open(io.BytesIO(base64.b64decode(body.image.split(",")[-1])))
            image.load()
        except (ValueError, UnidentifiedImageError, OSError):
            raise api.types.InvalidRequest("is not a readable base64 PNG or JPEG", "image") from None
        s = api.settings
        buf = io.BytesIO()
        draw_border(image, s.width, s.color).save(buf, format="PNG")
        return {"image": base64.b64encode(buf.getvalue()).decode()}

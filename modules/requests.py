"""Parsing a JSON body (or a dict from the UI) into a task's typed request — shared by every task,
so each refuses bad input with the same kind of error: InvalidRequest naming the field."""
from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ValidationError, WithJsonSchema

from modules.errors import InvalidRequest
from modules.images import decode_image


def _image(value):
    try:
        return decode_image(value)
    except ValueError as exc:
        raise ValueError(str(exc)) from None


# An image field of any request: base64, a data: URL or a PIL image, decoded with the size limits of images.py.
ImageInput = Annotated[Any, BeforeValidator(_image), WithJsonSchema({"type": "string", "format": "base64"})]


def parse_request(cls: type[BaseModel], data: Any) -> BaseModel:
    """Validate a JSON body (or dict from the UI) into a request; errors name the field."""
    if isinstance(data, cls):
        return data
    if not isinstance(data, dict):
        raise InvalidRequest("the request body must be a JSON object", "body")
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        raise InvalidRequest.from_validation(exc) from None


def check_image_source(images: list, names: list, folder: str | None) -> None:
    """A batch request's source: uploads (with a name each, when named) or a folder under the data dir, not both."""
    from modules.errors import FieldError

    if bool(images) == bool(folder):
        raise FieldError("images", "send either images or a folder under the data dir (one of them)")
    if names and len(names) != len(images):
        raise FieldError("names", f"{len(names)} names for {len(images)} images")

"""Parsing a JSON body (or a dict from the UI) into a task's typed request — shared by every task,
so each refuses bad input with the same kind of error: InvalidRequest naming the field."""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ValidationError

from modules.errors import InvalidRequest


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

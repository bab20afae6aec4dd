"""Errors a person can cause, carrying the field at fault and how to fix it.

The REST layer turns these into a 4xx with a JSON body; the UI shows the message.
Errors of the machine (out of memory, a corrupt file) are also reported through
`AtelierError` subclasses so the job boundary can describe them plainly.
"""
from __future__ import annotations

import re

# Library messages (torch's unpickling errors, say) carry terminal colour codes; a person reads JSON or a UI.
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


class AtelierError(Exception):
    """Base class: `status` is the HTTP status the API answers with."""

    status = 400

    def __init__(self, message: str, field: str | None = None):
        message = _ANSI.sub("", message)
        super().__init__(message)
        self.message = message
        self.field = field

    def to_json(self) -> dict:
        body = {"error": type(self).__name__, "detail": self.message}
        if self.field:
            body["field"] = self.field
        return body

    def __str__(self) -> str:
        return f"{self.field}: {self.message}" if self.field else self.message


class InvalidRequest(AtelierError):
    """A parameter is out of range, of the wrong type or malformed."""

    status = 422

    @classmethod
    def from_validation(cls, exc, default: str = "body", skip: tuple[str, ...] = ()) -> "InvalidRequest":
        """A pydantic ValidationError (or FastAPI's RequestValidationError) → its first problem, naming the field;
        "(N problems in all)" is added when there are more. `default` names the field when the problem is the
        whole object; `skip` drops location parts that name no field (FastAPI's "body", "query", "path")."""
        problems = validation_problems(exc, default, skip)
        field, message = problems[0] if problems else (default, "is invalid")
        extra = f" ({len(problems)} problems in all)" if len(problems) > 1 else ""
        return cls(message + extra, field)


class FieldError(ValueError):
    """Raised inside a pydantic validator for a refusal that names its own field (a model validator
    checking two fields together has no field of its own): the error names `field`, not the model."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


def validation_problems(exc, default: str = "body", skip: tuple[str, ...] = ()) -> list[tuple[str, str]]:
    """Every problem of a pydantic-style validation error as (field, message), in pydantic's order;
    a custom validator's message loses pydantic's "Value error, " prefix."""
    out = []
    for err in exc.errors():
        cause = (err.get("ctx") or {}).get("error")
        if isinstance(cause, FieldError):
            out.append((cause.field, str(cause)))
            continue
        # Not JSON at all: FastAPI's loc then holds a character offset, not a field.
        field = default if err.get("type") == "json_invalid" else \
            ".".join(str(p) for p in err.get("loc", ()) if p not in skip) or default
        out.append((field, str(err.get("msg") or "is invalid").removeprefix("Value error, ")))
    return out


class PathRefused(AtelierError):
    """A user-given name resolves outside the data folders."""

    status = 400


class NotFound(AtelierError):
    status = 404


class ModelLoadError(AtelierError):
    """A model file could not be loaded: corrupt, foreign, unsafe or missing configs."""

    status = 422


class Busy(AtelierError):
    status = 409


class ServiceUnavailable(AtelierError):
    """The studio is still starting (or could not start); the message says which."""

    status = 503

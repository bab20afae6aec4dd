"""Finding and switching the checkpoint: one path for the checkpoint bar, the Models tab and
/sdapi/v1/options, so the UI and the API load the same way and fail with the same error."""
from __future__ import annotations

from modules.errors import AtelierError, InvalidRequest, NotFound, ServiceUnavailable

FIELD = "sd_model_checkpoint"  # A1111's option name: the field every switch error names


def find_checkpoint(studio, name, field: str = FIELD):
    """A checkpoint by name or A1111 title; the folder is read again once before giving up (as A1111 does)."""
    if not isinstance(name, str):
        raise InvalidRequest("must be a checkpoint name (a string)", field)
    try:
        try:
            return studio.registry.get("checkpoint", name)
        except NotFound:
            studio.registry.refresh("checkpoint")
            return studio.registry.get("checkpoint", name)
    except AtelierError as exc:
        exc.field = field
        raise


def switch_checkpoint(studio, name, options: dict | None = None) -> str:
    """Load `name` through the job queue (a running generation finishes on the model it started with), with its
    load `options` when given (remembered unless the load refuses them), then remember it as A1111 does, in
    config.json; a name that fails to load is never written there. Blocks until the load is done; returns the
    checkpoint's name."""
    if not studio.ready.is_set():
        raise ServiceUnavailable("the studio is still starting; try again in a moment", FIELD)
    entry = find_checkpoint(studio, name)
    request = entry.name if options is None else {"name": entry.name, "options": options}
    job = studio.submit("load_checkpoint", request).wait()
    try:
        job.raise_for_error()
    except AtelierError as exc:
        exc.field = exc.field or FIELD
        raise
    studio.settings.update({FIELD: entry.name})
    return entry.name

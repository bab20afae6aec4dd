"""REST routers. Each is thin: JSON → typed request → studio job → JSON."""
from __future__ import annotations


def routers(studio) -> list:
    from webui.api import extensions, jobs, models, openai, sdapi, training, vision

    return [sdapi.router(studio), models.router(studio), jobs.router(studio), vision.router(studio),
            training.router(studio), extensions.router(studio), openai.router(studio)]

"""Helpers of the chat tests (fixtures are in conftest.py)."""
from __future__ import annotations

import base64
import io


def chat(studio, timeout: float = 120, **fields):
    """Submit a chat job and wait (with a deadline); returns the finished job."""
    from modules.chat.params import ChatRequest, parse

    job = studio.submit("chat", parse(ChatRequest, fields))
    job.wait(timeout)
    assert job.state.finished, f"the chat job did not finish within {timeout}s"
    return job


def image_url(color=(200, 30, 30), size=(40, 30)) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def text_of(job) -> str:
    """The text pieces of a job's stream, joined."""
    return "".join(p["text"] for p in job.stream if "text" in p)

"""Interrogate (A1111's "caption this image into a prompt"): the studio's vision caption job, not CLIP/BLIP.

/sdapi/v1/interrogate and img2img's Interrogate button both build the same "vision" request here and
submit it; the vision job picks the model (a PaliGemma in models/VLM) and refuses, naming what to
install, when none can caption.
"""
from __future__ import annotations

from modules.errors import InvalidRequest

# A1111's interrogators: "clip" (its default) means the studio's captioning model; "deepdanbooru" tags do not exist.
DEFAULT_MODELS = ("", "clip")


def caption_request(image, model: str | None = None):
    """A vision request (task caption) for `image` (PIL or base64), with `model` a VLM name or "clip" (the default)."""
    from modules.vision.params import VisionRequest, parse_vision

    name = (model or "").strip()
    if name.lower() == "deepdanbooru":
        raise InvalidRequest("deepdanbooru tags are not available here; use \"clip\" (a caption from the studio's "
                             "vision model) or the name of a captioning model in models/VLM", "model")
    body = {"task": "caption", "image": image, "overlay": False, "save": False}
    if name.lower() not in DEFAULT_MODELS:
        body["model"] = name
    return parse_vision(VisionRequest, body)


def caption_of(job) -> str:
    """The caption a finished vision job made (its error raised as the AtelierError it was)."""
    job.raise_for_error()
    return job.result.text.strip()

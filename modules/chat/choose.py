"""Which model answers a chat: a name looked up in models/LLM, then models/VLM; or the default."""
from __future__ import annotations

from typing import TYPE_CHECKING

from modules.errors import InvalidRequest, NotFound

if TYPE_CHECKING:
    from modules.models.manager import ModelManager
    from modules.models.registry import ModelEntry, ModelRegistry

KINDS = ("llm", "vlm")


def chat_models(registry: "ModelRegistry") -> list["ModelEntry"]:
    """Every language model on disk that can load (what /v1/models and the Chat tab's picker list)."""
    return [e for kind in KINDS for e in registry.list(kind) if not e.problem]


def accepts_images(entry: "ModelEntry") -> bool:
    return bool(entry.metadata.get("accepts_images"))


def find(registry: "ModelRegistry", models: "ModelManager", name: str | None, kind: str | None,
         needs_images: bool = False) -> "ModelEntry":
    """The entry for `name` (kind None: LLM first, then VLM); without a name the default of the kind
    asked for, or — when the messages hold images — the first model that reads images."""
    kinds = (kind,) if kind else KINDS
    if name:
        for k in kinds:
            try:
                return registry.get(k, name)
            except NotFound:
                continue
        for k in kinds:  # a folder added since the last scan
            registry.refresh(k)
            try:
                return registry.get(k, name)
            except NotFound:
                continue
        known = ", ".join(e.name for e in chat_models(registry)) or "none"
        raise NotFound(f"no language model named {name!r} in models/LLM or models/VLM; available: {known}", "model")
    if needs_images:
        for k in kinds:
            for entry in registry.list(k):
                if not entry.problem and accepts_images(entry):
                    return entry
        raise InvalidRequest("the messages hold images but no model in models/VLM reads images; add an image+text "
                             "model (e.g. google/gemma-3-4b-it) or remove the images", "messages")
    for k in kinds:
        try:
            return registry.get(k, models.default_name(k))
        except NotFound:
            continue
    raise NotFound("no language model in models/LLM or models/VLM; add a model folder (e.g. google/gemma-2-2b-it) "
                   "and press Refresh", "model")


def adapter_of(registry: "ModelRegistry", entry: "ModelEntry", name: str | None) -> tuple:
    """(path, name) of the request's adapter, one made for `entry`; (None, None) for the base model."""
    if not name:
        return None, None
    made_for = registry.adapters_for(entry)
    for adapter in made_for:
        if adapter.name == name:
            return adapter.path, adapter.name
    known = ", ".join(a.name for a in made_for) or "none"
    raise InvalidRequest(f"no adapter {name!r} made for {entry.name} in models/LLM-loras; made for it: {known}",
                         "adapter")

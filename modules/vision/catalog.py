"""Which vision tasks there are and which models run them: the built-in tasks (PaliGemma's prefixes,
a chat model's free question) and extensions' tasks, all in the studio's VisionTaskRegistry, so one
listing (GET /atelier/v1/vision/tasks, the Vision tab) shows them all and no extension can take a
built-in name. Decided from what the registry read on disk (config.json), never by loading a model."""
from __future__ import annotations

from typing import TYPE_CHECKING

from modules.errors import InvalidRequest
from modules.vision import vqvae
from modules.vision.params import CHAT_TASKS, PALIGEMMA_TASKS

if TYPE_CHECKING:
    from modules.models.registry import ModelEntry
    from modules.vision.engine import VisionServices

BUILTIN_OWNER = "builtin"
VLM_KIND = "vlm"
ADAPTER_KIND = "lm_adapter"  # PEFT adapter folders (models/LLM-loras), listed under the model they were made for
# name: (title, description, the request fields it reads)
BUILTIN = {
    "caption": ("Caption (short)", "PaliGemma: caption {language}", ["language"]),
    "describe": ("Caption (long)", "PaliGemma: describe {language}", ["language"]),
    "ocr": ("Read text (OCR)", "PaliGemma: ocr", []),
    "answer": ("Answer a question", "PaliGemma: answer {language} {question}", ["question", "language"]),
    "detect": ("Detect objects", "PaliGemma: detect cat ; dog — boxes", ["objects"]),
    "segment": ("Segment objects", "PaliGemma: segment cat — boxes and masks (needs vae-oid.npz)", ["objects"]),
    "raw": ("Raw prefix", "PaliGemma: the prefix as given, for fine-tuned models", ["prompt"]),
    "question": ("Ask about the image", "an image+text chat model (Gemma 3): one turn of its chat template",
                 ["question"]),
}


def family(entry: "ModelEntry") -> str | None:
    """"paligemma", "chat" (an image+text model with a chat template, e.g. Gemma 3) or None."""
    meta = entry.metadata or {}
    if entry.problem:
        return None
    if meta.get("model_type") == "paligemma":
        return "paligemma"
    if meta.get("accepts_images") and meta.get("chat_template"):
        return "chat"
    return None


def runs(entry: "ModelEntry", task: str) -> bool:
    fam = family(entry)
    return (fam == "paligemma" and task in PALIGEMMA_TASKS) or (fam == "chat" and task in CHAT_TASKS)


def decoder_path(services: "VisionServices"):
    return services.paths.model_dir(VLM_KIND) / vqvae.FILE_NAME


def spec_of(services: "VisionServices", task: str):
    spec = services.tasks.get(task)
    if spec is None:
        known = ", ".join(s.name for s in services.tasks.list())
        raise InvalidRequest(f"unknown vision task {task!r}; known: {known}", "task")
    return spec


def models_for(services: "VisionServices", spec) -> list["ModelEntry"]:
    if spec.owner == BUILTIN_OWNER:
        return [e for e in services.registry.list(VLM_KIND) if runs(e, spec.name)]
    if spec.model_kind and spec.model_kind in services.paths.model_kinds():
        return [e for e in services.registry.list(spec.model_kind) if not e.problem]
    return []


def resolve_model(services: "VisionServices", spec, name: str | None) -> "ModelEntry | None":
    """The entry that runs `spec` (the named one, or the first that can); refusals name `model` or `task`."""
    if spec.owner != BUILTIN_OWNER and not spec.model_kind:
        return None  # a task without models (e.g. an image statistic)
    kind = VLM_KIND if spec.owner == BUILTIN_OWNER else spec.model_kind
    if not name:
        able = models_for(services, spec)
        if not able:
            raise InvalidRequest(f"no model in models/{services.paths.model_dir(kind).name} can run {spec.name!r}"
                                 + (" (PaliGemma tasks need a PaliGemma folder; question needs an image+text "
                                    "chat model such as Gemma 3)" if spec.owner == BUILTIN_OWNER else ""), "model")
        return able[0]
    entry = services.registry.get(kind, name, field="model")
    if spec.owner == BUILTIN_OWNER and not runs(entry, spec.name):
        fam = family(entry)
        can = {"paligemma": ", ".join(PALIGEMMA_TASKS), "chat": ", ".join(CHAT_TASKS)}.get(fam)
        what = {"paligemma": "a PaliGemma model", "chat": "an image+text chat model"}.get(fam, "not a vision model")
        raise InvalidRequest(f"{entry.name} is {what}: it cannot run {spec.name!r}"
                             + (f"; it runs {can}" if can else ""), "task")
    return entry


def resolve_adapter(services: "VisionServices", spec, entry: "ModelEntry | None",
                    name: str | None) -> "ModelEntry | None":
    """The PEFT adapter (models/LLM-loras) chosen for `entry`, or None; refusals name `adapter`."""
    from modules.errors import NotFound

    if not name:
        return None
    if spec.owner != BUILTIN_OWNER or entry is None:
        raise InvalidRequest(f"{spec.name!r} is an extension's task: adapters apply to the built-in tasks' models",
                             "adapter")
    registry = services.registry
    try:
        adapter = registry.get(ADAPTER_KIND, name, field="adapter")
    except NotFound:
        registry.refresh(ADAPTER_KIND)  # one trained or copied in since the last scan
        adapter = registry.get(ADAPTER_KIND, name, field="adapter")
    if adapter.problem:
        raise InvalidRequest(f"{adapter.name} cannot be used: {adapter.problem}", "adapter")
    made_for = [a.name for a in registry.adapters_for(entry)]
    if adapter.name not in made_for:
        raise InvalidRequest(f"{adapter.name} was made for {adapter.metadata.get('base_model')!r}, not {entry.name}; "
                             f"adapters of {entry.name}: {', '.join(made_for) or 'none'}", "adapter")
    return adapter


def listing(services: "VisionServices") -> list[dict]:
    """Every task with the models that can run it and whether it is ready (segment: the VQ-VAE file)."""
    rows = []
    for spec in services.tasks.list():
        builtin = spec.owner == BUILTIN_OWNER
        problem = None
        if spec.name == "segment" and builtin and not decoder_path(services).is_file():
            problem = vqvae.missing_message(decoder_path(services).parent)
        rows.append({
            "name": spec.name, "title": spec.title, "description": spec.description, "owner": spec.owner,
            "model_kind": VLM_KIND if builtin else spec.model_kind,
            "models": [e.name for e in models_for(services, spec)],
            "adapters": {e.name: [a.name for a in services.registry.adapters_for(e)]
                         for e in models_for(services, spec)} if builtin else {},
            "fields": BUILTIN[spec.name][2] if builtin else ["options"],
            "options": dict(spec.options), "ready": problem is None, "problem": problem,
        })
    return rows

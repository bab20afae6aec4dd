"""Runs vision jobs: a typed request in, a VisionResult (the JSON shape of results.py, the overlay) out.

One image (job kind "vision") or a batch (batch.py) run the same `run_one`: the task from the
studio's VisionTaskRegistry; a built-in task gets its model from the model manager
(`with services.models.use("vlm", name) as lm:`) and PaliGemma's prompt, or — a free question to a chat
model (Gemma 3) — the chat engine's own template and generation (services.chat_answer); an
extension's task gets `run(image, options)`. Runners see `ctx.services` (VisionServices), never the Studio.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

from modules.errors import InvalidRequest
from modules.extensions.registries import VisionTaskSpec
from modules.vision import catalog, overlay, results
from modules.vision.params import OBJECT_TASKS, VisionBatchRequest, VisionOptions, VisionRequest, parse_vision
from modules.vision.vqvae import DecoderCache

if TYPE_CHECKING:
    from modules.extensions.registries import VisionTaskRegistry
    from modules.jobs import JobContext
    from modules.models.manager import ModelManager
    from modules.models.registry import ModelRegistry
    from modules.outputs import OutputWriter
    from modules.paths import DataPaths

OUTPUT_SUBDIR = "vision"


@dataclass(frozen=True)
class VisionServices:
    """What a vision job sees of the studio."""

    models: "ModelManager"
    registry: "ModelRegistry"
    outputs: "OutputWriter"
    tasks: "VisionTaskRegistry"
    chat_answer: Callable[..., str]  # the chat engine's one reply (Registrar.chat_answer): the free question
    decoders: DecoderCache = field(default_factory=DecoderCache)

    @property
    def paths(self) -> "DataPaths":
        return self.registry.paths  # swapped when an extension adds a model kind


def builtin_specs(services: VisionServices) -> list[VisionTaskSpec]:
    """The built-in tasks as registry entries; `run(image, options)` works for them too (options: the
    request's fields), so an extension can call a built-in task the way it calls its own."""
    def runner(name: str) -> Callable:
        def run(image, options: dict) -> dict:
            req = parse_vision(VisionRequest, {**(options or {}), "task": name, "image": image, "overlay": False})
            return run_one(services, req, req.image).to_json()
        return run

    return [VisionTaskSpec(name=name, run=runner(name), title=title, description=description,
                           model_kind=catalog.VLM_KIND, owner=catalog.BUILTIN_OWNER)
            for name, (title, description, _fields) in catalog.BUILTIN.items()]


def validator(services: VisionServices) -> Callable[[object], None]:
    """The submit-time check: the task exists, the model can run it, segment's decoder file is there,
    a batch's folder is inside the data dir — refused before the request waits in the queue."""
    def validate(req) -> None:
        if not isinstance(req, VisionOptions):
            raise InvalidRequest("send a vision request (model, task, image …)", "request")
        spec = catalog.spec_of(services, req.task)
        entry = catalog.resolve_model(services, spec, req.model)
        if spec.check is not None:  # an extension task's own options, refused now rather than per image
            spec.check(task_options(spec, req, entry))
        catalog.resolve_adapter(services, spec, entry, req.adapter)
        if req.task == "segment" and spec.owner == catalog.BUILTIN_OWNER:
            services.decoders.get(catalog.decoder_path(services))  # missing or broken: refused now, naming the file
        if isinstance(req, VisionBatchRequest) and req.folder:
            from modules.vision.batch import folder_images

            folder_images(services, req.folder)
    return validate


def run_vision(ctx: "JobContext", req: VisionRequest) -> results.VisionResult:
    """Job kind "vision": one image."""
    services: VisionServices = ctx.services
    ctx.progress(0, 1, text=f"{req.task} …")
    result = run_one(services, req, req.image, stop=lambda: ctx.interrupted)
    if req.save:
        result.saved = save(services, result, req.task)
    ctx.progress(1, 1, text=f"{req.task}: {len(result.objects)} objects" if req.task in OBJECT_TASKS else req.task)
    return result


def run_one(services: VisionServices, req: VisionOptions, image, stop: Callable[[], bool] | None = None
            ) -> results.VisionResult:
    started = time.perf_counter()
    spec = catalog.spec_of(services, req.task)
    entry = catalog.resolve_model(services, spec, req.model)
    adapter = catalog.resolve_adapter(services, spec, entry, req.adapter)
    if spec.owner == catalog.BUILTIN_OWNER:
        result = _builtin(services, req, entry, adapter, image, stop)
    else:
        value = spec.run(image, task_options(spec, req, entry))
        result = results.from_extension(value, model=entry.name if entry else "", task=req.task,
                                        prompt=req.prompt, width=image.width, height=image.height)
    if req.overlay:
        result.overlay = overlay.draw(image, result.objects)
    result.seconds = time.perf_counter() - started
    return result


def task_options(spec: VisionTaskSpec, req: VisionOptions, entry) -> dict:
    """What an extension's task gets as `options`: its defaults, the request's options and its text fields."""
    return {**spec.options, **req.options, "model": entry.name if entry else None, "objects": req.objects,
            "prompt": req.prompt, "question": req.question, "language": req.language,
            "max_new_tokens": req.max_new_tokens}


def _builtin(services: VisionServices, req: VisionOptions, entry, adapter, image, stop) -> results.VisionResult:
    from modules.vision import decode, paligemma

    segment = req.task == "segment"
    decoder = services.decoders.get(catalog.decoder_path(services)) if segment else None
    with services.models.use(catalog.VLM_KIND, entry.name) as lm, adapter_applied(lm, adapter):
        if req.task == "question":
            prompt = (req.question or req.prompt).strip()
            question = [{"role": "user", "content": [{"type": "image", "image": image.convert("RGB")},
                                                     {"type": "text", "text": prompt}]}]
            text = services.chat_answer(lm, question, req.new_tokens, stop)
        else:
            prompt = paligemma.prefix(req)
            text = paligemma.generate(lm, image, prompt, req.new_tokens, stop)
    result = results.VisionResult(model=entry.name, task=req.task, prompt=prompt, text=text,
                                  width=image.width, height=image.height, adapter=adapter.name if adapter else None)
    if req.task in OBJECT_TASKS:
        result.objects, result.invalid = decode.objects_from_text(text, image.width, image.height, segment,
                                                                  req.objects, decoder)
    if decoder is not None and decoder.demo:
        result.notes.append(f"the mask decoder is Atelier's demo {catalog.vqvae.FILE_NAME} (random weights): put "
                            "big_vision's real file into models/VLM for real masks")
    return result


def adapter_applied(lm, adapter):
    """The chosen adapter answers for the request; the base model again after it (chat shares the model)."""
    return lm.adapter_active(adapter.path if adapter else None, adapter.name if adapter else None)


def save(services: VisionServices, result: results.VisionResult, name: str) -> dict:
    """The overlay PNG (or the image's JSON alone, without an overlay) and the JSON, under one number in
    outputs/vision/<date>/; returns their paths relative to outputs/."""
    import io

    files = {".json": (json.dumps(result.to_json(), ensure_ascii=False) + "\n").encode("utf-8")}
    if result.overlay is not None:
        buf = io.BytesIO()
        result.overlay.save(buf, format="PNG")
        files = {".png": buf.getvalue(), **files}
    written = services.outputs.save_files(OUTPUT_SUBDIR, name, files)
    return {suffix.lstrip("."): path.relative_to(services.outputs.root).as_posix() for suffix, path in written.items()}

"""The training job's runner, in the server process, for every kind (built in or an extension's): check the
request, prepare the run folder, free the device, run the kind's training process (under accelerate, or with
an extension's own interpreter), make its result visible at once."""
from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from modules.jobs.child_failures import ChildFailed
from modules.training.launch import accelerate_launcher
from modules.errors import InvalidRequest
from modules.training.params import BaseTrainingRequest, Checked, DreamBoothRequest, TrainingRequest, check, parse
from modules.training.runfolder import RunFolder

if TYPE_CHECKING:
    from modules.training.task import TrainingServices

log = logging.getLogger("atelier.training")

_MEMORY_WORDS = ("out of memory", "memory limit", "using too much memory")


def run_training(ctx, request: Any) -> dict:
    services: "TrainingServices" = ctx.services
    req = parse(request, services.kinds)
    spec = services.kinds.get(req.kind)
    checked = check(req, services)  # again: the data dir may have changed while the job waited
    if isinstance(req, DreamBoothRequest) and req.prior_preservation and checked.class_images < req.num_class_images:
        raise InvalidRequest(f"the class folder holds {checked.class_images} readable class images of the "
                             f"{req.num_class_images} asked; add images or lower num_class_images", "class_dataset")
    run = RunFolder(checked.run_dir)
    base = _base_info(checked, services)
    run.prepare(req.model_dump(mode="json"), {"base": base, "dataset": str(checked.dataset_dir),
                                               "skipped": checked.scan.skipped, "steps": checked.steps.to_json(),
                                               "created_at": time.time()}, fresh=not req.resume)
    if req.OUTPUT_KIND == "lm_adapter":  # datasets of lines: say so even when none was skipped
        ctx.log(f"{len(checked.scan.skipped)} example(s) skipped" if checked.scan.skipped else "no example skipped")
    for path, why in checked.scan.skipped[:50]:
        ctx.log(f"skipped {path}: {why}")
    ctx.log(f"step math: {checked.steps.formula}")
    ctx.progress(0, checked.steps.total_steps, text="starting the training process")
    services.models.vacate_device()
    child_request = {
        "request": req.model_dump(mode="json"), "base": base, "data_root": str(services.paths.root),
        "dataset_dir": str(checked.dataset_dir), "run_dir": str(run.root), "output": str(checked.output),
        "steps": checked.steps.to_json(), "class_dir": str(checked.class_dir) if checked.class_dir else None,
        "merged_output": str(checked.merged) if checked.merged else None, "extra": checked.extra,
        "device": services.device_name(),
    }
    if spec.python is None:  # the built-in kinds: the studio's Python under accelerate (CPU, one GPU or DDP)
        launcher = accelerate_launcher(services.device_name(), services.gpu_count(), req.mixed_precision, req.gpus)
    else:  # an extension's kind: its own interpreter, one process
        launcher = [str(spec.python)]
    try:
        result = ctx.run_child(spec.child, child_request, launcher=launcher, memory_limit_mb=None,
                               stop_grace_s=spec.stop_grace_s, env={"TOKENIZERS_PARALLELISM": "false", **spec.env})
    except ChildFailed as exc:
        if isinstance(req, TrainingRequest) and any(word in exc.message for word in _MEMORY_WORDS):
            raise ChildFailed(f"{exc.message}\n{memory_hint(req, services.device_name())}", exc.field) from None
        raise
    if isinstance(result, dict) and spec.finish is not None:
        spec.finish(result)  # an extension's step in the server (YOLO trusts the weights the studio made)
    if isinstance(result, dict) and result.get("output"):
        services.registry.refresh(_output_kind(req))  # in the LoRA / adapter pickers (or the checkpoint list) at once
    if isinstance(result, dict) and result.get("merged_output"):
        services.registry.refresh("vlm")  # the merged PaliGemma, in the Vision tab's models at once
    return result


def _base_info(checked: Checked, services: "TrainingServices") -> dict:
    """What run.json and the child say of the base: the registry entry (with its hash), or an extension's own."""
    if checked.base is None:
        return dict(checked.base_info or {})
    return {"name": checked.base.name, "path": str(checked.base.path), "format": checked.base.format,
            "arch": checked.base.arch, "sha256": services.registry.ensure_hash(checked.base), "size": checked.base.size}


def _output_kind(req: BaseTrainingRequest) -> str:
    if isinstance(req, DreamBoothRequest) and req.mode == "full":
        return "checkpoint"
    return req.OUTPUT_KIND


def memory_hint(req: TrainingRequest, device_name: str) -> str:
    """Which options to lower, for the request that ran out of memory, most effective first."""
    lower = [f"batch_size (now {req.batch_size}; raise gradient_accumulation to keep the effective batch)"]
    if getattr(req, "cutoff_len", 0) > 256:
        lower.append(f"cutoff_len (now {req.cutoff_len})")
    if getattr(req, "quantization", "nf4") == "none":
        lower.append("quantization nf4 (QLoRA)")
    resolution = getattr(req, "resolution", None)
    if resolution and resolution > 256:
        lower.append(f"resolution (now {resolution})")
    if not req.gradient_checkpointing:
        lower.append("turn on gradient_checkpointing")
    if req.mixed_precision == "no" and device_name == "cuda":
        lower.append("mixed_precision bf16 or fp16")
    if getattr(req, "train_text_encoder", False):
        lower.append("turn off train_text_encoder")
    if getattr(req, "cache_latents", True) is False:
        lower.append("turn on cache_latents")
    rank = getattr(req, "rank", 0)
    if rank > 32:
        lower.append(f"rank (now {rank})")
    return "To fit, lower: " + "; ".join(lower) + "."


def describe(checked: Checked) -> dict:
    """The step math and what the dataset check found (the tab's "before Start" panel)."""
    return {"steps": checked.steps.to_json(), "images": len(checked.scan.items), "skipped": checked.scan.skipped,
            "folders": checked.scan.folders}

"""What the Train tab and REST read beside the jobs: the plan before Start (step math, memory
estimate, what the dataset check found), the runs on disk, and a resume request for one."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from modules.errors import NotFound
from modules.paths import resolve_inside
from modules.training.params import PeftAdapterRequest, TrainingRequest, check, load_saved_request, parse
from modules.training.runfolder import RunFolder

if TYPE_CHECKING:
    from modules.training.params import BaseTrainingRequest
    from modules.training.task import TrainingServices

# The UNet's share of an SD checkpoint's weights (SD1.5: 3.44 of 4.27 GB; SDXL: 10.3 of 13.9 GB).
_UNET_FRACTION = {"sdxl": 0.74}


def plan(data: Any, services: "TrainingServices") -> dict:
    """The step math and a memory estimate for a request; refusals as at submit (but an existing
    output name is not one here: the plan is shown while the form is filled in)."""
    from modules.training.memory import estimate_dreambooth, estimate_lm_lora, estimate_sd_lora

    req = parse(data, services.kinds)
    checked = check(req, services, outputs=False)
    if not isinstance(req, TrainingRequest):  # an extension's kind: no estimate of ours
        memory = None
    elif isinstance(req, PeftAdapterRequest):  # an LLM or PaliGemma (its language model dominates) adapter
        memory = estimate_lm_lora(checked.base.size, req.quantization, req.mixed_precision, req.batch_size,
                                  req.cutoff_len, req.rank, req.gradient_checkpointing, req.optimizer)
    elif req.kind == "dreambooth":
        memory = estimate_dreambooth(checked.base.size, _UNET_FRACTION.get(checked.base.arch or "", 0.8), req)
    else:
        memory = estimate_sd_lora(checked.base.size, _UNET_FRACTION.get(checked.base.arch or "", 0.8), req.resolution,
                              req.batch_size, req.mixed_precision, req.rank, req.train_text_encoder,
                              req.gradient_checkpointing, req.cache_latents, req.optimizer)
    return {"steps": checked.steps.to_json(), "memory": memory, "images": len(checked.scan.items),
            "skipped": [list(s) for s in checked.scan.skipped], "folders": checked.scan.folders,
            "base_model": checked.base_name, "processes": checked.processes,
            "output_exists": checked.output.exists(), "run_exists": checked.run_dir.exists(),
            "class_images": _class_images(req, checked, services)}


def _class_images(req, checked, services: "TrainingServices") -> dict | None:
    """DreamBooth's class folder: how many it holds, how many the run uses, how many txt2img will make."""
    if checked.class_dir is None:
        return None
    return {"folder": checked.class_dir.relative_to(services.paths.root.resolve()).as_posix(),
            "have": checked.class_images, "wanted": req.num_class_images,
            "to_make": max(0, req.num_class_images - checked.class_images)}


def list_runs(services: "TrainingServices") -> list[dict]:
    root = services.paths.training
    rows = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []:
        run = RunFolder(folder)
        saved = load_saved_request(folder, services.kinds)
        checkpoints = run.checkpoint_list()
        rows.append({"name": folder.name, "kind": getattr(saved, "kind", None),
                     "checkpoints": [{"step": step, "path": str(path)} for step, path in checkpoints],
                     "resumable": saved is not None and bool(checkpoints),
                     "request": saved.model_dump(mode="json") if saved else None})
    return rows


def resume_request(run_name: str, services: "TrainingServices") -> "BaseTrainingRequest":
    """The run's saved request, marked to resume from its latest checkpoint."""
    folder = resolve_inside(services.paths.training, run_name, field_name="run", must_exist=False)
    saved = load_saved_request(folder, services.kinds)
    if saved is None:
        raise NotFound(f"no training run named {run_name!r} (training/{run_name}/request.json)", "run")
    return saved.model_copy(update={"resume": True, "overwrite": False})

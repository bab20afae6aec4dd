"""The data-dir checks of a DreamBooth request (params.check calls this): the base model (mode "full"
writes SD1.x single files), the instance images, the class folder and how many class images it holds,
the outputs (a LoRA, or a checkpoint file with its diffusers folder and configs), the step math."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from modules.errors import AtelierError, InvalidRequest
from modules.paths import resolve_inside
from modules.training.params import (
    SD_ARCHS,
    Checked,
    DreamBoothRequest,
    _base_entry,
    _check_device,
    _check_output,
    resolve_dataset,
    scan_images,
)

if TYPE_CHECKING:
    from modules.training.task import TrainingServices

FULL_ARCHS = ("sd1",)  # the single-file writer (models/singlefile.py) knows SD1.x's original key layout
SIDECAR_SUFFIX = ".config"  # the registry's: `<name>.config/` beside `<name>.safetensors` holds its configs


def full_outputs(checkpoints: Path, name: str) -> tuple[Path, Path, Path]:
    """(single file, diffusers folder, the single file's config sidecar) of a full fine-tune."""
    return (checkpoints / f"{name}.safetensors", checkpoints / name, checkpoints / f"{name}{SIDECAR_SUFFIX}")


def class_folder(request: DreamBoothRequest, root: Path, dataset_dir: Path) -> Path:
    try:
        folder = resolve_inside(root, request.class_folder_name, field_name="class_dataset", must_exist=False)
    except AtelierError as exc:
        raise InvalidRequest(exc.message, "class_dataset") from None
    if folder.exists() and not folder.is_dir():
        raise InvalidRequest(f"{request.class_folder_name!r} is a file, not a folder of class images",
                             "class_dataset")
    resolved, instance = folder.resolve(), dataset_dir.resolve()
    if resolved == instance or instance in resolved.parents or resolved in instance.parents:
        raise InvalidRequest("the class folder must lie outside the instance images' folder (and hold it not): "
                             "the instance scan would read the class images", "class_dataset")
    return folder


def count_class_images(folder: Path, class_prompt: str) -> int:
    from modules.training.dataset import scan_dataset

    if not folder.is_dir():
        return 0
    try:
        return len(scan_dataset(folder, class_prompt).items)
    except OSError as exc:
        raise InvalidRequest(f"the class folder cannot be read: {exc.strerror or exc}", "class_dataset") from None


def check_dreambooth(request: DreamBoothRequest, services: "TrainingServices", outputs: bool) -> Checked:
    from modules.training.buckets import bucket_counts
    from modules.training.plan import step_math

    paths = services.registry.paths
    base = _base_entry(request, services, "checkpoint", SD_ARCHS)
    if request.mode == "full" and base.arch and base.arch not in FULL_ARCHS:
        raise InvalidRequest(f"{base.name} is {base.arch.upper()}; a full fine-tune writes SD1.x checkpoints "
                             '(the single-file layout of SD2 / SDXL is not written yet): use mode "lora"', "mode")
    _check_device(request, services.device_name())
    dataset_dir = resolve_dataset(request.dataset, paths.root)
    scan = scan_images(dataset_dir, request.instance_prompt, request.dataset)
    class_dir, class_images = None, 0
    if request.prior_preservation:
        class_dir = class_folder(request, paths.root, dataset_dir)
        class_images = count_class_images(class_dir, request.class_prompt)
    if request.mode == "full":
        output, *also = full_outputs(paths.model_dir("checkpoint"), request.output_name)
    else:
        output, also = paths.model_dir("lora") / f"{request.output_name}.safetensors", []
    output = resolve_inside(output.parent, output.name, "output_name", must_exist=False)
    run_dir = resolve_inside(paths.training, request.run_name, "output_name", must_exist=False)
    if outputs:
        _check_output(request, output, run_dir, tuple(also))
    processes = services.processes(request.gpus)
    buckets = bucket_counts([(i.width, i.height, i.repeats) for i in scan.items], request.resolution,
                            request.bucketing)
    steps = step_math(len(scan.items), scan.samples_per_epoch, request.epochs, request.batch_size,
                      request.gradient_accumulation, list(buckets.values()), class_images=request.prior_preservation,
                      max_steps=request.max_steps, processes=processes)
    return Checked(request, base, dataset_dir, scan, output, run_dir, steps, processes, class_dir=class_dir,
                   class_images=class_images, also_written=tuple(also))

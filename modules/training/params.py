"""Typed training requests — the one place training input is validated.

The Train tab, POST /atelier/v1/train and extensions build the same objects. Two layers, both
here: the request's own fields (types and ranges, pydantic), then `check()`, which reads the data
dir — the dataset folder (inside the data dir, with readable images), the base model (of the
right kind), the output name (refused when it exists, unless `overwrite`), the device (options
that need a GPU). Every refusal is an AtelierError naming its field.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

from modules.errors import AtelierError, InvalidRequest, NotFound
from modules.paths import resolve_inside

if TYPE_CHECKING:
    from modules.models.registry import ModelEntry
    from modules.training.dataset import DatasetScan
    from modules.training.kinds import TrainingKindRegistry
    from modules.training.plan import StepMath
    from modules.training.task import TrainingServices

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._ -]{0,99}$"  # a file stem: no folders, no leading dot
PositiveFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]
SCHEDULERS = ("constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts", "polynomial")
SD_ARCHS = ("sd1", "sd2", "sdxl")


class OutputExists(AtelierError):
    status = 409


class BaseTrainingRequest(BaseModel):
    """What every training kind shares, an extension's too (api.types.TrainingRequest): a kind adds a
    `kind: Literal["its name"]` field and its own."""

    model_config = ConfigDict(extra="forbid")

    output_name: str = Field(..., pattern=NAME_PATTERN, description="the result's name (file stem); also the run's")
    overwrite: bool = Field(False, description="replace an existing result and run folder of this name")
    resume: bool = Field(False, description="continue the run of this name from its latest checkpoint")
    base_model: str | None = Field(None, max_length=400, description="None: the studio's current model of the kind")
    dataset: str = Field(..., min_length=1, max_length=1024, description="a folder inside the data dir")
    seed: int = Field(42, ge=0, le=2**32 - 1)
    epochs: int = Field(1, ge=1, le=10_000)
    batch_size: int = Field(1, ge=1, le=64)

    @property
    def run_name(self) -> str:
        return self.output_name

    # The model kind the result is listed as (the registry refreshes it when the training is done).
    OUTPUT_KIND: ClassVar[str] = "lora"
    # Fields a resume may change: they do not alter the training's state or schedule.
    RESUMABLE_CHANGES: ClassVar[tuple[str, ...]] = ("resume", "overwrite", "save_every", "keep_checkpoints", "stop_after_steps", "gpus")
    # What `base_model` names and `dataset` may be, for the check and the Train tab's pickers: the model kind
    # (models/<its folder>), and the files that can be a dataset besides a folder of images.
    BASE_MODEL_KIND: ClassVar[str] = "checkpoint"
    DATASET_FILES: ClassVar[tuple[str, ...]] = ()
    # Base-model names the picker offers beside the files of BASE_MODEL_KIND (YOLO's architecture .yaml names).
    BASE_MODEL_CHOICES: ClassVar[tuple[str, ...]] = ()


class TrainingRequest(BaseTrainingRequest):
    """What the built-in kinds (under accelerate) share besides: the schedule, the optimizer, checkpoints."""

    max_steps: int | None = Field(None, ge=1, le=1_000_000, description="when set, decides the length (not epochs)")
    gradient_accumulation: int = Field(1, ge=1, le=256)
    optimizer: Literal["adamw", "adamw8bit", "prodigy", "adafactor"] = "adamw"
    weight_decay: float = Field(1e-2, ge=0, le=1)
    lr_scheduler: Literal[SCHEDULERS] = "constant"
    lr_warmup_steps: int = Field(0, ge=0, le=1_000_000)
    max_grad_norm: float = Field(1.0, ge=0, le=1000, description="0: no clipping")
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"
    gradient_checkpointing: bool = False
    save_every: int = Field(0, ge=0, le=1_000_000, description="steps between checkpoints; 0: on Stop only")
    keep_checkpoints: int = Field(2, ge=1, le=100)
    stop_after_steps: int | None = Field(None, ge=1, description="save a checkpoint and stop after this step, "
                                                                 "as Stop does (resume later)")
    gpus: Literal["all", "one"] = Field("all", description="on a machine with several GPUs: DDP over all, or one")


class SdTrainingRequest(TrainingRequest):
    """What the Stable Diffusion kinds share (SD LoRA, DreamBooth): image size, the network, rates, samples."""

    resolution: int = Field(512, ge=64, le=2048, multiple_of=64)
    bucketing: bool = Field(True, description="aspect-ratio buckets (never upscales); off: square crops")
    rank: int = Field(8, ge=1, le=1024, description="network_dim")
    alpha: PositiveFloat | None = Field(None, description="network_alpha; None: the rank (scale 1)")
    unet_lr: PositiveFloat = 1e-4
    text_encoder_lr: PositiveFloat = 5e-5
    train_text_encoder: bool = False
    min_snr_gamma: PositiveFloat | None = Field(None, description="min-SNR weighting (5 is common); None: off")
    noise_offset: float = Field(0.0, ge=0, le=1)
    cache_latents: bool = True
    cache_text_encoder_outputs: bool = Field(True, description="when the text encoder is not trained")
    sample_every: int = Field(0, ge=0, le=1_000_000, description="steps between sample images; 0: at the end only")
    sample_prompts: list[Annotated[str, Field(max_length=1000)]] = Field(default_factory=list, max_length=8)
    sample_steps: int = Field(20, ge=1, le=150)
    sample_seed: int = Field(0, ge=0, le=2**32 - 1)

    @property
    def network_alpha(self) -> float:
        return float(self.alpha) if self.alpha is not None else float(self.rank)


class SdLoraRequest(SdTrainingRequest):
    """A LoRA for an SD1.x / SD2.x / SDXL checkpoint of models/Stable-diffusion (kohya/A1111 format out)."""

    kind: Literal["sd_lora"] = "sd_lora"
    default_caption: str = Field("", max_length=1000, description="for images without a caption file")


LORA_ONLY_FIELDS = ("rank", "alpha")  # what mode "full" has no use for


class DreamBoothRequest(SdTrainingRequest):
    """DreamBooth (diffusers' train_dreambooth.py, kohya's DreamBooth): a subject from a few instance images
    under a unique token, with prior preservation on class images (generated when missing). Mode "lora":
    a kohya-format LoRA into models/Lora; "full": a new SD1.x checkpoint into models/Stable-diffusion, as a
    single .safetensors (A1111 / ComfyUI) and a diffusers folder. `dataset` holds the instance images."""

    kind: Literal["dreambooth"] = "dreambooth"
    mode: Literal["lora", "full"] = Field("lora", description='"lora": a LoRA into models/Lora; "full": the whole '
                                                              "UNet (and text encoder) trained, a new checkpoint "
                                                              "(lower unet_lr: 5e-6 is diffusers' default)")
    instance_prompt: str = Field(..., min_length=1, max_length=1000,
                                 description='the unique token and the class, e.g. "a photo of sks dog": the '
                                             "caption of every instance image (a .txt caption file or a kohya "
                                             '"N_name" folder name comes first)')
    prior_preservation: bool = Field(True, description="train on class images too, so the class keeps its look")
    class_prompt: str = Field("", max_length=1000, description='the class without the token, e.g. "a photo of a '
                                                               'dog"; needed with prior_preservation')
    class_dataset: str | None = Field(None, max_length=1024,
                                      description="a folder inside the data dir for the class images (kept for "
                                                  "the next run); None: class_images/<class prompt>")
    num_class_images: int = Field(100, ge=1, le=10_000, description="class images to train with; the missing ones "
                                                                     "are made from class_prompt by txt2img with "
                                                                     "the base model")
    class_steps: int = Field(25, ge=1, le=150, description="sampling steps of each generated class image")
    prior_loss_weight: float = Field(1.0, ge=0, le=100, allow_inf_nan=False,
                                     description="weight of the class images' loss")

    @property
    def class_folder_name(self) -> str:
        if self.class_dataset:
            return self.class_dataset
        slug = re.sub(r"[^A-Za-z0-9._-]+", "_", self.class_prompt).strip("._-")[:80]
        return f"class_images/{slug or 'class'}"

    @model_validator(mode="after")
    def _fields_of_the_mode(self):
        if self.prior_preservation and not self.class_prompt.strip():
            raise InvalidRequest('prior preservation needs a class prompt, e.g. "a photo of a dog" (or turn '
                                 "prior_preservation off)", "class_prompt")
        if self.mode == "full":
            for name in LORA_ONLY_FIELDS:
                if getattr(self, name) != type(self).model_fields[name].default:
                    raise InvalidRequest(f"{name} applies to mode \"lora\"; a full fine-tune trains every "
                                         "weight (leave it at its default)", name)
        return self


class PeftAdapterRequest(TrainingRequest):
    """What the kinds that write a PEFT adapter folder into models/LLM-loras share: LoRA, optional QLoRA."""

    OUTPUT_KIND: ClassVar[str] = "lm_adapter"

    rank: int = Field(8, ge=1, le=1024, description="LoRA rank (r)")
    alpha: PositiveFloat = Field(16.0, description="LoRA alpha; the update is scaled by alpha / rank")
    dropout: float = Field(0.05, ge=0, lt=1, description="LoRA dropout")
    learning_rate: PositiveFloat = 2e-4
    quantization: Literal["none", "nf4"] = Field("none", description="nf4: QLoRA (a 4-bit base, double quant)")
    double_quant: bool = Field(True, description="nf4: quantize the quantization constants too")

    @property
    def network_alpha(self) -> float:
        return float(self.alpha)


class LmLoraRequest(PeftAdapterRequest):
    """A LoRA / QLoRA adapter for a causal LM of models/LLM (a PEFT adapter folder in models/LLM-loras)."""

    kind: Literal["lm_lora"] = "lm_lora"
    BASE_MODEL_KIND: ClassVar[str] = "llm"
    DATASET_FILES: ClassVar[tuple[str, ...]] = (".jsonl", ".txt")
    format: Literal["auto", "chat", "text"] = Field("auto", description="chat: JSONL messages; text: raw text")
    cutoff_len: int = Field(512, ge=16, le=32_768, description="tokens per example; longer ones are cut")
    packing: bool = Field(False, description="join examples into rows of cutoff_len tokens")
    target_modules: Union[Literal["all-linear"], list[Annotated[str, Field(min_length=1, max_length=100)]]] = (
        Field("all-linear", description='"all-linear" or module names such as ["q_proj", "v_proj"]'))
    sample_every: int = Field(0, ge=0, le=1_000_000, description="steps between sample replies; 0: at the end")
    sample_prompts: list[Annotated[str, Field(max_length=2000)]] = Field(default_factory=list, max_length=8)
    sample_max_new_tokens: int = Field(32, ge=1, le=512)


class PaliGemmaLoraRequest(PeftAdapterRequest):
    """A LoRA / QLoRA adapter for a PaliGemma model of models/VLM, taught image + prefix → suffix; a PEFT
    adapter folder in models/LLM-loras, listed under its base and chosen as "Adapter" in the Vision tab."""

    kind: Literal["paligemma_lora"] = "paligemma_lora"
    # For the check and the Train tab's pickers: a PaliGemma folder of models/VLM; .jsonl files as datasets.
    BASE_MODEL_KIND: ClassVar[str] = "vlm"
    DATASET_FILES: ClassVar[tuple[str, ...]] = (".jsonl",)
    dataset: str = Field(..., min_length=1, max_length=1024,
                         description='a .jsonl file (or a folder of them) inside the data dir, a line per example: '
                                     '{"image": "images/1.png", "prefix": "caption en", "suffix": "a red car"}; '
                                     "image paths are relative to the file's folder")
    cutoff_len: int = Field(512, ge=16, le=16_384,
                            description="tokens per example: the image's (256 at 224 px, 1024 at 448, 4096 at 896) "
                                        "+ prefix + suffix; a longer suffix is cut")
    target_modules: Union[Literal["all-linear", "attention"],
                          list[Annotated[str, Field(min_length=1, max_length=100)]]] = Field(
        "all-linear", description='the language model\'s layers that get LoRA: "all-linear", "attention" '
                                  '(q/k/v/o projections) or names such as ["q_proj", "v_proj"]')
    train_vision_tower: bool = Field(False, description="also put LoRA on the vision tower and the projector "
                                                        "(frozen by default, as Google's fine-tuning recipe)")
    save_merged: bool = Field(False, description="also write the base with the adapter merged in as a model "
                                                 "folder models/VLM/<output_name> (as large as the base; no adapter "
                                                 "needed to run it)")


AnyTrainingRequest = Annotated[Union[SdLoraRequest, LmLoraRequest, DreamBoothRequest, PaliGemmaLoraRequest],
                              Field(discriminator="kind")]
_ADAPTER = TypeAdapter(AnyTrainingRequest)
KINDS = {"sd_lora": SdLoraRequest, "lm_lora": LmLoraRequest, "dreambooth": DreamBoothRequest,
         "paligemma_lora": PaliGemmaLoraRequest}


def job_kind(kind: str) -> str:
    return f"train_{kind}"


def parse(data: Any, kinds: "TrainingKindRegistry | None" = None) -> BaseTrainingRequest:
    """A JSON body (or the tab's dict) → the typed request of its "kind"; errors name the field. With `kinds`
    (TrainingServices.kinds), the kinds extensions added are known too."""
    if isinstance(data, BaseTrainingRequest):
        return data
    if not isinstance(data, dict):
        raise InvalidRequest("the request must be a JSON object", "body")
    data = {"kind": "sd_lora", **data}
    try:
        if data["kind"] in KINDS:
            return _ADAPTER.validate_python(data)
        if kinds is None:
            raise InvalidRequest(f"unknown training kind {data['kind']!r}; known: {', '.join(KINDS)}", "kind")
        return kinds.get(data["kind"]).request.model_validate(data)
    except ValidationError as exc:
        raise _named(exc) from None


def _named(exc: ValidationError) -> InvalidRequest:
    err = exc.errors(include_url=False)[0]
    # Kind tags and union members' tags ("literal['all-linear']", "list[str]") are not fields.
    loc = [str(p) for p in err.get("loc", ()) if str(p) not in KINDS and "[" not in str(p)]
    msg = str(err.get("msg", "is invalid")).removeprefix("Value error, ")
    return InvalidRequest(msg, ".".join(loc) or "body")


@dataclass
class Checked:
    """A request that passed `check()`, with what checking found."""

    request: BaseTrainingRequest
    base: "ModelEntry | None"  # None: an extension's kind whose base is no registry entry (`base_info` says it)
    dataset_dir: Path
    scan: "DatasetScan"
    output: Path
    run_dir: Path
    steps: "StepMath"
    processes: int
    class_dir: Path | None = None  # DreamBooth's class images (made when fewer than asked)
    class_images: int = 0  # readable class images in it now
    also_written: tuple[Path, ...] = ()  # more results than `output` (a full checkpoint's diffusers folder)
    merged: Path | None = None  # paligemma_lora with save_merged: the merged model folder in models/VLM
    base_info: dict | None = None  # an extension's kind: {"name", "path"?} of its base
    extra: dict | None = None  # an extension's kind: what its check found, for its child process

    @property
    def base_name(self) -> str:
        return self.base.name if self.base is not None else str((self.base_info or {}).get("name", ""))


def check(request: BaseTrainingRequest, services: "TrainingServices", outputs: bool = True) -> Checked:
    """Everything about a request that needs the data dir or the device; raises naming the field.
    `outputs=False` skips the output-name check (the step math shown before Start)."""
    if isinstance(request, SdLoraRequest):
        return _check_sd_lora(request, services, outputs)
    if isinstance(request, LmLoraRequest):
        from modules.training.adapter_check import check_lm_lora

        return check_lm_lora(request, services, outputs)
    if isinstance(request, DreamBoothRequest):
        from modules.training.dreambooth_check import check_dreambooth

        return check_dreambooth(request, services, outputs)
    if isinstance(request, PaliGemmaLoraRequest):
        from modules.training.adapter_check import check_paligemma_lora

        return check_paligemma_lora(request, services, outputs)
    return services.kinds.get(request.kind).check(request, services, outputs)  # an extension's kind


def resolve_dataset(name: str, root: Path) -> Path:
    """A folder inside the data dir; an absolute path is accepted when it lies inside it."""
    candidate = Path(name)
    if candidate.is_absolute():
        try:
            name = candidate.resolve().relative_to(root.resolve()).as_posix()
        except ValueError:
            raise InvalidRequest(f"{name!r} is outside the data dir {root}; put the dataset inside it "
                                 "(e.g. datasets/<name>/)", "dataset") from None
    try:
        folder = resolve_inside(root, name, field_name="dataset")
    except NotFound:
        raise InvalidRequest(f"no folder {name!r} in the data dir {root}", "dataset") from None
    except AtelierError as exc:
        raise InvalidRequest(exc.message, "dataset") from None
    if not folder.is_dir():
        raise InvalidRequest(f"{name!r} is a file, not a folder of images", "dataset")
    return folder


def _base_entry(request: TrainingRequest, services: "TrainingServices", kind: str, archs: tuple[str, ...]):
    registry = services.registry
    name = request.base_model or services.models.default_name(kind)
    try:
        entry = registry.get(kind, name)
    except NotFound:
        registry.refresh(kind)
        try:
            entry = registry.get(kind, name)
        except NotFound:
            raise InvalidRequest(_wrong_kind(registry, name, kind), "base_model") from None
    except AtelierError as exc:
        raise InvalidRequest(exc.message, "base_model") from None
    if entry.problem:
        raise InvalidRequest(f"{entry.name} cannot be used: {entry.problem}", "base_model")
    if archs and entry.arch and entry.arch not in archs:
        raise InvalidRequest(f"{entry.name} is {entry.arch.upper()}; this training supports "
                             f"{', '.join(a.upper() for a in archs)}", "base_model")
    return entry


def _wrong_kind(registry, name: str, wanted: str) -> str:
    folder = registry.paths.model_dir(wanted).name
    for other in registry.paths.model_kinds():
        if other == wanted:
            continue
        try:
            found = registry.get(other, name)
        except AtelierError:
            continue
        return (f"{found.name} is a {other} model (models/{registry.paths.model_dir(other).name}), not a "
                f"{wanted}; pick a model of models/{folder}")
    known = ", ".join(e.name for e in registry.list(wanted)[:10]) or "none"
    return f"no {wanted} named {name!r} in models/{folder}; available: {known}"


def _check_device(request: TrainingRequest, device_name: str) -> None:
    if request.optimizer == "adamw8bit" and device_name != "cuda":
        raise InvalidRequest("AdamW 8-bit (bitsandbytes) needs a CUDA GPU; pick adamw, adafactor or prodigy",
                             "optimizer")
    if request.mixed_precision == "fp16" and device_name == "cpu":
        raise InvalidRequest("fp16 mixed precision needs a GPU; on the CPU use bf16 or no", "mixed_precision")


def _check_output(request: BaseTrainingRequest, output: Path, run_dir: Path, also: tuple[Path, ...] = (),
                  kinds: "TrainingKindRegistry | None" = None) -> None:
    if request.resume:
        if not run_dir.is_dir():
            raise InvalidRequest(f"there is no run {request.run_name!r} to resume (training/{request.run_name}/)",
                                 "output_name")
        saved = load_saved_request(run_dir, kinds)
        if saved is not None:
            differs = _first_difference(saved, request)
            if differs:
                raise InvalidRequest(f"differs from the run's saved request ({differs}); a resume continues "
                                     "the same training", differs.split(" ")[0])
        return
    if request.overwrite:
        return
    for path in (output, *also):
        if path.exists():
            raise OutputExists(f"{path.name} exists in {path.parent.name}/; pick another name, or set overwrite",
                               "output_name")
    if run_dir.exists():
        raise OutputExists(f"a run named {request.run_name!r} exists (training/{request.run_name}/); resume it, "
                           "pick another name, or set overwrite", "output_name")


def load_saved_request(run_dir: Path, kinds: "TrainingKindRegistry | None" = None) -> BaseTrainingRequest | None:
    try:
        return parse(json.loads((run_dir / "request.json").read_text(encoding="utf-8")), kinds)
    except (OSError, ValueError, AtelierError):
        return None


def _first_difference(saved: BaseTrainingRequest, new: BaseTrainingRequest) -> str | None:
    a, b = saved.model_dump(), new.model_dump()
    for key in a:
        if key not in TrainingRequest.RESUMABLE_CHANGES and a[key] != b.get(key):
            return f"{key} was {a[key]!r}, now {b.get(key)!r}"
    return None


def scan_images(folder: Path, caption: str, shown: str) -> "DatasetScan":
    """An image dataset's scan; refused (naming "dataset") when unreadable or without a usable image."""
    from modules.training.dataset import scan_dataset

    try:
        scan = scan_dataset(folder, caption)
    except OSError as exc:
        raise InvalidRequest(f"the dataset folder cannot be read: {exc.strerror or exc}", "dataset") from None
    if not scan.items:
        why = f" ({len(scan.skipped)} skipped: {scan.skipped_text()})" if scan.skipped else ""
        raise InvalidRequest(f"{shown!r} holds no readable images (.png, .jpg, .webp){why}", "dataset")
    return scan


def _check_sd_lora(request: SdLoraRequest, services: "TrainingServices", outputs: bool) -> Checked:
    from modules.training.buckets import bucket_counts
    from modules.training.plan import step_math

    paths = services.registry.paths
    base = _base_entry(request, services, request.BASE_MODEL_KIND, SD_ARCHS)
    _check_device(request, services.device_name())
    dataset_dir = resolve_dataset(request.dataset, paths.root)
    scan = scan_images(dataset_dir, request.default_caption, request.dataset)
    output = resolve_inside(paths.model_dir("lora"), request.output_name + ".safetensors", "output_name",
                            must_exist=False)
    run_dir = resolve_inside(paths.training, request.run_name, "output_name", must_exist=False)
    if outputs:
        _check_output(request, output, run_dir)
    processes = services.processes(request.gpus)
    buckets = bucket_counts([(i.width, i.height, i.repeats) for i in scan.items], request.resolution,
                            request.bucketing)
    steps = step_math(len(scan.items), scan.samples_per_epoch, request.epochs, request.batch_size,
                      request.gradient_accumulation, list(buckets.values()), max_steps=request.max_steps,
                      processes=processes)
    return Checked(request, base, dataset_dir, scan, output, run_dir, steps, processes)


def checked_from(request: BaseTrainingRequest, inputs, services: "TrainingServices", outputs: bool) -> Checked:
    """An extension's check (its TrainingInputs: dataset, images, output, base) → the Checked every kind's job
    runs from: the shared output-name check, the run folder, the step math (a batch a step, one process)."""
    from modules.training.dataset import DatasetItem, DatasetScan
    from modules.training.plan import step_math

    paths = services.registry.paths
    run_dir = resolve_inside(paths.training, request.run_name, "output_name", must_exist=False)
    if outputs:
        _check_output(request, inputs.output, run_dir, kinds=services.kinds)
    items = [DatasetItem(path, "", 1, width, height) for path, width, height in inputs.images]
    scan = DatasetScan(inputs.dataset_dir, items, [tuple(s) for s in inputs.skipped])
    steps = step_math(len(items), len(items), request.epochs, request.batch_size)
    return Checked(request, None, inputs.dataset_dir, scan, inputs.output, run_dir, steps, 1,
                   base_info=dict(inputs.base), extra=dict(inputs.extra))


def validator(services: "TrainingServices"):
    """The submit-time check of the training job kinds: refuses before the job waits in the queue."""
    def validate(request: Any) -> None:
        check(parse(request, services.kinds), services)
    return validate

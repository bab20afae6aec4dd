"""The data-dir checks of the PEFT adapter kinds (LLM LoRA, PaliGemma LoRA): base model, dataset file, tokenizer,
output folder in models/LLM-loras, step math. params.check() calls them; every refusal names its field."""
from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from modules.errors import AtelierError, InvalidRequest, NotFound
from modules.paths import resolve_inside
from modules.training.params import (Checked, LmLoraRequest, OutputExists, PaliGemmaLoraRequest, PeftAdapterRequest,
                                     _base_entry, _check_device, _check_output)

if TYPE_CHECKING:
    from modules.training.task import TrainingServices


def resolve_lm_dataset(name: str, root: Path) -> Path:
    """A .jsonl / .txt file or a folder of them, inside the data dir."""
    candidate = Path(name)
    if candidate.is_absolute():
        try:
            name = candidate.resolve().relative_to(root.resolve()).as_posix()
        except ValueError:
            raise InvalidRequest(f"{name!r} is outside the data dir {root}; put the dataset inside it",
                                 "dataset") from None
    try:
        return resolve_inside(root, name, field_name="dataset")
    except NotFound:
        raise InvalidRequest(f"no file or folder {name!r} in the data dir {root}", "dataset") from None
    except AtelierError as exc:
        raise InvalidRequest(exc.message, "dataset") from None


def _tokenizer(base):
    """The base folder's tokenizer (the examples are measured with it), or a refusal naming base_model."""
    try:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(str(base.path), local_files_only=True)
    except Exception as exc:  # a folder without a usable tokenizer cannot render its examples
        raise InvalidRequest(f"{base.name}'s tokenizer cannot be loaded: {type(exc).__name__}: {str(exc)[:200]}",
                             "base_model") from None


def check_lm_lora(request: LmLoraRequest, services: "TrainingServices", outputs: bool) -> Checked:
    from modules.training.lm_dataset import check_examples, read_examples

    paths = services.registry.paths
    base = _base_entry(request, services, request.BASE_MODEL_KIND, ())
    if base.format != "hf":
        raise InvalidRequest(f"{base.name} is a {base.format} file; LoRA training needs a transformers folder "
                             "(config.json + safetensors)", "base_model")
    _check_device(request, services.device_name())
    dataset = resolve_lm_dataset(request.dataset, paths.root)
    tokenizer = _tokenizer(base)
    try:
        examples = read_examples(dataset, tokenizer, request.format, request.cutoff_len, request.packing)
    except OSError as exc:
        raise InvalidRequest(f"the dataset cannot be read: {exc.strerror or exc}", "dataset") from None
    check_examples(examples, request.dataset)
    return _adapter_checked(request, services, base, dataset, len(examples.rows), examples.skipped, outputs)


def _adapter_checked(request: PeftAdapterRequest, services: "TrainingServices", base, dataset: Path, rows: int,
                     skipped: list, outputs: bool) -> Checked:
    """The output folder in models/LLM-loras, the run folder and the step math of a PEFT adapter training."""
    from modules.training.dataset import DatasetScan
    from modules.training.plan import step_math

    paths = services.registry.paths
    output = resolve_inside(paths.model_dir(request.OUTPUT_KIND), request.output_name, "output_name",
                            must_exist=False)
    run_dir = resolve_inside(paths.training, request.run_name, "output_name", must_exist=False)
    if outputs:
        _check_output(request, output, run_dir)
    processes = services.processes(request.gpus)
    steps = step_math(rows, rows, request.epochs, request.batch_size, request.gradient_accumulation,
                      max_steps=request.max_steps, processes=processes)
    return Checked(request, base, dataset, DatasetScan(dataset, skipped=skipped), output, run_dir, steps, processes)


def paligemma_image_tokens(base_path: Path) -> int:
    """The image's soft tokens of a PaliGemma folder, read from disk: config.json's text_config, or the
    processor's image_seq_length (preprocessor_config.json, or transformers 5's processor_config.json)."""
    def read(name: str) -> dict:
        try:
            value = json.loads((base_path / name).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return value if isinstance(value, dict) else {}

    config, processor = read("config.json"), read("processor_config.json")
    for value in ((config.get("text_config") or {}).get("num_image_tokens"),
                  read("preprocessor_config.json").get("image_seq_length"),
                  (processor.get("image_processor") or {}).get("image_seq_length")):
        if isinstance(value, int) and value > 0:
            return value
    raise InvalidRequest(f"{base_path.name} names no image token count (config.json text_config.num_image_tokens "
                         "or the processor's image_seq_length): it is not a complete PaliGemma folder; download "
                         "it again", "base_model")


def check_paligemma_lora(request: PaliGemmaLoraRequest, services: "TrainingServices", outputs: bool) -> Checked:
    from modules.training.paligemma_dataset import check_rows, read_rows

    paths = services.registry.paths
    base = _base_entry(request, services, request.BASE_MODEL_KIND, ())
    if (base.metadata or {}).get("model_type") != "paligemma":
        raise InvalidRequest(f"{base.name} is not a PaliGemma model (model_type "
                             f"{(base.metadata or {}).get('model_type')!r}); pick a PaliGemma folder of models/VLM",
                             "base_model")
    if base.format != "hf":
        raise InvalidRequest(f"{base.name} is a {base.format} file; LoRA training needs a transformers folder",
                             "base_model")
    _check_device(request, services.device_name())
    image_tokens = paligemma_image_tokens(base.path)
    if image_tokens + 4 > request.cutoff_len:
        raise InvalidRequest(f"{request.cutoff_len} tokens do not hold {base.name}'s {image_tokens} image tokens and "
                             f"an answer; raise cutoff_len above {image_tokens + 4}", "cutoff_len")
    dataset = resolve_lm_dataset(request.dataset, paths.root)
    tokenizer = _tokenizer(base)
    try:
        examples = read_rows(dataset, paths.root, tokenizer, image_tokens, request.cutoff_len)
    except OSError as exc:
        raise InvalidRequest(f"the dataset cannot be read: {exc.strerror or exc}", "dataset") from None
    check_rows(examples, request.dataset)
    checked = _adapter_checked(request, services, base, dataset, len(examples.rows), examples.skipped, outputs)
    if request.save_merged:
        checked.merged = resolve_inside(paths.model_dir("vlm"), request.output_name, "output_name", must_exist=False)
        if checked.merged == base.path.resolve():
            raise InvalidRequest(f"{request.output_name!r} is the base model's own folder: the merged model needs "
                                 "another name", "output_name")
        if outputs and checked.merged.exists() and not (request.overwrite or request.resume):
            raise OutputExists(f"{checked.merged.name} exists in {checked.merged.parent.name}/; pick another name, "
                               "or set overwrite", "output_name")
    return checked



"""What the registry can tell about a transformers folder, a PEFT adapter folder or a GGUF file
without loading any weights: config.json, tokenizer/processor files, safetensors headers.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

from modules.errors import ModelLoadError

# Where a model's maximum sequence length lives, by the names configs use for it.
_CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length", "n_ctx")
_IMAGE_PROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json")


def read_json(path: Path, field: str = "model") -> dict:
    """A JSON object from `path`, or a ModelLoadError naming the file and the fix."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelLoadError(f"{path.parent.name}/ has no {path.name}; download the model folder again", field) from None
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{path.parent.name}/{path.name} is not valid JSON ({exc}); "
                             "download the file again", field) from None
    if not isinstance(data, dict):
        raise ModelLoadError(f"{path.parent.name}/{path.name} is not a JSON object; download the file again", field)
    return data


def _optional_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def context_length(config: dict) -> int | None:
    """The text model's context length: top level first, then text_config (Gemma 3, PaliGemma)."""
    for section in (config, config.get("text_config") or {}):
        for key in _CONTEXT_KEYS:
            value = section.get(key)
            if isinstance(value, int) and value > 0:
                return value
    return None


def has_chat_template(folder: Path) -> bool:
    """transformers 5 writes chat_template.jinja; older folders keep it in tokenizer_config.json or
    chat_template.json (processors)."""
    if (folder / "chat_template.jinja").exists() or (folder / "chat_template.json").exists():
        return True
    return bool(_optional_json(folder / "tokenizer_config.json").get("chat_template")
                or _optional_json(folder / "processor_config.json").get("chat_template"))


def has_image_processor(folder: Path) -> bool:
    for name in _IMAGE_PROCESSOR_FILES:
        data = _optional_json(folder / name)
        if "image_processor_type" in data or "image_processor" in data:
            return True
    return False


def parameter_count(folder: Path) -> int | None:
    """Sum of the tensor sizes in the folder's safetensors headers (no tensor is read); None without any."""
    from modules.models.detect import read_header

    files = sorted(folder.glob("*.safetensors"))
    if not files:
        return None
    total = 0
    for path in files:
        header = read_header(path, lambda key: True)
        total += sum(math.prod(shape) for shape in header.shapes.values())
    return total


def describe_folder(folder: Path) -> tuple[str | None, dict]:
    """(model_type, metadata) of a transformers folder; raises ModelLoadError for a broken config.json."""
    config = read_json(folder / "config.json")
    model_type = config.get("model_type")
    vision = "vision_config" in config
    meta = {
        "model_type": model_type,
        "architectures": list(config.get("architectures") or []),
        "parameters": parameter_count(folder),
        "context_length": context_length(config),
        "chat_template": has_chat_template(folder),
        "image_processor": has_image_processor(folder),
        "vision": vision,
    }
    meta["accepts_images"] = vision and meta["image_processor"]
    return model_type, meta


def describe_adapter(folder: Path) -> dict:
    """A PEFT adapter's base model (hub id or path, as peft wrote it), its type and rank."""
    config = read_json(folder / "adapter_config.json", "adapter")
    base = config.get("base_model_name_or_path")
    if not base:
        raise ModelLoadError(f"{folder.name}/adapter_config.json names no base_model_name_or_path; "
                             "it cannot be matched to a model", "adapter")
    return {"base_model": str(base), "peft_type": config.get("peft_type"), "task_type": config.get("task_type"),
            "r": config.get("r"), "lora_alpha": config.get("lora_alpha"),
            "target_modules": config.get("target_modules")}


def name_keys(name: str) -> set[str]:
    """Ways one model is named: `org/model` as given, its last part, and `org_model` (text-generation-webui's
    download folder name); lower case, so an adapter's base id finds the folder it was downloaded into."""
    name = name.strip().rstrip("/").lower()
    return {name, name.rsplit("/", 1)[-1], name.replace("/", "_")} - {""}


def describe_gguf(path: Path) -> tuple[str | None, dict]:
    """(architecture, metadata) from a GGUF header (the `gguf` package memory-maps it, reading no tensor)."""
    try:
        from gguf import GGUFReader
    except ImportError:
        raise ModelLoadError("reading GGUF files needs the gguf package: install requirements.txt again "
                             "(it pins gguf)", "file") from None
    try:
        reader = GGUFReader(str(path))
    except Exception as exc:  # truncated, not GGUF, an unknown version
        raise ModelLoadError(f"{path.name}: not a readable GGUF file ({type(exc).__name__}: {str(exc)[:200]}); "
                             "download it again", "file") from None
    field = reader.get_field("general.architecture")
    arch = field.contents() if field is not None else None
    meta: dict = {"model_type": arch, "parameters": sum(int(t.n_elements) for t in reader.tensors)}
    ctx = reader.get_field(f"{arch}.context_length") if arch else None
    meta["context_length"] = int(ctx.contents()) if ctx is not None else None
    meta["chat_template"] = reader.get_field("tokenizer.chat_template") is not None
    return arch, meta

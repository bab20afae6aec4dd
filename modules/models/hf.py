"""The transformers adapter: an LLM / VLM folder (or a GGUF file) in, a LanguageModel handle out.

Which class loads a folder is decided by its config, not by the folder it sits in: a config with
a vision tower of an image-text-to-text architecture (Gemma 3 4B+, PaliGemma) loads with
AutoModelForImageTextToText and its processor; any other causal LM with AutoModelForCausalLM and
its tokenizer. Quantization is transformers' own BitsAndBytesConfig (it runs on the CPU too);
such a model is never moved with .to(): evicting it means unloading it.
"""
from __future__ import annotations

import contextlib

from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modules.devices import device_type
from modules.errors import AtelierError, InvalidRequest, ModelLoadError
from modules.models.adapters import AdapterContext, Loaded

if TYPE_CHECKING:
    from modules.models.quant import LoadOptions
    from modules.models.registry import ModelEntry

KINDS = ("llm", "vlm")
_EAGER_MODEL_TYPES = ("gemma2",)  # Gemma 2's logit soft-capping is only in the eager attention path
# A vocabulary file of some kind; without one transformers 5 builds an empty default tokenizer silently.
_VOCAB_FILES = ("tokenizer.json", "tokenizer.model", "spiece.model", "vocab.json", "vocab.txt", "tekken.json")
_OFFLOAD_HEADROOM = 0.9  # load fully on the GPU only when the weights take at most this share of free memory


@dataclass(frozen=True)
class ModelInfo:
    model_type: str
    architectures: tuple[str, ...]
    context_length: int | None
    has_chat_template: bool
    accepts_images: bool


@dataclass
class LanguageModel:
    """What a chat or vision runner works with. Adapters go through transformers' PEFT integration."""

    model: Any
    tokenizer: Any
    processor: Any | None
    info: ModelInfo
    adapters: dict[str, Path] = field(default_factory=dict)  # name -> folder, as loaded
    adapter_stamps: dict[str, tuple] = field(default_factory=dict)  # name -> the folder's files when loaded
    active_adapter: str | None = None  # None: the base model answers

    def load_adapter(self, path: Path, name: str) -> None:
        """Read a PEFT adapter folder into the model under `name`; the active adapter stays as it was."""
        path = Path(path)
        if self.adapters.get(name) == path and self.adapter_stamps.get(name) == _folder_stamp(path):
            return  # loaded, and not retrained (overwritten) since
        if not (path / "adapter_config.json").exists():
            raise ModelLoadError(f"{path.name}/ has no adapter_config.json: it is not a PEFT adapter folder", "adapter")
        if name in self.adapters:
            self.remove_adapter(name)
        try:
            self.model.load_adapter(str(path), adapter_name=name)
        except (MemoryError, KeyboardInterrupt):
            raise
        except Exception as exc:  # shapes of another base model, a broken file, an unknown PEFT type
            raise ModelLoadError(f"{path.name} does not fit {self.info.model_type} model "
                                 f"({type(exc).__name__}: {str(exc)[:300]}); pick an adapter made for this "
                                 "base model", "adapter") from None
        self.adapters[name] = path
        self.adapter_stamps[name] = _folder_stamp(path)
        self._apply()

    def set_adapter(self, name: str) -> None:
        if name not in self.adapters:
            raise InvalidRequest(f"no adapter {name!r} is loaded; loaded: {', '.join(self.adapters) or 'none'}",
                                 "adapter")
        self.active_adapter = name
        self._apply()

    @contextlib.contextmanager
    def adapter_active(self, path: Path | None, name: str | None):
        """The adapter answers for the block and the base model again after it (chat and vision share the
        model object); None: the base model."""
        if name is None:
            yield self
            return
        self.load_adapter(path, name)  # read once; kept loaded (inactive) beside the model
        self.set_adapter(name)
        try:
            yield self
        finally:
            self.disable_adapters()

    def disable_adapters(self) -> None:
        """The base model answers again, exactly as before any adapter was loaded."""
        self.active_adapter = None
        self._apply()

    def remove_adapter(self, name: str) -> None:
        self.adapter_stamps.pop(name, None)
        if self.adapters.pop(name, None) is None:
            return
        self.model.delete_adapter(name)
        if self.active_adapter == name:
            self.active_adapter = None
        self._apply()

    def _apply(self) -> None:
        if not self.adapters:
            return
        if self.active_adapter is None:
            self.model.disable_adapters()
        else:
            # peft's set_adapter leaves a disabled model disabled: enable first.
            self.model.enable_adapters()
            self.model.set_adapter(self.active_adapter)


def _folder_stamp(folder: Path) -> tuple:
    """(name, size, mtime) of the folder's files: changes when a training writes the adapter again."""
    try:
        return tuple(sorted((p.name, st.st_size, st.st_mtime_ns) for p in folder.iterdir()
                            if p.is_file() and (st := p.stat())))
    except OSError:
        return ()


class TransformersAdapter:
    """ModelAdapter for kinds "llm" and "vlm". Holds no per-model state."""

    def residency(self, settings) -> dict:
        return {}  # as many as the memory budget holds

    def load(self, actx: AdapterContext, entry: "ModelEntry", options: "LoadOptions") -> Loaded:
        _check_entry(entry)
        if options.t5 != "none":
            raise InvalidRequest(f"t5 {options.t5} is a Flux / SD3 checkpoint's option; {entry.name} is a "
                                 f"{entry.kind.upper()}: use quantization", "t5")
        device = actx.device.name
        dtype = options.torch_dtype(actx.device.dtype)
        quant = _quant_config(options, dtype, device)
        if entry.format == "gguf":
            handle, device_map = _load_gguf(entry, options, dtype, device), None
        else:
            handle, device_map = _load_folder(entry, options, dtype, quant, device)
        model = handle.model
        offloaded = isinstance(device_map, str)
        note = ""
        if offloaded:
            places = list(getattr(model, "hf_device_map", {}).values())
            note = f" (offload: {sum(p in ('cpu', 'disk') for p in places)} of {len(places)} modules on cpu)"
        elif device != "cpu" and device_map is None:
            model.to(device)
        return Loaded(kind=entry.kind, entry=entry, options=options, handle=handle,
                      footprint=footprint_bytes(model), device=device,
                      movable=quant is None and not offloaded, location_note=note,
                      extra={"offloaded": offloaded, "quantization": options.label()})

    def to(self, actx: AdapterContext, loaded: Loaded, device: str) -> None:
        if not loaded.movable:
            why = "quantized with bitsandbytes" if loaded.options.quantization != "none" else "offloaded by accelerate"
            raise InvalidRequest(f"{loaded.entry.name} is {why}: it cannot be moved between devices; unload it "
                                 "and load it again", "device")
        loaded.handle.model.to(device)
        loaded.device = device

    def prepare(self, actx: AdapterContext, loaded: Loaded) -> None:
        return None

    def release(self, actx: AdapterContext, loaded: Loaded) -> None:
        from modules.devices import free_accelerator_memory

        handle: LanguageModel = loaded.handle
        if handle.model is not None and loaded.extra.get("offloaded"):
            from accelerate.hooks import remove_hook_from_module

            remove_hook_from_module(handle.model, recurse=True)  # the hooks hold the offloaded weights
        handle.model = handle.tokenizer = handle.processor = None
        handle.adapters.clear()
        handle.adapter_stamps.clear()
        free_accelerator_memory(loaded.device)


def footprint_bytes(model) -> int:
    """Parameters + buffers (transformers' get_memory_footprint), plus what that leaves out for bitsandbytes
    weights: a 4-bit weight's quantization state (absmax per block of 64: about an eighth more for nf4)
    and an 8-bit weight's row scales, each tensor counted once."""
    import torch

    total, seen = model.get_memory_footprint(), set()
    for param in model.parameters():
        state = getattr(param, "quant_state", None)
        extra = list(state.as_dict(packed=False).values()) if state is not None else []
        extra.append(getattr(param, "SCB", None))
        for t in extra:
            if torch.is_tensor(t) and t.data_ptr() not in seen:
                seen.add(t.data_ptr())
                total += t.numel() * t.element_size()
    return int(total)


def _check_entry(entry: "ModelEntry") -> None:
    if entry.kind not in KINDS:
        raise InvalidRequest(f"the transformers adapter loads kinds {', '.join(KINDS)}, not {entry.kind!r}", "kind")
    if not entry.path.exists():
        raise ModelLoadError(f"{entry.name} is no longer in models/ (moved or deleted?); press Refresh", "model")
    if entry.problem:
        raise ModelLoadError(f"{entry.name}: {entry.problem}", "model")
    if entry.format not in ("hf", "gguf"):
        raise ModelLoadError(f"{entry.name} is a {entry.format!r} entry; models/LLM and models/VLM take "
                             "transformers folders (config.json + safetensors + tokenizer files) or .gguf files",
                             "model")


def _quant_config(options: "LoadOptions", dtype, device: str):
    if options.quantization != "none" and device == "mps":
        raise InvalidRequest("bitsandbytes does not run on Apple GPUs (mps): choose quantization none "
                             "(and dtype fp16 to halve the memory)", "quantization")
    return options.transformers_config(dtype)


def _load_folder(entry: "ModelEntry", options: "LoadOptions", dtype, quant, device: str):
    from transformers import (AutoConfig, AutoModelForCausalLM, AutoModelForImageTextToText, AutoProcessor,
                              AutoTokenizer)

    from modules.models import hf_info

    raw = hf_info.read_json(entry.path / "config.json")
    model_type = raw.get("model_type")
    try:
        config = AutoConfig.from_pretrained(str(entry.path), local_files_only=True)
    except (ValueError, KeyError) as exc:
        raise ModelLoadError(_unknown(entry, model_type, raw, exc), "model") from None
    images = _is_image_text(config)
    cls = AutoModelForImageTextToText if images else AutoModelForCausalLM
    if not images and not _is_causal(config):
        raise ModelLoadError(_unknown(entry, model_type, raw), "model")
    if not any((entry.path / name).exists() for name in _VOCAB_FILES):
        raise ModelLoadError(f"{entry.name}: no tokenizer files ({' / '.join(_VOCAB_FILES[:2])}) beside config.json; "
                             "download the model folder again, tokenizer included", "model")
    kwargs: dict = {"dtype": dtype, "local_files_only": True}
    text_type = getattr(config.get_text_config(), "model_type", None)
    if model_type in _EAGER_MODEL_TYPES or text_type in _EAGER_MODEL_TYPES:
        kwargs["attn_implementation"] = "eager"
    if quant is not None:
        kwargs["quantization_config"] = quant
    device_map = _device_map(entry, dtype, quant, device)
    if device_map is not None:
        kwargs["device_map"] = device_map
    with _load_errors(entry, options):
        model = cls.from_pretrained(str(entry.path), config=config, **kwargs).eval()
    with _load_errors(entry, options, what="tokenizer"):
        if images:
            processor = AutoProcessor.from_pretrained(str(entry.path), local_files_only=True)
            tokenizer = processor.tokenizer
        else:
            processor, tokenizer = None, AutoTokenizer.from_pretrained(str(entry.path), local_files_only=True)
    return _handle(model, tokenizer, processor, images), device_map


def _load_gguf(entry: "ModelEntry", options: "LoadOptions", dtype, device: str) -> LanguageModel:
    """transformers dequantizes a GGUF file into a regular model (to `dtype`) for the architectures it knows."""
    from modules.models import hf_info

    if options.quantization != "none":
        raise InvalidRequest("a GGUF file is already quantized and transformers dequantizes it on load; Atelier "
                             "does not re-quantize it with bitsandbytes: choose quantization none", "quantization")
    with _load_errors(entry, options, what="GGUF header"):
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

        arch, _meta = hf_info.describe_gguf(entry.path)
    if arch not in GGUF_SUPPORTED_ARCHITECTURES:
        raise ModelLoadError(f"{entry.name}: GGUF architecture {arch!r} is not one transformers can load "
                             f"(it reads {', '.join(sorted(GGUF_SUPPORTED_ARCHITECTURES))}); use the model's "
                             "transformers folder (config.json + safetensors) instead", "model")
    folder, name = str(entry.path.parent), entry.path.name
    with _load_errors(entry, options):
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=dtype,
                                                     local_files_only=True).eval()
    with _load_errors(entry, options, what="tokenizer"):
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name, local_files_only=True)
    return _handle(model, tokenizer, None, False)


def _handle(model, tokenizer, processor, images: bool) -> LanguageModel:
    from modules.models import hf_info

    config = model.config
    template = getattr(processor, "chat_template", None) or tokenizer.chat_template
    info = ModelInfo(
        model_type=str(config.model_type), architectures=tuple(config.architectures or ()),
        context_length=hf_info.context_length(config.to_dict()), has_chat_template=bool(template),
        accepts_images=images and getattr(processor, "image_processor", None) is not None)
    return LanguageModel(model=model, tokenizer=tokenizer, processor=processor, info=info)


def _is_image_text(config) -> bool:
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

    return hasattr(config, "vision_config") and config.model_type in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES


def _is_causal(config) -> bool:
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    return config.model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES


def _unknown(entry: "ModelEntry", model_type, raw: dict, exc: Exception | None = None) -> str:
    import transformers

    archs = ", ".join(raw.get("architectures") or []) or "no architectures listed"
    return (f"{entry.name}: model_type {model_type!r} ({archs}) is not a text-generation or image-text-to-text "
            f"model that transformers {transformers.__version__} can load"
            + (f" ({str(exc)[:200]})" if exc else "")
            + "; chat and vision take causal LMs such as Gemma 2/3 and image-text models such as PaliGemma")


def _device_map(entry: "ModelEntry", dtype, quant, device: str):
    """None on the CPU; the whole model on the device; accelerate's "auto" split when it does not fit (CUDA)."""
    if device == "cpu":
        return None
    if device_type(device) == "cuda" and quant is None:
        import torch

        from modules.models import hf_info

        params = entry.metadata.get("parameters") or hf_info.parameter_count(entry.path) or 0
        free, _total = torch.cuda.mem_get_info(device)
        if params * dtype.itemsize > free * _OFFLOAD_HEADROOM:
            return "auto"
    return {"": device}


@contextmanager
def _load_errors(entry: "ModelEntry", options: "LoadOptions", what: str = "weights"):
    """Turn a library's loading exception into a ModelLoadError naming the field and the fix."""
    import torch

    try:
        yield
    except (AtelierError, MemoryError, torch.OutOfMemoryError):
        raise  # ours already, or the machine's: the job boundary and the manager handle those
    except Exception as exc:
        name, detail, quant = entry.name, f"{type(exc).__name__}: {str(exc)[:300]}", options.quantization
        if quant != "none" and (isinstance(exc, ImportError) or "bitsandbytes" in str(exc).lower()):
            raise ModelLoadError(f"quantization {quant} failed on this machine ({detail}); choose quantization "
                                 "none", "quantization") from None
        if isinstance(exc, ImportError):
            raise ModelLoadError(f"{name}: a library is missing ({detail}); install requirements.txt again",
                                 "model") from None
        if isinstance(exc, OSError) and what == "weights":
            raise ModelLoadError(f"{name}: its weights are missing or unreadable ({detail}); the folder needs "
                                 "model.safetensors (or its shards and model.safetensors.index.json) beside "
                                 "config.json — download it again", "model") from None
        raise ModelLoadError(f"{name}: could not read its {what} ({detail}); download the model again",
                             "model") from None

"""Turn a registry entry into a loaded diffusers pipeline. Formats: diffusers folder, single file.

Single files (A1111 / civitai layout) are told apart by their keys (detect.py) and loaded with
diffusers' `from_single_file(..., local_files_only=True)`: nothing is fetched at run time, so
the configs and tokenizer come from, in order, a sidecar folder `<name>.config/` beside the
file, models/configs/<arch>/ (one per architecture), or the Hugging Face cache. When none has
them the error says exactly which repo to fetch and how. Pickle files are opened only with
torch.load(weights_only=True): a payload needing more is refused and never runs.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

from modules.devices import device_type
from modules.errors import AtelierError, ModelLoadError
from modules.models import detect, flow_files
from modules.models.registry import SIDECAR_SUFFIX, ModelEntry

log = logging.getLogger("atelier.models")
FIELD = "sd_model_checkpoint"


def _quiet_library_progress_bars() -> None:
    """The libraries' own tqdm bars ("Loading pipeline components…") flood a server log; the job
    engine reports loading instead. Their documented switches, not a patch."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()


def load_checkpoint(entry: ModelEntry, dtype, paths, options=None, device_name: str = "cpu"):
    """Load a Stable Diffusion checkpoint on the CPU in `dtype`; returns (pipe, arch). The manager places it."""
    _quiet_library_progress_bars()
    try:
        if entry.format == "diffusers":
            return _complete(_load_diffusers_folder(entry, dtype, options, device_name))
        if entry.format == "gguf":  # a Flux / SD3 transformer in GGUF (models/Stable-diffusion or models/unet)
            return _complete(flow_files.load_file(entry, None, dtype, paths, options, device_name))
        if entry.format in ("safetensors", "pickle"):
            return _complete(_load_single_file(entry, dtype, paths, options, device_name))
    except AtelierError as exc:
        exc.field = exc.field if exc.field not in (None, "file") else FIELD
        if entry.name not in exc.message:
            exc.message = f"{entry.name}: {exc.message}"
        raise
    raise ModelLoadError(f"{entry.name}: the {entry.format} format is not a Stable Diffusion checkpoint; "
                         "use a .safetensors file or a diffusers folder", FIELD)


def _complete(loaded):
    """Refuse a pipeline with weights its files lack: diffusers leaves them on the meta device (only a
    warning), and the first move would fail with "Cannot copy out of meta tensor"."""
    import torch

    pipe, _ = loaded
    for name, component in pipe.components.items():
        if isinstance(component, torch.nn.Module):
            missing = [k for k, t in component.state_dict(keep_vars=True).items() if t.is_meta]
            if missing:
                raise ModelLoadError(f"its {name} file lacks {len(missing)} weight(s) ({', '.join(missing[:3])}"
                                     f"{', …' if len(missing) > 3 else ''}): the file is incomplete; download it "
                                     "again", FIELD)
    return loaded


def quantized_at_load(options, device_name: str) -> bool:
    """Whether the UNet is quantized while it loads (diffusers' config on CUDA) rather than after (quant.py)."""
    return options is not None and options.quantization != "none" and device_type(device_name) == "cuda"


def _unet_quantization(options, dtype, device_name: str) -> dict:
    """diffusers' BitsAndBytesConfig for the UNet on CUDA (it refuses the CPU; quant.py covers that)."""
    if not quantized_at_load(options, device_name):
        return {}
    return {"quantization_config": options.diffusers_config(dtype)}


def _load_diffusers_folder(entry: ModelEntry, dtype, options, device_name: str):
    from diffusers import DiffusionPipeline, UNet2DConditionModel

    try:
        index = json.loads((entry.path / "model_index.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{entry.name}: model_index.json is unreadable ({exc})", FIELD) from None
    flow_label = detect.FLOW_PIPELINES.get(str(index.get("_class_name", "")))
    kwargs = {"torch_dtype": dtype, "local_files_only": True}
    if "safety_checker" in index:
        kwargs.update(safety_checker=None, requires_safety_checker=False)
    try:
        quant = _unet_quantization(options, dtype, device_name)
        if quant and flow_label:  # Flux / SD3: the transformer is what gets quantized
            kwargs["transformer"] = flow_files.folder_transformer(entry.path, flow_label, dtype, quant)
        elif quant:
            kwargs["unet"] = UNet2DConditionModel.from_pretrained(
                str(entry.path), subfolder="unet", torch_dtype=dtype, local_files_only=True, **quant)
        pipe = DiffusionPipeline.from_pretrained(str(entry.path), **kwargs)
    except Exception as exc:  # corrupt weights, missing files: name the model, keep serving
        raise ModelLoadError(f"{entry.name}: could not be loaded: {type(exc).__name__}: {str(exc)[:400]}",
                             FIELD) from None
    return pipe, detect.folder_arch(entry.path) or _arch_of_pipe(pipe)


def _arch_of_pipe(pipe) -> str:
    if type(pipe).__name__ in detect.FLOW_PIPELINES:
        return detect.FLOW_PIPELINES[type(pipe).__name__]
    if type(pipe).__name__.startswith("StableDiffusionXL"):
        return "sdxl"
    dim = getattr(getattr(pipe, "unet", None), "config", {}).get("cross_attention_dim", 768)
    return "sd2" if dim == 1024 else "sd1"


def check_pickle(path: Path) -> None:
    """Open a pickle checkpoint with weights_only=True; anything that needs code is refused unexecuted."""
    read_pickle_weights(path)


def read_pickle_weights(path: Path):
    """torch.load(weights_only=True) of a pickle file (a payload needing code is refused, never run)."""
    import pickle

    import torch

    try:
        return torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as exc:
        raise ModelLoadError(
            f"{path.name} is a pickle that needs code to run to load (refused, nothing was executed: "
            f"{str(exc).splitlines()[0][:200]}); use a .safetensors version of this model", "file") from None
    except RuntimeError as exc:
        if "mmap" in str(exc):  # the old (non-zip) format cannot be mapped: read it normally, still weights only
            try:
                return torch.load(str(path), map_location="cpu", weights_only=True)
            except pickle.UnpicklingError as exc2:
                raise ModelLoadError(f"{path.name} needs code to run to load; refused (nothing was executed): "
                                     f"{str(exc2).splitlines()[0][:200]}", "file") from None
            except Exception as exc2:
                exc = exc2
        raise ModelLoadError(f"{path.name} is not a readable checkpoint ({type(exc).__name__}: {str(exc)[:200]})",
                             "file") from None
    except Exception as exc:
        raise ModelLoadError(f"{path.name} is not a readable checkpoint ({type(exc).__name__}: {str(exc)[:200]})",
                             "file") from None


def _pickle_kind(path: Path) -> detect.CheckpointKind:
    import torch

    sd = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
    while isinstance(sd, dict) and "state_dict" in sd:
        sd = sd["state_dict"]
    if not isinstance(sd, dict):
        raise ModelLoadError(f"{path.name} holds no state dict", "file")
    shapes = {k: list(v.shape) for k, v in sd.items() if hasattr(v, "shape") and detect._is_shape_key(k)}
    return detect.kind_from_keys(list(sd), shapes)


def config_source(entry: ModelEntry, paths, kind: detect.CheckpointKind) -> Path | None:
    """Where this single file's diffusers configs are, when they are on this machine."""
    sidecar = entry.path.with_name(entry.path.stem + SIDECAR_SUFFIX)
    if (sidecar / "model_index.json").exists():
        return sidecar
    shared = paths.models / "configs" / (kind.hub_key if kind.inpaint or kind.refiner else kind.arch)
    if (shared / "model_index.json").exists():
        return shared
    return None


def missing_config_message(entry: ModelEntry, kind: detect.CheckpointKind, paths) -> str:
    from diffusers.loaders.single_file_utils import DIFFUSERS_DEFAULT_PIPELINE_PATHS

    repo = DIFFUSERS_DEFAULT_PIPELINE_PATHS[kind.hub_key]["pretrained_model_name_or_path"]
    shared = paths.models / "configs" / (kind.hub_key if kind.inpaint or kind.refiner else kind.arch)
    return (f"{entry.name} is a single-file {kind.arch.upper()} checkpoint; loading it needs the configs and "
            f"tokenizer of {repo}, which are not on this machine (no download happens at run time). Get them once "
            f"with: huggingface-cli download {repo} --include \"*.json\" \"*.txt\"  (they go to the Hugging Face "
            f"cache, where Atelier finds them), or put a diffusers-layout config folder at "
            f"{entry.path.with_name(entry.path.stem + SIDECAR_SUFFIX)} or {shared}")


def _pipeline_class(kind: detect.CheckpointKind):
    import diffusers

    if kind.arch == "sdxl":
        if kind.refiner:
            return diffusers.StableDiffusionXLImg2ImgPipeline
        return diffusers.StableDiffusionXLInpaintPipeline if kind.inpaint else diffusers.StableDiffusionXLPipeline
    return diffusers.StableDiffusionInpaintPipeline if kind.inpaint else diffusers.StableDiffusionPipeline


def _load_single_file(entry: ModelEntry, dtype, paths, options, device_name: str):
    if entry.format == "pickle":
        check_pickle(entry.path)
        kind = _pickle_kind(entry.path)
    else:
        kind = detect.checkpoint_kind(entry.path)
    if kind.arch in flow_files.ARCHS:  # a transformer-only file: the encoders and VAE come from shared folders
        return flow_files.load_file(entry, kind, dtype, paths, options, device_name)
    cls = _pipeline_class(kind)
    config = config_source(entry, paths, kind)
    if config is None and not _in_hf_cache(kind):  # say so now, rather than let diffusers try the network
        raise ModelLoadError(missing_config_message(entry, kind, paths), FIELD)
    kwargs = {"torch_dtype": dtype, "local_files_only": True}
    if config is not None:
        kwargs["config"] = str(config)
    if kind.arch != "sdxl":
        kwargs.update(safety_checker=None, requires_safety_checker=False)
    quant = _unet_quantization(options, dtype, device_name)
    try:
        if quant:
            from diffusers import UNet2DConditionModel

            unet_kwargs = {"config": str(config), "subfolder": "unet"} if config else {}
            kwargs["unet"] = UNet2DConditionModel.from_single_file(
                str(entry.path), torch_dtype=dtype, local_files_only=True, **unet_kwargs, **quant)
        pipe = cls.from_single_file(str(entry.path), **kwargs)
    except Exception as exc:
        if config is None and _is_missing_files(exc):
            raise ModelLoadError(missing_config_message(entry, kind, paths), FIELD) from None
        raise ModelLoadError(f"{entry.name}: could not be loaded as a {kind.arch.upper()} checkpoint: "
                             f"{type(exc).__name__}: {str(exc)[:400]}", FIELD) from None
    return pipe, kind.arch


def single_file_fingerprint(entry: ModelEntry, paths, dtype) -> str | None:
    """The skeleton key of an SD1 .safetensors file whose configs are on disk (skeleton_file.py), else None."""
    from modules.models import skeleton_file

    try:
        table = skeleton_file.key_table(entry.path)
        kind = detect.kind_from_keys(list(table), {k: s for k, s in table.items() if detect._is_shape_key(k)})
        return skeleton_file.fingerprint(table, kind, config_source(entry, paths, kind), dtype)
    except (AtelierError, OSError, ValueError, KeyError, TypeError):  # unreadable or not a checkpoint: the ordinary load says why
        return None


def _in_hf_cache(kind: detect.CheckpointKind) -> bool:
    """Whether the Hugging Face cache already holds this architecture's pipeline configs."""
    from diffusers.loaders.single_file_utils import DIFFUSERS_DEFAULT_PIPELINE_PATHS
    from huggingface_hub import try_to_load_from_cache

    repo = DIFFUSERS_DEFAULT_PIPELINE_PATHS[kind.hub_key]["pretrained_model_name_or_path"]
    try:
        return isinstance(try_to_load_from_cache(repo, "model_index.json"), str)
    except Exception:
        return False


def _is_missing_files(exc: BaseException) -> bool:
    text = f"{type(exc).__name__} {exc}".lower()
    return isinstance(exc, OSError) or any(w in text for w in (
        "local_files_only", "offline", "cannot find the requested files", "entrynotfound", "connection",
        "does not appear to have", "couldn't connect", "not found in the cache"))

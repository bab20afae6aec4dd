"""Flux.1 / SD3 checkpoints as the single files people download: a transformer-only .safetensors (BFL / SAI or
diffusers key names) or a GGUF file (Q8_0, Q5_K, Q4_K…), with the text encoders and the VAE taken from the
shared folders, as Forge and ComfyUI users arrange them:

  models/Stable-diffusion/ or models/unet/   the transformer file
  models/text_encoder/                        CLIP-L, CLIP-G (SD3), T5: HF folders or .safetensors
                                              (told apart by name — clip_l, clip_g, t5 — else by their keys)
  models/VAE/                                 the 16-channel VAE (Flux's ae.safetensors, SD3's)
  models/configs/<variant>/                   the diffusers configs + tokenizers (no weights needed):
                                              flux-dev, flux-schnell, sd3, sd35_medium, sd35_large

Nothing is fetched at run time: the configs come from a `<name>.config/` folder beside the file,
models/configs/<variant>/ or the Hugging Face cache; a component a config folder holds the weights of is
loaded from there when the shared folders lack it. What is missing is named with where to put it.

Quantization: a GGUF file loads through diffusers' GGUFQuantizationConfig (dequantized layer by layer as it
runs); Forge's pre-quantized bitsandbytes nf4 files are dequantized first (bnb_nf4.py), then kept in nf4;
bitsandbytes nf4 / int8 of the transformer through diffusers' BitsAndBytesConfig on CUDA, and on the CPU by
quant.py's layer swap after loading.
"""
from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path

from modules.devices import device_type
from modules.errors import InvalidRequest, ModelLoadError
from modules.models import detect
from modules.models.registry import SIDECAR_SUFFIX, ModelEntry

log = logging.getLogger("atelier.models")
FIELD = "sd_model_checkpoint"
MODULES_FIELD = "forge_additional_modules"  # Forge's setting: the VAE / text encoder files to use
ARCHS = ("flux", "sd3")
TEXT_ENCODER_FOLDER = "text_encoder"
# The text encoder each pipeline slot takes, by role (which file in models/text_encoder fills it).
ROLES = {"flux": {"text_encoder": "clip_l", "text_encoder_2": "t5"},
         "sd3": {"text_encoder": "clip_l", "text_encoder_2": "clip_g", "text_encoder_3": "t5"}}
ROLE_LABELS = {"clip_l": "CLIP-L (clip_l.safetensors)", "clip_g": "CLIP-G (clip_g.safetensors)",
               "t5": "T5-XXL (t5xxl_fp16.safetensors, or a T5EncoderModel folder)"}
_TRANSFORMERS = {"flux": "FluxTransformer2DModel", "sd3": "SD3Transformer2DModel"}
_CLIP_WIDTHS = {768: "clip_l", 1280: "clip_g"}


def takes_modules(entry: ModelEntry) -> bool:
    """A Flux / SD3 file (safetensors, GGUF) may take shared modules; a diffusers folder brings its own."""
    return entry.format in ("safetensors", "gguf") and entry.arch in ARCHS


def config_source(entry: ModelEntry, paths, kind: detect.CheckpointKind) -> Path | None:
    """The diffusers config folder of this file's variant: sidecar, models/configs/<variant>/, HF cache."""
    sidecar = entry.path.with_name(entry.path.stem + SIDECAR_SUFFIX)
    for folder in (sidecar, paths.models / "configs" / kind.variant):
        if (folder / "model_index.json").exists():
            return folder
    from huggingface_hub import snapshot_download

    try:
        cached = Path(snapshot_download(_repo(kind), local_files_only=True))
        return cached if (cached / "model_index.json").exists() else None
    except Exception:  # not in the cache (LocalEntryNotFoundError), or no cache at all
        return None


def _repo(kind: detect.CheckpointKind) -> str:
    from diffusers.loaders.single_file_utils import DIFFUSERS_DEFAULT_PIPELINE_PATHS

    return DIFFUSERS_DEFAULT_PIPELINE_PATHS[kind.variant]["pretrained_model_name_or_path"]


def missing_config_message(entry: ModelEntry, kind: detect.CheckpointKind, paths) -> str:
    repo, shared = _repo(kind), paths.models / "configs" / kind.variant
    return (f"{entry.name} is a single-file {kind.variant} transformer; loading it needs the diffusers configs and "
            f"tokenizers of {repo}, which are not on this machine (no download happens at run time). Get them once "
            f"with: huggingface-cli download {repo} --include \"*.json\" \"*.txt\" \"*.model\" --local-dir {shared}  "
            f"(or into the Hugging Face cache, or a folder {entry.path.with_name(entry.path.stem + SIDECAR_SUFFIX)})")


# -- GGUF files ---------------------------------------------------------------------------------
@dataclass
class GGUFInfo:
    kind: detect.CheckpointKind
    quantization: str  # the most common quantized type: "Q8_0", "Q4_K", …; "F16" when none is quantized


def gguf_info(path: Path) -> GGUFInfo:
    """Architecture and quantization of a GGUF transformer file, from its tensor index (no tensor is read)."""
    from collections import Counter

    from gguf import GGMLQuantizationType, GGUFReader

    try:
        reader = GGUFReader(str(path))
    except Exception as exc:
        raise ModelLoadError(f"{Path(path).name}: not a readable GGUF file ({type(exc).__name__}: "
                             f"{str(exc)[:200]}); download it again", "file") from None
    names = [t.name for t in reader.tensors]
    kind = detect.flow_kind_from_keys(names)
    if kind is None:
        raise ModelLoadError(f"{Path(path).name}: a GGUF file without a Flux or SD3 transformer; a language model "
                             "belongs in models/LLM", "file")
    plain = (GGMLQuantizationType.F32, GGMLQuantizationType.F16, GGMLQuantizationType.BF16)
    counts = Counter(t.tensor_type.name for t in reader.tensors if t.tensor_type not in plain)
    return GGUFInfo(kind, counts.most_common(1)[0][0] if counts else "F16")


def describe(entry: ModelEntry) -> None:
    """The registry's description of a GGUF checkpoint: its arch, variant and quantization."""
    info = gguf_info(entry.path)
    entry.arch = info.kind.arch
    entry.metadata = {"variant": info.kind.variant, "quantization": "GGUF " + info.quantization}


# -- loading ---------------------------------------------------------------------------------
def load_file(entry: ModelEntry, kind: detect.CheckpointKind | None, dtype, paths, options, device_name: str):
    """A transformer-only Flux / SD3 file (.safetensors or .gguf) + the shared encoders and VAE → (pipe, arch)."""
    import diffusers

    gguf = entry.format == "gguf"
    if gguf:
        kind = gguf_info(entry.path).kind
        if options is not None and options.quantization != "none":
            raise InvalidRequest(f"{entry.name} is GGUF-quantized already; load it with quantization none",
                                 "quantization")
    elif entry.format != "safetensors":
        raise ModelLoadError(f"{entry.name}: a {kind.arch} checkpoint as a pickle; use its .safetensors file", FIELD)
    config = config_source(entry, paths, kind)
    if config is None:
        raise ModelLoadError(missing_config_message(entry, kind, paths), FIELD)
    state = read_state(entry)
    if kind.prequantized:  # Forge's bnb-nf4 file: plain tensors for the BFL path (quantized again after)
        from modules.models import bnb_nf4

        state = bnb_nf4.dequantize_state(state, dtype, entry.name)
    keep_fp8 = options is None or options.t5 != "int8"  # int8 is made from the upcast weights
    wanted = options.modules if options is not None else ()
    components = shared_components(entry, kind, config, paths, dtype, _bundled(state), keep_fp8, wanted)
    transformer = load_transformer(entry, kind, config, state, dtype, options, device_name)
    del state
    index = json.loads((config / "model_index.json").read_text(encoding="utf-8"))
    cls = getattr(diffusers, str(index.get("_class_name")))
    try:
        pipe = cls.from_pretrained(str(config), transformer=transformer, torch_dtype=dtype, local_files_only=True,
                                   **components)
    except Exception as exc:
        raise ModelLoadError(f"{entry.name}: the pipeline could not be assembled from {config}: "
                             f"{type(exc).__name__}: {str(exc)[:400]}", FIELD) from None
    return pipe, kind.arch


def read_state(entry: ModelEntry) -> dict:
    """The file's tensors: safetensors as they are, GGUF's as diffusers' GGUFParameters (still quantized)."""
    if entry.format == "gguf":
        from diffusers.models.model_loading_utils import load_gguf_checkpoint

        return load_gguf_checkpoint(str(entry.path))
    from safetensors.torch import load_file

    return load_file(str(entry.path))


# An all-in-one file's other parts, by key prefix (the names SAI's SD3 files and Forge's Flux ones use).
_BUNDLED = (("text_encoders.clip_l.transformer.", "clip_l"), ("text_encoders.clip_g.transformer.", "clip_g"),
            ("text_encoders.t5xxl.transformer.", "t5"), ("vae.", "vae"), ("first_stage_model.", "vae"))


def _bundled(state: dict) -> dict[str, dict]:
    """role (clip_l, clip_g, t5, vae) → its tensors, for the parts an all-in-one file carries itself."""
    parts: dict[str, dict] = {}
    for key, tensor in state.items():
        for prefix, role in _BUNDLED:
            if key.startswith(prefix):
                parts.setdefault(role, {})[key[len(prefix):]] = tensor
    return parts


def _transformer_part(state: dict, kind: detect.CheckpointKind) -> dict:
    """Only the transformer's tensors (an all-in-one file's encoders and VAE go to their own loaders), in
    diffusers' names for Flux's BFL layout; SD3's SAI layout goes to diffusers' own converter as it is."""
    from modules.models import flux_layout

    prefix = "model.diffusion_model."
    if any(k.startswith(prefix) for k in state):
        state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    if kind.arch == "flux" and kind.layout == "bfl":
        return flux_layout.to_diffusers(state)
    return state


def load_transformer(entry: ModelEntry, kind: detect.CheckpointKind, config: Path, state: dict, dtype, options,
                     device_name: str):
    import diffusers

    cls = getattr(diffusers, _TRANSFORMERS[kind.arch])
    kwargs = {"config": str(config), "subfolder": "transformer", "torch_dtype": dtype, "local_files_only": True}
    if entry.format == "gguf":
        kwargs["quantization_config"] = diffusers.GGUFQuantizationConfig(compute_dtype=dtype)
    else:
        kwargs.update(transformer_quantization(options, dtype, device_name))
    try:
        return cls.from_single_file(_transformer_part(state, kind), **kwargs)
    except Exception as exc:
        raise ModelLoadError(f"{entry.name}: could not be loaded as a {kind.variant} transformer: "
                             f"{type(exc).__name__}: {str(exc)[:400]}", FIELD) from None


def transformer_quantization(options, dtype, device_name: str) -> dict:
    """diffusers' BitsAndBytesConfig for the transformer on CUDA (the CPU gets quant.py's layer swap instead)."""
    if options is None or options.quantization == "none" or device_type(device_name) != "cuda":
        return {}
    return {"quantization_config": options.diffusers_config(dtype)}


def folder_transformer(folder: Path, arch: str, dtype, quant: dict):
    """The transformer of a diffusers folder, loaded with a quantization config (CUDA)."""
    import diffusers

    return getattr(diffusers, _TRANSFORMERS[arch]).from_pretrained(
        str(folder), subfolder="transformer", torch_dtype=dtype, local_files_only=True, **quant)


# -- the shared text encoders and VAE ---------------------------------------------------------------
def _has_weights(folder: Path) -> bool:
    return folder.is_dir() and any(folder.glob("*.safetensors"))


def shared_components(entry: ModelEntry, kind: detect.CheckpointKind, config: Path, paths, dtype,
                      bundled: dict, keep_fp8: bool = True, wanted: tuple[str, ...] = ()) -> dict:
    """The text encoders and the VAE: the modules `wanted` names (Forge's forge_additional_modules), else the
    file's own (all-in-one), else models/text_encoder and models/VAE by role, else the config folder's weights; a
    missing one is a ModelLoadError naming what to put where. A T5 stored in fp8 stays fp8 when `keep_fp8`."""
    found = {**shared_files(paths, kind.arch), **bundled, **picked_files(paths, wanted)}
    components, missing = {}, []
    for slot, role in ROLES[kind.arch].items():
        if role in found:
            components[slot] = load_text_encoder(found[role], config / slot, dtype, keep_fp8 and role == "t5")
        elif not _has_weights(config / slot):
            missing.append(ROLE_LABELS[role] + " in models/text_encoder")
    vae = found.get("vae")
    if vae is not None:
        components["vae"] = load_vae(vae, config, dtype)
    elif not _has_weights(config / "vae"):
        missing.append("the 16-channel VAE (Flux's ae.safetensors, or SD3's VAE) in models/VAE")
    if missing:
        raise ModelLoadError(f"{entry.name} is a transformer-only {kind.variant} file; it needs "
                             f"{', '.join(missing)} (as Forge and ComfyUI keep them)", FIELD)
    return components


def shared_files(paths, arch: str) -> dict[str, Path]:
    """role (clip_l, clip_g, t5, vae) → the file or folder models/text_encoder and models/VAE give it by default."""
    files = _text_encoders(paths.models / TEXT_ENCODER_FOLDER)
    vae = _vae_file(paths.model_dir("vae"), arch)
    return {**files, "vae": vae} if vae is not None else files


def picked_files(paths, wanted: tuple[str, ...]) -> dict[str, Path]:
    """role → the module each name in `wanted` is (a file name, a stem as Forge's infotext writes it, or a path as
    Forge's API clients send it), found in models/text_encoder or models/VAE; a missing one is refused by name."""
    picked: dict[str, Path] = {}
    vae_folder = paths.model_dir("vae")
    for name in wanted:
        base = re.split(r"[\\/]", name)[-1]
        path = next((child for folder in (paths.models / TEXT_ENCODER_FOLDER, vae_folder) if folder.is_dir()
                     for child in sorted(folder.iterdir()) if base in (child.name, child.stem)), None)
        if path is None:
            raise InvalidRequest(f"module {base!r} is not in models/{TEXT_ENCODER_FOLDER} or models/VAE; put it "
                                 "there or leave it out", MODULES_FIELD)
        role = "vae" if path.parent == vae_folder else encoder_role(path)
        if role is None:
            raise InvalidRequest(f"module {base!r} is neither CLIP-L, CLIP-G, T5 nor a VAE", MODULES_FIELD)
        picked[role] = path
    return picked


def module_names(entry: ModelEntry, arch: str, paths, wanted: tuple[str, ...]) -> list[str]:
    """Forge's infotext `Module 1`, `Module 2`, …: the shared files a transformer-only file was loaded with (their
    stems, as Forge writes them), the VAE first, then the text encoders in slot order."""
    if entry.format not in ("safetensors", "gguf") or arch not in ROLES:
        return []
    keys = detect.read_header(entry.path).keys if entry.format == "safetensors" else []
    bundled = {role for prefix, role in _BUNDLED if any(k.startswith(prefix) for k in keys)}
    found = {r: p for r, p in shared_files(paths, arch).items() if r not in bundled}
    found.update(picked_files(paths, wanted))
    roles = ["vae", *ROLES[arch].values()]
    return [found[r].name if found[r].is_dir() else found[r].stem for r in roles if r in found]


def _text_encoders(folder: Path) -> dict[str, Path]:
    """role → file or folder in models/text_encoder (the first by name for each role)."""
    roles: dict[str, Path] = {}
    if not folder.is_dir():
        return roles
    for child in sorted(folder.iterdir()):
        if child.name.startswith(".") or not (child.suffix == ".safetensors" or (child / "config.json").exists()):
            continue
        try:
            role = encoder_role(child)
        except ModelLoadError as exc:
            log.warning("models/text_encoder/%s skipped: %s", child.name, exc.message)
            continue
        if role is not None:
            roles.setdefault(role, child)
    return roles


def encoder_role(path: Path) -> str | None:
    """clip_l / clip_g / t5 of a text encoder file or folder: by its name as ComfyUI names them, else its config
    (model_type, width) or keys."""
    name = path.name.lower().replace("-", "_")
    for role, marks in (("clip_g", ("clip_g", "clipg")), ("clip_l", ("clip_l", "clipl")), ("t5", ("t5",))):
        if any(m in name for m in marks):
            return role
    if path.is_dir():
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
        if str(config.get("model_type", "")).endswith("t5"):
            return "t5"
        return _CLIP_WIDTHS.get(int(config.get("hidden_size") or 0))
    header = detect.read_header(path, lambda k: k.endswith("token_embedding.weight"))
    if any(".block." in k and "SelfAttention" in k for k in header.keys):
        return "t5"
    for shape in header.shapes.values():
        return _CLIP_WIDTHS.get(shape[-1])
    return None


def load_text_encoder(source: Path | dict, slot_config: Path, dtype, keep_fp8: bool = False):
    """A transformers text encoder of the class the config folder names: from an HF folder, or weights (a
    .safetensors file, or an all-in-one file's tensors) on the config folder's config.json; fp8 weights kept
    fp8 when `keep_fp8`."""
    import transformers

    from modules.models import t5_storage

    config = json.loads((slot_config / "config.json").read_text(encoding="utf-8"))
    cls = getattr(transformers, config["architectures"][0])
    where = "the checkpoint's own" if isinstance(source, dict) else f"models/{TEXT_ENCODER_FOLDER}/{source.name}"
    try:
        if isinstance(source, Path) and source.is_dir():
            return cls.from_pretrained(str(source), torch_dtype=dtype, local_files_only=True)
        from safetensors.torch import load_file

        state = source if isinstance(source, dict) else load_file(str(source))
        model_config = cls.config_class.from_pretrained(str(slot_config), local_files_only=True)
        if keep_fp8 and t5_storage.state_is_fp8(state):
            return t5_storage.load_fp8_encoder(cls, model_config, state, dtype)
        return cls.from_pretrained(None, config=model_config, state_dict=state, torch_dtype=dtype)
    except Exception as exc:
        fix = "" if isinstance(source, dict) else (f"; pick one that fits in the VAE / Text Encoder picker "
                                                    f"({MODULES_FIELD})")
        raise ModelLoadError(f"{where}: could not be loaded as {cls.__name__}: {type(exc).__name__}: "
                             f"{str(exc)[:300]}{fix}", FIELD) from None


def _vae_channels(path: Path) -> int | None:
    key = "decoder.conv_in.weight"
    header = detect.read_header(path, lambda k: k.endswith(key))
    shape = next((s for k, s in header.shapes.items() if k.endswith(key)), None)
    return shape[1] if shape and len(shape) == 4 else None


def _vae_file(folder: Path, arch: str) -> Path | None:
    """The 16-channel VAE of models/VAE: one named for the architecture (ae / flux, sd3), else the first."""
    candidates = []
    for path in sorted(folder.glob("*.safetensors")) if folder.is_dir() else []:
        try:
            if _vae_channels(path) == 16:
                candidates.append(path)
        except ModelLoadError:
            continue
    marks = {"ae", "flux"} if arch == "flux" else {"sd3", "sd35"}
    named = [p for p in candidates if marks & set(re.split(r"[^a-z0-9]+", p.stem.lower()))]
    return (named or candidates or [None])[0]


def load_vae(source: Path | dict, config: Path, dtype):
    """The VAE from a file or an all-in-one file's tensors (LDM or diffusers names: diffusers converts)."""
    from diffusers import AutoencoderKL

    where = "the checkpoint's own VAE" if isinstance(source, dict) else f"models/VAE/{source.name}"
    try:
        return AutoencoderKL.from_single_file(source if isinstance(source, dict) else str(source), config=str(config),
                                              subfolder="vae", torch_dtype=dtype, local_files_only=True)
    except Exception as exc:
        raise ModelLoadError(f"{where}: could not be loaded as the 16-channel VAE: "
                             f"{type(exc).__name__}: {str(exc)[:300]}", FIELD) from None

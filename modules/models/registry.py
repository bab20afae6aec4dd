"""What is on disk: scans the model folders and describes each entry.

The registry reads file names, sizes, safetensors headers (keys, shapes, metadata) and hashes
(cached in cache.json); it never loads weights. A file it cannot read is still listed, with
the problem in `entry.problem`, so one bad download never hides the rest.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path

from modules.errors import AtelierError, NotFound
from modules.models.hashes import EAGER_LIMIT, HashCache
from modules.models.hf_info import name_keys
from modules.paths import MODEL_FOLDERS, UNET_FOLDER, DataPaths, resolve_inside

log = logging.getLogger("atelier.models")

WEIGHT_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin", ".gguf")
OPENVINO_SUFFIX = "_openvino_model"  # ultralytics' OpenVINO export folder
SIDECAR_SUFFIX = ".config"  # `model.config/` beside `model.safetensors`: its diffusers configs


@dataclass
class ModelEntry:
    kind: str  # checkpoint, lora, vae, embedding, llm, vlm, lm_adapter, or an extension's kind
    name: str  # path relative to the kind's folder, with forward slashes (what users type)
    path: Path
    format: str  # "diffusers", "hf", "peft", "safetensors", "pickle", "gguf"
    size: int
    arch: str | None = None  # sd1, sd2, sdxl, … when known
    sha256: str | None = None
    metadata: dict = field(default_factory=dict)
    problem: str | None = None  # why the file cannot be used, when the scan already knows

    @property
    def title(self) -> str:
        """AUTOMATIC1111's checkpoint title: `name [shorthash]` once the hash is known."""
        return f"{self.name} [{self.short_hash}]" if self.sha256 else self.name

    @property
    def short_hash(self) -> str | None:
        return self.sha256[:10] if self.sha256 else None

    @property
    def stem(self) -> str:
        return Path(self.name).stem if self.format not in ("diffusers", "hf", "peft") else Path(self.name).name


def _folder_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def _format_of(path: Path, kind: str = "") -> str | None:
    if path.is_dir():
        if path.name.endswith(SIDECAR_SUFFIX):
            return None
        if path.name.endswith(OPENVINO_SUFFIX) and kind not in MODEL_FOLDERS and any(path.glob("*.xml")):
            return "openvino"  # an extension's kind (a YOLO export): model.xml + model.bin, one model
        if (path / "model_index.json").exists():
            return "diffusers"
        if (path / "config.json").exists():
            return "hf"
        if (path / "adapter_config.json").exists():
            return "peft"
        return None
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        return "safetensors"
    if suffix in (".ckpt", ".pt", ".pth", ".bin"):
        return "pickle"
    if suffix == ".gguf":
        return "gguf"
    if suffix == ".onnx" and kind not in MODEL_FOLDERS:  # extensions' kinds (YOLO exports); SD / LLM tools have none
        return "onnx"
    return None


def _describe(entry: ModelEntry) -> None:
    """Fill arch and metadata from the header (cheap); a broken file gets `problem` instead."""
    from modules.models import detect

    try:
        if entry.format == "diffusers":
            entry.arch = detect.folder_arch(entry.path)
        elif entry.format in ("hf", "peft") or (entry.format == "gguf" and entry.kind in ("llm", "vlm")):
            _describe_transformers(entry)
        elif entry.format == "gguf" and entry.kind == "checkpoint":  # a Flux / SD3 transformer in GGUF
            from modules.models import flow_files

            flow_files.describe(entry)
        elif entry.format != "safetensors":
            return
        elif entry.kind == "checkpoint":
            kind = detect.checkpoint_kind(entry.path)
            entry.arch = kind.arch
            if kind.prequantized:  # Forge's bnb-nf4 file: its own quantization, as a GGUF file's type
                from modules.models import bnb_nf4

                entry.metadata = {"variant": kind.variant, "quantization": bnb_nf4.LABEL}
        elif entry.kind == "lora":
            entry.arch = detect.lora_arch(entry.path)
            entry.metadata = detect.read_header(entry.path).metadata
        elif entry.kind == "text_encoder":  # which slot of a Flux / SD3 file it fills: clip_l, clip_g, t5
            from modules.models import flow_files

            entry.arch = flow_files.encoder_role(entry.path)
        elif entry.kind == "embedding":
            header = detect.read_header(entry.path, lambda k: True)
            shape = next(iter(header.shapes.values()), [])
            entry.metadata = {"vectors": shape[0] if len(shape) > 1 else 1, "shape": shape[-1] if shape else 0}
            if {"clip_l", "clip_g"} <= set(header.keys):
                entry.arch = "sdxl"
        else:
            detect.read_header(entry.path)
    except AtelierError as exc:
        entry.problem = exc.message
    except Exception as exc:  # never let one file break the scan
        entry.problem = f"{type(exc).__name__}: {exc}"


def _describe_transformers(entry: ModelEntry) -> None:
    """config.json of an HF folder, adapter_config.json of a PEFT adapter, the header of a GGUF file."""
    from modules.models import hf_info

    if entry.format == "hf":
        entry.arch, entry.metadata = hf_info.describe_folder(entry.path)
    elif entry.format == "gguf":
        entry.arch, entry.metadata = hf_info.describe_gguf(entry.path)
    elif entry.kind == "lm_adapter":
        entry.metadata = hf_info.describe_adapter(entry.path)
    else:
        entry.problem = ("a PEFT adapter folder (adapter_config.json), not a model: move it into models/LLM-loras, "
                         "where it is listed under its base model")


class ModelRegistry:
    def __init__(self, paths: DataPaths):
        self.paths = paths
        self.hashes = HashCache(paths.hash_cache)
        self._entries: dict[str, dict[str, ModelEntry]] = {}
        self._lock = threading.Lock()

    def refresh(self, kind: str | None = None) -> None:
        kinds = [kind] if kind else self.paths.model_kinds()
        for k in kinds:
            found = self._scan(k)
            with self._lock:
                self._entries[k] = found

    def _scan(self, kind: str) -> dict[str, ModelEntry]:
        found: dict[str, ModelEntry] = {}
        self._scan_folder(kind, self.paths.model_dir(kind), "", found)
        if kind == "checkpoint":  # ComfyUI's models/unet: transformer-only files, listed as unet/<name>
            self._scan_folder(kind, self.paths.unet, UNET_FOLDER + "/", found)
        return found

    def _scan_folder(self, kind: str, folder: Path, prefix: str, found: dict[str, ModelEntry]) -> None:
        if not folder.is_dir():
            return
        stack = [folder]
        while stack:
            current = stack.pop()
            for child in sorted(current.iterdir()):
                if child.name.startswith("."):
                    continue
                fmt = _format_of(child, kind)
                if fmt is None:
                    if child.is_dir() and not child.name.endswith(SIDECAR_SUFFIX):
                        stack.append(child)
                    continue
                name = prefix + child.relative_to(folder).as_posix()
                try:
                    size = _folder_size(child) if child.is_dir() else child.stat().st_size
                except OSError:
                    continue  # vanished while scanning
                entry = ModelEntry(kind=kind, name=name, path=child, format=fmt, size=size)
                _describe(entry)
                entry.sha256 = self.hashes.cached(child)
                if entry.sha256 is None and size <= EAGER_LIMIT:
                    entry.sha256 = self._hash(child)
                found.setdefault(name, entry)

    def _hash(self, path: Path) -> str | None:
        try:
            return self.hashes.get(path)
        except OSError as exc:
            log.warning("could not hash %s: %s", path, exc)
            return None

    def ensure_hash(self, entry: ModelEntry) -> str | None:
        """Hash a big file when it is first used (A1111 does the same); cached from then on."""
        if entry.sha256 is None:
            entry.sha256 = self._hash(entry.path)
        return entry.sha256

    def list(self, kind: str) -> list[ModelEntry]:
        if kind not in self._entries:
            self.refresh(kind)
        return sorted(self._entries.get(kind, {}).values(), key=lambda e: e.name.lower())

    def adapters_for(self, base: ModelEntry) -> list[ModelEntry]:
        """The PEFT adapters whose adapter_config.json names `base` (by hub id, folder name or path)."""
        keys = name_keys(base.name) | name_keys(Path(base.name).name)
        found = []
        for entry in self.list("lm_adapter"):
            wanted = entry.metadata.get("base_model")
            if not wanted:
                continue
            same_path = Path(wanted).is_absolute() and Path(wanted).resolve() == base.path.resolve()
            if same_path or name_keys(wanted) & keys:
                found.append(entry)
        return found

    def get(self, kind: str, name: str, field: str | None = None) -> ModelEntry:
        """Find by name, by name without extension, or by A1111 title `name [hash]`; a refusal names
        `field` (default "<kind> name": the request's own field name where the caller knows it)."""
        field = field or f"{kind} name"
        entries = {e.name: e for e in self.list(kind)}
        key = name.strip()
        if key.endswith("]") and " [" in key:
            key = key.rsplit(" [", 1)[0]
        # Refuse names that would leave the folder before any lookup.
        resolve_inside(self.paths.model_dir(kind), key, field_name=field, must_exist=False)
        if key in entries:
            return entries[key]
        for entry in entries.values():
            if entry.stem == key or Path(entry.name).with_suffix("").as_posix() == key:
                return entry
        known = ", ".join(list(entries)[:20]) or "none"
        raise NotFound(f"no {kind} named {name!r}; available: {known}", field)

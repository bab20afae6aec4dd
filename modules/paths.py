"""The data-folder layout, and the one place that turns user-given names into paths.

Every name that arrives in a request (a model, a LoRA, an output image) is resolved
here; anything that would land outside its folder is refused.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from modules.errors import NotFound, PathRefused

# Folder names under models/, as AUTOMATIC1111 and text-generation-webui name them.
MODEL_FOLDERS = {
    "checkpoint": "Stable-diffusion",
    "lora": "Lora",
    "vae": "VAE",
    "embedding": "embeddings",
    "llm": "LLM",
    "vlm": "VLM",
    # PEFT adapter folders (adapter_config.json + weights) for LLMs and VLMs alike, as
    # text-generation-webui's loras/ holds them; each is listed under the base model its config
    # names. Not "loras": on a case-insensitive disk that is the SD "Lora" folder.
    "lm_adapter": "LLM-loras",
    # Upscaler models (spandrel loads every one of them), in AUTOMATIC1111's folders: one kind per folder.
    "esrgan": "ESRGAN",
    "realesrgan": "RealESRGAN",
    "swinir": "SwinIR",
    "dat": "DAT",
    "hat": "HAT",
    "gfpgan": "GFPGAN",  # face restorers (GFPGANv1.4), loaded by spandrel too
    # Flux / SD3 text encoders (CLIP-L, CLIP-G, T5) shared by transformer-only checkpoints, as ComfyUI's folder.
    "text_encoder": "text_encoder",
}
# ComfyUI's folder of transformer-only files (GGUF among them): listed with the checkpoints, as "unet/<name>".
UNET_FOLDER = "unet"


@dataclass(frozen=True)
class DataPaths:
    root: Path
    overrides: dict = field(default_factory=dict)  # kind -> folder (e.g. --ckpt-dir)
    extra_kinds: dict = field(default_factory=dict)  # kind -> folder registered by extensions

    @property
    def models(self) -> Path:
        return self.root / "models"

    @property
    def outputs(self) -> Path:
        return self.root / "outputs"

    @property
    def config_file(self) -> Path:
        return self.root / "config.json"

    @property
    def hash_cache(self) -> Path:
        return self.root / "cache.json"

    @property
    def styles_file(self) -> Path:
        """AUTOMATIC1111's styles.csv: prompt styles (name, prompt, negative_prompt)."""
        return self.root / "styles.csv"

    @property
    def login_file(self) -> Path:
        """The login made up for --listen / --share without auth flags (mode 0600)."""
        return self.root / "login.json"

    @property
    def jobs(self) -> Path:
        """Records of long jobs (training), kept across restarts."""
        return self.root / "jobs"

    @property
    def training(self) -> Path:
        """Training runs: training/<run name>/ (request, checkpoints, samples, logs)."""
        return self.root / "training"

    @property
    def compile_cache(self) -> Path:
        """torch.compile's caches (inductor's kernels, the FX graph and AOTAutograd caches), kept across restarts."""
        return self.root / "cache" / "torch-compile"

    @property
    def extensions(self) -> Path:
        return self.root / "extensions"

    def model_dir(self, kind: str) -> Path:
        if kind in self.overrides:
            return Path(self.overrides[kind])
        if kind in self.extra_kinds:
            return Path(self.extra_kinds[kind])
        if kind not in MODEL_FOLDERS:
            raise NotFound(f"unknown model kind {kind!r}; known: {', '.join(self.model_kinds())}", "kind")
        return self.models / MODEL_FOLDERS[kind]

    @property
    def unet(self) -> Path:
        return self.models / UNET_FOLDER

    def model_kinds(self) -> list[str]:
        return list(MODEL_FOLDERS) + [k for k in self.extra_kinds if k not in MODEL_FOLDERS]

    def ensure(self) -> None:
        for kind in self.model_kinds():
            self.model_dir(kind).mkdir(parents=True, exist_ok=True)
        self.unet.mkdir(parents=True, exist_ok=True)
        self.outputs.mkdir(parents=True, exist_ok=True)

    def with_kind(self, kind: str, folder: Path) -> "DataPaths":
        return DataPaths(self.root, dict(self.overrides), {**self.extra_kinds, kind: Path(folder)})

    def resolve_model(self, kind: str, name: str, must_exist: bool = True) -> Path:
        return resolve_inside(self.model_dir(kind), name, field_name=f"{kind} name", must_exist=must_exist)

    def resolve_output(self, relative: str, must_exist: bool = True) -> Path:
        return resolve_inside(self.outputs, relative, field_name="output path", must_exist=must_exist)


_ENCODED_SEPARATOR = re.compile(r"%(2e|2f|5c)", re.IGNORECASE)


def resolve_inside(folder: Path, name: str, field_name: str = "name", must_exist: bool = True) -> Path:
    """Resolve `name` inside `folder`, refusing absolute paths, `..`, NUL and symlink escapes."""
    if not isinstance(name, str) or not name.strip():
        raise PathRefused("must be a non-empty name", field_name)
    if "\x00" in name or len(name) > 1024:
        raise PathRefused("contains a NUL byte or is too long", field_name)
    if "\\" in name:  # a Windows separator: refused everywhere so the same names are refused on every OS
        raise PathRefused(f"{name!r} contains a backslash; use / between folders", field_name)
    if _ENCODED_SEPARATOR.search(name):  # a client or proxy that decodes it later would climb out
        raise PathRefused(f"{name!r} holds a percent-encoded '.', '/' or '\\'; write the name as it is on disk",
                          field_name)
    candidate = Path(name)
    if candidate.is_absolute() or ".." in candidate.parts:
        raise PathRefused(f"{name!r} points outside {folder.name}/; give a name inside that folder", field_name)
    base = folder.resolve()
    resolved = (base / candidate).resolve()
    if resolved != base and base not in resolved.parents:
        raise PathRefused(f"{name!r} resolves outside {folder.name}/", field_name)
    if must_exist and not resolved.exists():
        raise NotFound(f"{name!r} is not in {folder}", field_name)
    return resolved

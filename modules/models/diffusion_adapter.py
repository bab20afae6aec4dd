"""The "checkpoint" kind: Stable Diffusion pipelines (SD1.x, SD2.x, SDXL) behind the adapter interface.

Loading reads the file into RAM first (a file that fails leaves everything else serving),
then quantizes and places it under the memory policy. Every use syncs the VAE and the
embeddings the settings ask for. txt2img, img2img and inpaint share one set of weights
(`LoadedCheckpoint.pipeline(mode)`, diffusers' `from_pipe`).
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Any

from modules.errors import InvalidRequest
from modules.models import bnb_nf4, flow_files, loaders, lora, memory, skeleton, skeleton_file, speed, torch_compile
from modules.models.adapters import AdapterContext, Loaded
from modules.models.quant import LoadOptions
from modules.models.registry import ModelEntry

log = logging.getLogger("atelier.models")


@dataclass
class LoadedCheckpoint:
    entry: ModelEntry
    pipe: Any  # the txt2img pipeline; other modes share its components
    arch: str = "sd1"
    options: LoadOptions = field(default_factory=LoadOptions)
    quantization: str | None = None  # "nf4", "nf4 double quant", "int8", … for the infotext
    t5_storage: str | None = None  # Flux / SD3: "int8" / "fp8" when T5 is stored so (t5_storage.py)
    modules: list[str] = field(default_factory=list)  # Forge's infotext Module 1, 2, …: the shared files used
    policy: str = "gpu"
    location: str = "cpu"  # where the weights are: "cpu", "cuda", … (offloaded: "cuda (model_offload)")
    footprint: int = 0
    footprint_of: tuple = ()  # what `footprint` was counted for: the modules, embeddings and LoRAs loaded
    vae: ModelEntry | None = None  # the VAE file in use; None = the checkpoint's own
    vae_setting: str = "Automatic"
    embeddings: list[ModelEntry] = field(default_factory=list)
    skipped_embeddings: dict = field(default_factory=dict)  # path -> why it does not fit this checkpoint
    base_vae: Any = None  # the checkpoint's own VAE while another one is in use
    loras: lora.LoraState = field(default_factory=lora.LoraState)
    built_from: str = "files"  # "skeleton": same-architecture switch, only the weights were read (skeleton.py)
    compiled: str = "off"  # the torch.compile mode of its denoiser now (torch_compile.py)
    compile_seconds: float = 0.0  # spent compiling it so far
    _modes: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.entry.name

    @property
    def vae_name(self) -> str | None:
        return self.vae.stem if self.vae else None

    @property
    def vae_hash(self) -> str | None:
        return self.vae.short_hash if self.vae else None

    @property
    def embedding_names(self) -> list[str]:
        return [e.stem for e in self.embeddings]

    def pipeline(self, mode: str):
        """The pipeline for txt2img / img2img / inpaint, built once from the same components."""
        if mode == "txt2img":
            return self.pipe
        if mode not in self._modes:
            from diffusers import (
                FluxImg2ImgPipeline,
                FluxInpaintPipeline,
                StableDiffusion3Img2ImgPipeline,
                StableDiffusion3InpaintPipeline,
                StableDiffusionImg2ImgPipeline,
                StableDiffusionInpaintPipeline,
                StableDiffusionXLImg2ImgPipeline,
                StableDiffusionXLInpaintPipeline,
            )

            classes = {
                ("sd", "img2img"): StableDiffusionImg2ImgPipeline,
                ("sd", "inpaint"): StableDiffusionInpaintPipeline,
                ("sdxl", "img2img"): StableDiffusionXLImg2ImgPipeline,
                ("sdxl", "inpaint"): StableDiffusionXLInpaintPipeline,
                ("flux", "img2img"): FluxImg2ImgPipeline,
                ("flux", "inpaint"): FluxInpaintPipeline,
                ("sd3", "img2img"): StableDiffusion3Img2ImgPipeline,
                ("sd3", "inpaint"): StableDiffusion3InpaintPipeline,
            }
            family = self.arch if self.arch in ("sdxl", "flux", "sd3") else "sd"
            made = classes[(family, mode)].from_pipe(self.pipe)
            made.set_progress_bar_config(disable=True)
            self._modes[mode] = made
        return self._modes[mode]


class DiffusionAdapter:
    """load / move / prepare / release for diffusers checkpoints.

    Holds one thing across models: the module skeleton of each architecture loaded so far (skeleton.py)."""

    def __init__(self):
        self.skeletons = skeleton.SkeletonCache()

    def residency(self, settings) -> dict:
        """A1111's checkpoint cache: one checkpoint on the device, `sd_checkpoints_limit` in RAM
        (the one in use counted), the parked ones within `sd_checkpoint_cache_gb`."""
        return {"max_on_device": 1, "max_resident": settings.sd_checkpoints_limit,
                "max_parked_bytes": int(settings.sd_checkpoint_cache_gb * 1024**3)}

    def load(self, actx: AdapterContext, entry: ModelEntry, options: LoadOptions) -> Loaded:
        from modules.models import quant, t5_storage

        device = actx.device
        t5_storage.check(options, entry.arch, device.name)  # before the read: a refusal costs nothing
        if options.modules and not flow_files.takes_modules(entry):
            raise InvalidRequest(f"{entry.name} brings its own text encoders and VAE: forge_additional_modules "
                                 "choose them for transformer-only Flux / SD3 files; leave it out",
                                 flow_files.MODULES_FIELD)
        dtype = options.torch_dtype(device.dtype)
        used = bnb_nf4.load_options(entry, options)  # a pre-quantized nf4 file stays nf4 (the options kept asked)
        # A big file is hashed (once, then cached) while it loads: both read the same pages.
        hasher = None
        if entry.sha256 is None:
            hasher = threading.Thread(target=actx.registry.ensure_hash, args=(entry,), name="atelier-hash", daemon=True)
            hasher.start()
        try:
            pipe, arch, built_from = self._read(actx, entry, used, dtype)
        finally:
            if hasher is not None:
                hasher.join()
        pipe.set_progress_bar_config(disable=True)
        quantization = quant.quantize_pipeline(pipe, used, device.name)
        t5 = t5_storage.apply(pipe, arch, options, device.name)
        ckpt = LoadedCheckpoint(entry=entry, pipe=pipe, arch=arch, options=options, quantization=quantization,
                                t5_storage=t5, footprint=memory.footprint_bytes(pipe), built_from=built_from,
                                modules=flow_files.module_names(entry, arch, actx.registry.paths, options.modules))
        # bitsandbytes weights on a GPU are placed by their own config, never moved by .to() or offload hooks;
        # GGUF's are plain tensors (dequantized as each layer runs), offloaded like any.
        bnb_on_gpu = bool(quantization) and device.type == "cuda" and not quantization.startswith("GGUF")
        movable = not bnb_on_gpu
        loaded = Loaded(kind="checkpoint", entry=entry, options=options, handle=ckpt, footprint=ckpt.footprint,
                        device="cpu", movable=movable)
        self.to(actx, loaded, device.name)
        self.skeletons.make_spares()  # the next switch's copy, now that this one is done
        return loaded

    def _read(self, actx: AdapterContext, entry: ModelEntry, options: LoadOptions, dtype):
        """(pipe, arch, built_from): from the skeleton of a same-architecture diffusers folder or SD1 single
        file, else the ordinary load."""
        device = actx.device
        key = None
        if not loaders.quantized_at_load(options, device.name):
            if entry.format == "diffusers":
                key = self.skeletons.fingerprint(entry.path, dtype)
            elif entry.format == "safetensors":
                key = loaders.single_file_fingerprint(entry, actx.registry.paths, dtype)
            built = self.skeletons.build(key, entry.path)
            if built is not None:
                return (*built, "skeleton")
        pipe, arch = loaders.load_checkpoint(entry, dtype, actx.registry.paths, options, device.name)
        # Kept before anything (LoRAs, quantization) touches the modules.
        if key is not None and entry.format == "diffusers":
            self.skeletons.remember(key, entry.path, pipe, arch)
        elif key is not None:
            self.skeletons.remember_file(key, entry.path, pipe, arch, skeleton_file.ldm_states)
        return pipe, arch, "files"

    def to(self, actx: AdapterContext, loaded: Loaded, device: str) -> None:
        ckpt: LoadedCheckpoint = loaded.handle
        if device == "cpu":
            policy = "gpu"  # "everything on the device", the device being the CPU
        elif not loaded.movable:
            policy = "gpu"
        else:
            policy = memory.choose_policy(actx.settings.get().memory_policy, device, ckpt.pipe)
        self.apply_policy(loaded, policy, device)

    def apply_policy(self, loaded: Loaded, policy: str, device: str) -> None:
        import torch

        ckpt: LoadedCheckpoint = loaded.handle
        memory.apply_policy(ckpt.pipe, policy, torch.device(device))
        ckpt.policy = policy
        if torch_compile.why_not(ckpt):  # the OOM retry's offload: hooks move weights mid-call, eager from here
            torch_compile.sync(ckpt, "off")
        loaded.device = device
        loaded.location_note = "" if policy == "gpu" else f" ({policy})"
        ckpt.location = loaded.location

    def prepare(self, actx: AdapterContext, loaded: Loaded) -> None:
        """The VAE the settings ask for and the embeddings on disk, applied to the pipeline."""
        from modules.models import extras

        ckpt: LoadedCheckpoint = loaded.handle
        settings = actx.settings.get()
        vae_before = ckpt.pipe.vae
        extras.sync_vae(actx.registry, ckpt, settings.sd_vae, actx.device.dtype)
        if ckpt.pipe.vae is not vae_before and ckpt.policy != "gpu":
            self.apply_policy(loaded, ckpt.policy, loaded.device)  # offload hooks are per module: hook the new VAE
        extras.sync_embeddings(actx.registry, ckpt)
        memory.configure_vae_tiling(ckpt.pipe, settings.vae_tiling_pixels)
        if ckpt.pipe.vae is not None:
            ckpt.pipe.vae.disable_slicing()  # a previous job's out-of-memory fallback ends with that job
        # Offload hooks own the weights' placement: under them the weights keep their memory format.
        speed.apply(ckpt.pipe, settings, actx.device.type, move_weights=ckpt.policy == "gpu")
        torch_compile.sync(ckpt, settings.compile_unet, actx.registry.paths.compile_cache)
        # Counting every tensor costs milliseconds a job: counted again only when what is loaded changed.
        counted_for = (tuple(map(id, memory.modules_of(ckpt.pipe))), len(ckpt.embeddings), tuple(ckpt.loras.order))
        if counted_for != ckpt.footprint_of:
            loaded.footprint = ckpt.footprint = memory.footprint_bytes(ckpt.pipe)
            ckpt.footprint_of = counted_for

    def release(self, actx: AdapterContext, loaded: Loaded) -> None:
        ckpt: LoadedCheckpoint = loaded.handle
        if getattr(ckpt.pipe, "remove_all_hooks", None) is not None:  # offload hooks hold references
            ckpt.pipe.remove_all_hooks()
        ckpt._modes.clear()

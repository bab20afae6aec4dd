"""Tell a model's architecture from its keys (a key table, as diffusers' single-file loader does).

Only the safetensors header is read (names, shapes, metadata), never the tensors, so a scan of
a folder of multi-GB files stays fast.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from modules.errors import ModelLoadError

# The text encoder's width tells SD1 (CLIP-L 768), SD2 (OpenCLIP-H 1024) and SDXL (2048 cross-attention) apart.
_CONTEXT_DIMS = {768: "sd1", 1024: "sd2", 2048: "sdxl"}
# The flow-matching transformers (modules/diffusion/flow.py), by the txt2img pipeline class their folder names.
FLOW_PIPELINES = {"FluxPipeline": "flux", "StableDiffusion3Pipeline": "sd3"}


@dataclass
class Header:
    keys: list[str]
    metadata: dict = field(default_factory=dict)
    shapes: dict = field(default_factory=dict)  # filled for the few keys asked about

    def shape(self, key: str) -> list[int] | None:
        return self.shapes.get(key)


def read_header(path: Path, want_shapes=lambda key: False) -> Header:
    """The key names, the __metadata__ and the shapes of the keys `want_shapes` picks."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            keys = list(f.keys())
            shapes = {k: list(f.get_slice(k).get_shape()) for k in keys if want_shapes(k)}
            return Header(keys=keys, metadata=dict(f.metadata() or {}), shapes=shapes)
    except Exception as exc:  # truncated, not safetensors at all, a bad header
        raise ModelLoadError(f"{Path(path).name}: not a readable .safetensors file ({type(exc).__name__}: "
                             f"{str(exc)[:200]}); download it again", "file") from None


@dataclass
class CheckpointKind:
    arch: str  # sd1, sd2, sdxl, flux, sd3
    inpaint: bool = False
    refiner: bool = False
    variant: str = ""  # flux / sd3: flux-dev, flux-schnell, sd3, sd35_medium, sd35_large (diffusers' names)
    layout: str = ""  # flux / sd3: "bfl" (BFL / SAI / ComfyUI key names) or "diffusers"
    prequantized: bool = False  # Forge's bitsandbytes nf4 file: packed weights + their quant state (bnb_nf4.py)

    @property
    def hub_key(self) -> str:
        """The key of diffusers' DIFFUSERS_DEFAULT_PIPELINE_PATHS for this kind (its config repo)."""
        if self.variant:
            return self.variant
        if self.arch == "sdxl":
            return "xl_refiner" if self.refiner else ("xl_inpaint" if self.inpaint else "xl_base")
        if self.arch == "sd2":
            return "inpainting_v2" if self.inpaint else "v2"
        return "inpainting" if self.inpaint else "v1"


def _is_shape_key(key: str) -> bool:
    return key.endswith("input_blocks.0.0.weight") or (key.endswith("attn2.to_k.weight") and "diffusion_model" in key)


def checkpoint_kind(path: Path) -> CheckpointKind:
    """SD1 / SD2 / SDXL (base, refiner, inpaint) of an A1111-style single .safetensors file."""
    header = read_header(path, _is_shape_key)
    return kind_from_keys(header.keys, header.shapes)


_DIFFUSION_PREFIX = "model.diffusion_model."
BNB_NF4_STATE = ".quant_state.bitsandbytes__nf4"  # bitsandbytes' packed quant state of one nf4 weight


def flow_kind_from_keys(keys) -> CheckpointKind | None:
    """Flux / SD3 of a transformer file, by its top-level key names (BFL / SAI as Forge and ComfyUI keep
    them, or diffusers'; with or without `model.diffusion_model.`), and whether its weights are Forge's
    pre-quantized bitsandbytes nf4; None for anything else."""
    kind = _flow_kind(keys)
    if kind is not None and any(k.endswith(BNB_NF4_STATE) for k in keys):
        kind.prequantized = True
    return kind


def _flow_kind(keys) -> CheckpointKind | None:
    names = {k[len(_DIFFUSION_PREFIX):] if k.startswith(_DIFFUSION_PREFIX) else k for k in keys}
    tops = {n.split(".", 1)[0] for n in names}
    if {"double_blocks", "single_blocks"} <= tops:  # BFL: guidance_in is Flux-dev's distilled guidance
        return CheckpointKind("flux", variant="flux-dev" if "guidance_in" in tops else "flux-schnell", layout="bfl")
    if {"transformer_blocks", "single_transformer_blocks"} <= tops:
        guided = any(n.startswith("time_text_embed.guidance_embedder.") for n in names)
        return CheckpointKind("flux", variant="flux-dev" if guided else "flux-schnell", layout="diffusers")
    if "joint_blocks" in tops:
        return CheckpointKind("sd3", variant=_sd3_variant(names, "joint_blocks", ".x_block.attn2."), layout="bfl")
    if {"transformer_blocks", "context_embedder", "pos_embed"} <= tops:
        return CheckpointKind("sd3", variant=_sd3_variant(names, "transformer_blocks", ".attn2."), layout="diffusers")
    return None


def _sd3_variant(names: set, blocks: str, attn2: str) -> str:
    """SD3 Medium (24 joint blocks), SD3.5 Medium (its dual attention, attn2), SD3.5 Large (38 blocks)."""
    count = 1 + max(int(n.split(".")[1]) for n in names if n.startswith(blocks + "."))
    if count >= 38:
        return "sd35_large"
    return "sd35_medium" if any(attn2 in n for n in names) else "sd3"


def kind_from_keys(keys, shapes: dict) -> CheckpointKind:
    flow = flow_kind_from_keys(keys)
    if flow is not None:
        return flow
    keyset = set(keys)
    if not any(k.startswith("model.diffusion_model.") for k in keyset):
        raise ModelLoadError("has no Stable Diffusion UNet (no model.diffusion_model.* keys): it is not a "
                             "checkpoint — a LoRA, VAE or embedding belongs in its own models/ folder", "file")
    in_shape = shapes.get("model.diffusion_model.input_blocks.0.0.weight") or [0, 4]
    inpaint = len(in_shape) > 1 and in_shape[1] == 9
    if any(k.startswith("conditioner.embedders.1.") for k in keyset):
        return CheckpointKind("sdxl", inpaint=inpaint)
    if any(k.startswith("conditioner.embedders.0.model.") for k in keyset):
        return CheckpointKind("sdxl", refiner=True)
    if any(k.startswith("cond_stage_model.model.") for k in keyset):
        return CheckpointKind("sd2", inpaint=inpaint)
    if any(k.startswith("cond_stage_model.transformer.") for k in keyset):
        return CheckpointKind("sd1", inpaint=inpaint)
    for key, shape in shapes.items():  # a UNet-only file: the cross-attention width decides
        if key.endswith("attn2.to_k.weight") and len(shape) == 2 and shape[1] in _CONTEXT_DIMS:
            return CheckpointKind(_CONTEXT_DIMS[shape[1]], inpaint=inpaint)
    return CheckpointKind("sd1", inpaint=inpaint)


def folder_arch(folder: Path) -> str | None:
    """SD1 / SD2 / SDXL / SD3 / Flux of a diffusers folder, from model_index.json and the UNet's config."""
    try:
        index = json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
        cls = str(index.get("_class_name", ""))
        if cls in FLOW_PIPELINES:
            return FLOW_PIPELINES[cls]
        if "XL" in cls:
            return "sdxl"
        unet = json.loads((folder / "unet" / "config.json").read_text(encoding="utf-8"))
        return _CONTEXT_DIMS.get(int(unet.get("cross_attention_dim") or 0), "sd1")
    except (OSError, ValueError, TypeError):
        return None


def _lora_shape_key(key: str) -> bool:
    down = "lora_down" in key or "lora_A" in key or "lora.down" in key
    return down and (("attn2" in key and "to_k" in key) or key.startswith(_DIFFUSERS_JOINT_Q))


# Flux / SD3 LoRA key names: BFL and kohya (sd-scripts) layouts are Flux's or SD3's alone; diffusers' layout
# names the joint blocks alike for both, so there the width of the first block's to_q tells (Flux 3072; SD3
# Medium 1536, SD3.5 Large 2432).
_FLUX_KEYS = ("lora_unet_double_blocks_", "lora_unet_single_blocks_", "double_blocks.", "single_blocks.",
              "diffusion_model.double_blocks.", "transformer.single_transformer_blocks.",
              "lora_transformer_single_transformer_blocks_")
_SD3_KEYS = ("lora_unet_joint_blocks_", "joint_blocks.", "diffusion_model.joint_blocks.")
_DIFFUSERS_JOINT_Q = "transformer.transformer_blocks.0.attn.to_q."
_FLOW_WIDTHS = {3072: "flux", 1536: "sd3", 2432: "sd3"}


def _flow_lora_arch(keys, shapes: dict) -> str | None:
    if any(k.startswith(_FLUX_KEYS) for k in keys):
        return "flux"
    if any(k.startswith(_SD3_KEYS) for k in keys):
        return "sd3"
    for key, shape in shapes.items():
        if key.startswith(_DIFFUSERS_JOINT_Q) and len(shape) == 2 and shape[1] in _FLOW_WIDTHS:
            return _FLOW_WIDTHS[shape[1]]
    return None


def lora_arch(path: Path) -> str | None:
    """The base architecture a LoRA was trained for: `ss_base_model_version`, else its key names."""
    header = read_header(path, _lora_shape_key)
    version = str(header.metadata.get("ss_base_model_version", "")).lower()
    if version.startswith("sdxl"):
        return "sdxl"
    if version.startswith(("sd_v1", "sd_1")):
        return "sd1"
    if version.startswith(("sd_v2", "sd_2")):
        return "sd2"
    if version.startswith("flux"):  # sd-scripts' "flux1"
        return "flux"
    if version.startswith("sd3"):
        return "sd3"
    keys = header.keys
    flow = _flow_lora_arch(keys, header.shapes)
    if flow:
        return flow
    if any(k.startswith(("lora_te1_", "lora_te2_", "text_encoder_2.")) for k in keys):
        return "sdxl"
    for shape in header.shapes.values():
        if len(shape) == 2 and shape[1] in _CONTEXT_DIMS:
            return _CONTEXT_DIMS[shape[1]]
    return None  # a tiny or unusual LoRA: no claim, loading will tell whether its keys match

"""Per-model load options (dtype, bitsandbytes 8-bit / 4-bit, T5 storage) and applying them.

On CUDA the UNet is loaded through diffusers' own `BitsAndBytesConfig` (see loaders.py). That
config refuses the CPU ("A GPU is needed for quantization"), while bitsandbytes' layers run
there; so on the CPU the UNet's nn.Linear layers are swapped for `bnb.nn.Linear4bit` /
`Linear8bitLt` holding the same weights, quantized as they are placed.
"""
from __future__ import annotations

import json
import logging
import threading
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from modules import atomic
from modules.devices import device_type
from modules.errors import InvalidRequest

log = logging.getLogger("atelier.models")

_DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


class LoadOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    dtype: Literal["auto", "fp32", "fp16", "bf16"] = "auto"
    quantization: Literal["none", "int8", "nf4", "fp4"] = "none"
    double_quant: bool = False  # 4-bit only: quantize the quantization constants too
    t5: Literal["none", "int8", "fp8"] = "none"  # Flux / SD3's T5 text encoder (t5_storage.py)
    # Forge's forge_additional_modules: the VAE / text encoder files a transformer-only Flux / SD3 file takes
    modules: tuple[str, ...] = Field((), max_length=8)

    def torch_dtype(self, default):
        import torch

        return default if self.dtype == "auto" else getattr(torch, _DTYPES[self.dtype])

    def label(self) -> str | None:
        """How the infotext and the Models tab name it: None, "int8", "nf4", "nf4 double quant"."""
        if self.quantization == "none":
            return None
        return self.quantization + (" double quant" if self.double_quant and self.quantization != "int8" else "")

    def diffusers_config(self, compute_dtype):
        """diffusers' BitsAndBytesConfig for the UNet (CUDA only)."""
        from diffusers import BitsAndBytesConfig

        if self.quantization == "int8":
            return BitsAndBytesConfig(load_in_8bit=True)
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=self.quantization,
                                  bnb_4bit_use_double_quant=self.double_quant, bnb_4bit_compute_dtype=compute_dtype)


    def transformers_config(self, compute_dtype):
        """transformers' BitsAndBytesConfig for LLM/VLM loads (runs on the CPU too); None when unquantized."""
        if self.quantization == "none":
            return None
        from transformers import BitsAndBytesConfig

        if self.quantization == "int8":
            return BitsAndBytesConfig(load_in_8bit=True)
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=self.quantization,
                                  bnb_4bit_use_double_quant=self.double_quant, bnb_4bit_compute_dtype=compute_dtype)


class OptionsStore:
    """Per-model load options, kept in the data dir's model-options.json (atomic writes)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._lock = threading.Lock()

    def _read(self) -> dict:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            return data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            return {}

    def get(self, name: str) -> LoadOptions:
        raw = self._read().get(name)
        try:
            return LoadOptions.model_validate(raw) if isinstance(raw, dict) else LoadOptions()
        except ValidationError:
            return LoadOptions()

    def set(self, name: str, options: LoadOptions | dict) -> LoadOptions:
        try:
            opts = options if isinstance(options, LoadOptions) else LoadOptions.model_validate(options)
        except ValidationError as exc:
            raise InvalidRequest.from_validation(exc, default="options") from None
        with self._lock:
            data = self._read()
            data[name] = opts.model_dump()
            atomic.write_json(self.path, data)
        return opts


def quantize_pipeline(pipe, opts: LoadOptions, device_name: str) -> str | None:
    """Quantize the denoiser (SD's UNet, Flux / SD3's transformer) on the CPU by swapping its Linear layers; on
    CUDA the loader already did. Returns the infotext's "Quantization" (a GGUF file's own type: "GGUF Q4_K")."""
    denoiser = pipe.components.get("unet") or pipe.components.get("transformer")
    if denoiser is None:
        return None
    gguf = gguf_label(denoiser)
    if gguf or opts.quantization == "none":
        return gguf
    if device_type(device_name) == "cuda":
        return opts.label() if getattr(denoiser, "is_quantized", False) or _has_bnb(denoiser) else None
    count = swap_linear_layers(denoiser, opts)
    log.info("quantized %d %s linear layers to %s on the CPU", count, type(denoiser).__name__, opts.label())
    return opts.label()


def gguf_label(module) -> str | None:
    """ "GGUF Q8_0" when the module's weights are diffusers' GGUFParameters (the most common type), else None."""
    from collections import Counter

    types = Counter(p.quant_type.name for p in module.parameters() if type(p).__name__ == "GGUFParameter")
    return "GGUF " + types.most_common(1)[0][0] if types else None


def _has_bnb(module) -> bool:
    return any(type(m).__module__.startswith("bitsandbytes") for m in module.modules())


def swap_linear_layers(module, opts: LoadOptions) -> int:
    """Replace every nn.Linear under `module` by a bitsandbytes layer with the same weights."""
    import bitsandbytes as bnb
    import torch

    count = 0
    for parent in list(module.modules()):
        for child_name, child in list(parent.named_children()):
            if type(child) is not torch.nn.Linear:
                continue
            weight = child.weight.data.to(torch.float32)
            bias = child.bias.data.clone() if child.bias is not None else None
            if opts.quantization == "int8":
                layer = bnb.nn.Linear8bitLt(child.in_features, child.out_features, bias=bias is not None,
                                            has_fp16_weights=False, device="cpu")
                layer.weight = bnb.nn.Int8Params(weight, requires_grad=False, has_fp16_weights=False)
            else:
                layer = bnb.nn.Linear4bit(child.in_features, child.out_features, bias=bias is not None,
                                          compute_dtype=child.weight.dtype, quant_type=opts.quantization,
                                          compress_statistics=opts.double_quant, device="cpu")
                layer.weight = bnb.nn.Params4bit(weight.to(child.weight.dtype), requires_grad=False,
                                                 quant_type=opts.quantization, compress_statistics=opts.double_quant)
            if bias is not None:
                layer.bias = torch.nn.Parameter(bias, requires_grad=False)
            setattr(parent, child_name, layer.to("cpu"))  # placing it quantizes the weight
            count += 1
    return count

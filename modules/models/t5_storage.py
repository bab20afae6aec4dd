"""The T5 text encoder of a Flux / SD3 checkpoint in fewer bytes: the load option `t5`.

- "int8": bitsandbytes' Linear8bitLt by the same layer swap as the CPU's int8 transformer (quant.py).
- "fp8": weights stored as float8_e4m3fn and upcast to the compute dtype one layer at a time as it runs
  (diffusers' layerwise casting hooks), as Forge / ComfyUI keep T5-XXL in fp8.
- A T5 file that is fp8 already (ComfyUI's t5xxl_fp8_e4m3fn.safetensors) keeps its fp8 storage: its tensors are
  assigned into an empty model as they are (`load_fp8_encoder`), never upcast as a whole.

T5's feed-forward casts its activations to `wo`'s dtype before `wo` runs (transformers' T5DenseActDense), so a
feed-forward block is cast as one module (all its weights up before its forward), attention layer by layer.
"""
from __future__ import annotations

import logging

from modules.devices import device_type
from modules.errors import InvalidRequest

log = logging.getLogger("atelier.models")
FIELD = "t5"
STORAGE = "float8_e4m3fn"
# Which pipeline slot holds T5, per architecture (models/flow_files.py's ROLES).
SLOTS = {"flux": "text_encoder_2", "sd3": "text_encoder_3"}
_FP8_DTYPES = ("float8_e4m3fn", "float8_e5m2")
# Devices each option runs on: bitsandbytes' int8 layer swap is tested on the CPU only (on CUDA the transformer
# is quantized by diffusers' config at load; the same for T5 is not built yet); float8 tensors have no MPS kernels.
_DEVICES = {"int8": ("cpu",), "fp8": ("cpu", "cuda")}


def check(options, arch: str | None, device_name: str) -> None:
    """Refuse, by the field `t5`, what this checkpoint or device cannot do (before anything is read)."""
    wanted = options.t5
    if wanted == "none":
        return
    if arch is not None and arch not in SLOTS:
        raise InvalidRequest(f"t5 {wanted}: this {arch.upper()} checkpoint has no T5 text encoder (Flux and SD3 "
                             "have); load it with t5 none", FIELD)
    kind = device_type(device_name)
    if kind not in _DEVICES[wanted]:
        others = [o for o, devices in _DEVICES.items() if kind in devices]
        hint = f"use t5 {others[0]}" if others else "use t5 none"
        raise InvalidRequest(f"t5 {wanted} is not available on {kind} ({hint})", FIELD)


def apply(pipe, arch: str, options, device_name: str) -> str | None:
    """Put the pipeline's T5 in the storage `options.t5` asks for; returns what it is stored as now
    ("int8", "fp8", or None for the compute dtype)."""
    check(options, arch, device_name)
    encoder = pipe.components.get(SLOTS.get(arch, ""))
    if encoder is None:
        if options.t5 != "none":
            raise InvalidRequest(f"t5 {options.t5}: this checkpoint was loaded without a T5 text encoder", FIELD)
        return None
    return store(encoder, options.t5)


def store(encoder, wanted: str) -> str | None:
    """One T5 encoder in the storage `wanted` ("none", "int8", "fp8"); returns what it is stored as now."""
    if is_fp8(encoder):
        return "fp8"  # a file already in fp8 (or loaded so before): nothing to do
    if wanted == "int8":
        from modules.models import quant

        count = quant.swap_linear_layers(encoder, quant.LoadOptions(quantization="int8"))
        log.info("T5: %d linear layers in int8", count)
        return "int8"
    if wanted == "fp8":
        store_fp8(encoder, _compute_dtype(encoder))
        return "fp8"
    return None


def _compute_dtype(encoder):
    import torch

    floats = [p.dtype for p in encoder.parameters() if p.dtype.is_floating_point and p.dtype.itemsize > 1]
    return floats[0] if floats else torch.float32


def is_fp8(module) -> bool:
    return any(str(p.dtype).removeprefix("torch.") in _FP8_DTYPES for p in module.parameters())


def _cast_units(model):
    """What one casting hook covers: each feed-forward block whole, each other Linear alone."""
    import torch
    from transformers.models.t5.modeling_t5 import T5DenseActDense, T5DenseGatedActDense

    dense = [m for m in model.modules() if isinstance(m, (T5DenseActDense, T5DenseGatedActDense))]
    inside = {id(sub) for m in dense for sub in m.modules()}
    return dense + [m for m in model.modules() if type(m) is torch.nn.Linear and id(m) not in inside]


def store_fp8(model, compute_dtype) -> None:
    """fp8 storage for T5's linear weights, upcast per unit as it runs; embeddings and norms stay in
    `compute_dtype` (a fraction of the weights, and where fp8 would cost the most)."""
    import torch
    from diffusers.hooks import apply_layerwise_casting

    units = _cast_units(model)
    cast = {id(p) for unit in units for p in unit.parameters()}
    for param in model.parameters():
        if id(param) not in cast and param.dtype != compute_dtype:
            param.data = param.data.to(compute_dtype)
    storage = getattr(torch, STORAGE)
    for unit in units:
        # skip pattern None: the hook goes on the unit itself, not on its leaf layers
        apply_layerwise_casting(unit, storage_dtype=storage, compute_dtype=compute_dtype, skip_modules_pattern=None)


def state_is_fp8(state: dict) -> bool:
    return any(str(t.dtype).removeprefix("torch.") in _FP8_DTYPES for t in state.values())


def load_fp8_encoder(cls, config, state: dict, compute_dtype):
    """A T5 encoder whose file is fp8 already: the tensors assigned as they are into an empty model (no upcast
    copy of the whole), then the linear weights kept fp8 under casting hooks (store_fp8)."""
    from accelerate import init_empty_weights

    with init_empty_weights():
        model = cls(config)
    tied = {"encoder.embed_tokens.weight"}  # tied to shared.weight; files often carry only one of the two
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    missing = [k for k in missing if k not in tied]
    if missing or unexpected:
        raise ValueError(f"keys missing {missing[:3]}, unexpected {unexpected[:3]}")
    model.tie_weights()
    store_fp8(model, compute_dtype)
    return model.eval()

"""A rank-16 kohya-format LoRA for the SD1.5 architecture, as AUTOMATIC1111 users download them.

Keys follow kohya sd-scripts (`lora_unet_<module>.lora_down/.lora_up/.alpha`, `lora_te_…`) on
every attention and feed-forward Linear of the UNet's transformer blocks and of the text
encoder. Shapes are read from the checkpoint's own safetensors headers (no weights loaded);
the values are small random numbers, so the LoRA visibly changes the image.
"""
from __future__ import annotations

from pathlib import Path

RANK = 16
_UNET_LINEARS = ("attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0",
                 "attn2.to_q", "attn2.to_k", "attn2.to_v", "attn2.to_out.0", "ff.net.0.proj", "ff.net.2")
_TE_LINEARS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj", "mlp.fc1", "mlp.fc2")


def _linear_shapes(weights: Path, suffixes: tuple[str, ...]) -> dict[str, tuple[int, int]]:
    from safetensors import safe_open

    shapes = {}
    with safe_open(str(weights), framework="pt") as f:
        for key in f.keys():
            module = key[: -len(".weight")] if key.endswith(".weight") else None
            if module and module.endswith(suffixes):
                shape = f.get_slice(key).get_shape()
                if len(shape) == 2:
                    shapes[module] = (shape[0], shape[1])
    return shapes


def ensure_lora(checkpoint: Path, out: Path, rank: int = RANK, seed: int = 0) -> Path:
    if out.exists():
        return out
    import torch
    from safetensors.torch import save_file

    gen = torch.Generator().manual_seed(seed)
    tensors = {}
    parts = (("lora_unet_", checkpoint / "unet" / "diffusion_pytorch_model.safetensors", _UNET_LINEARS),
             ("lora_te_", checkpoint / "text_encoder" / "model.safetensors", _TE_LINEARS))
    for prefix, weights, suffixes in parts:
        for module, (n_out, n_in) in _linear_shapes(weights, suffixes).items():
            module = module.removeprefix("text_model.")
            name = prefix + ("text_model_" if prefix == "lora_te_" else "") + module.replace(".", "_")
            tensors[f"{name}.lora_down.weight"] = torch.randn(rank, n_in, generator=gen) * 0.02
            tensors[f"{name}.lora_up.weight"] = torch.randn(n_out, rank, generator=gen) * 0.02
            tensors[f"{name}.alpha"] = torch.tensor(float(rank))
    if not tensors:
        raise RuntimeError(f"no Linear layers found in {checkpoint} to build a LoRA for")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name("." + out.name + ".tmp")
    save_file(tensors, str(tmp), metadata={"ss_network_dim": str(rank), "ss_network_alpha": str(rank),
                                           "ss_base_model_version": "sd_v1", "ss_network_module": "networks.lora"})
    tmp.rename(out)
    return out

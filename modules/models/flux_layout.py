"""Flux.1 transformer key names: BFL's (the layout of the files Forge and ComfyUI users download, GGUF ones
included) ↔ diffusers' FluxTransformer2DModel, as one table used both ways.

Hand-written because diffusers' `convert_flux_transformer_checkpoint_to_diffusers` fixes Flux.1's width
(3072) in its splits; this one reads the widths from the tensors, so the tiny demo transformer and any
size convert alike (tests/unit/test_flow_files.py checks it against diffusers' on a 3072-wide layout).
Only row-wise operations (rename, split and concatenate along dim 0), so GGUF's quantized tensors, stored
row by row, convert without being dequantized.
"""
from __future__ import annotations

# (diffusers name, BFL name) inside one block, and at the top level.
_DOUBLE = (
    ("norm1.linear", "img_mod.lin"), ("norm1_context.linear", "txt_mod.lin"),
    ("attn.norm_q.weight", "img_attn.norm.query_norm.scale"), ("attn.norm_k.weight", "img_attn.norm.key_norm.scale"),
    ("attn.norm_added_q.weight", "txt_attn.norm.query_norm.scale"),
    ("attn.norm_added_k.weight", "txt_attn.norm.key_norm.scale"),
    ("ff.net.0.proj", "img_mlp.0"), ("ff.net.2", "img_mlp.2"),
    ("ff_context.net.0.proj", "txt_mlp.0"), ("ff_context.net.2", "txt_mlp.2"),
    ("attn.to_out.0", "img_attn.proj"), ("attn.to_add_out", "txt_attn.proj"),
)
_SINGLE = (
    ("norm.linear", "modulation.lin"), ("attn.norm_q.weight", "norm.query_norm.scale"),
    ("attn.norm_k.weight", "norm.key_norm.scale"), ("proj_out", "linear2"),
)
_TOP = (
    ("time_text_embed.timestep_embedder.linear_1", "time_in.in_layer"),
    ("time_text_embed.timestep_embedder.linear_2", "time_in.out_layer"),
    ("time_text_embed.text_embedder.linear_1", "vector_in.in_layer"),
    ("time_text_embed.text_embedder.linear_2", "vector_in.out_layer"),
    ("time_text_embed.guidance_embedder.linear_1", "guidance_in.in_layer"),
    ("time_text_embed.guidance_embedder.linear_2", "guidance_in.out_layer"),
    ("context_embedder", "txt_in"), ("x_embedder", "img_in"), ("proj_out", "final_layer.linear"),
)
# Fused in BFL, separate in diffusers (concatenated along the output rows, in this order).
_DOUBLE_FUSED = (("img_attn.qkv", ("attn.to_q", "attn.to_k", "attn.to_v")),
                 ("txt_attn.qkv", ("attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj")))
_SINGLE_FUSED = (("linear1", ("attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp")),)
# BFL's final modulation is (shift, scale); diffusers' AdaLayerNormContinuous takes (scale, shift).
_SWAPPED = ("norm_out.linear", "final_layer.adaLN_modulation.1")
_PREFIX = "model.diffusion_model."


def _renames(count_double: int, count_single: int):
    """(diffusers name, BFL name) of every plain tensor, without the .weight / .bias ending where both have one."""
    yield from _TOP
    for i in range(count_double):
        yield from ((f"transformer_blocks.{i}.{d}", f"double_blocks.{i}.{b}") for d, b in _DOUBLE)
    for i in range(count_single):
        yield from ((f"single_transformer_blocks.{i}.{d}", f"single_blocks.{i}.{b}") for d, b in _SINGLE)


def _count(names, prefix: str) -> int:
    found = {int(n[len(prefix):].split(".", 1)[0]) for n in names if n.startswith(prefix)}
    return max(found) + 1 if found else 0


def _endings(name: str) -> tuple[str, ...]:
    return ("",) if name.endswith((".weight", ".scale")) else (".weight", ".bias")


def _swap_halves(tensor):
    import torch

    first, second = torch.chunk(tensor, 2, dim=0)
    return torch.cat([second, first], dim=0)


def to_diffusers(state: dict) -> dict:
    """A BFL-layout Flux transformer state dict (with or without `model.diffusion_model.`) in diffusers' names."""
    import torch

    bfl = {k[len(_PREFIX):] if k.startswith(_PREFIX) else k: v for k, v in state.items()}
    doubles, singles = _count(bfl, "double_blocks."), _count(bfl, "single_blocks.")
    out = {}
    for d, b in _renames(doubles, singles):
        for end in _endings(d):
            if b + end in bfl:
                out[d + end] = bfl.pop(b + end)
    for blocks, count, fused in (("double_blocks", doubles, _DOUBLE_FUSED), ("single_blocks", singles, _SINGLE_FUSED)):
        target = "transformer_blocks" if blocks == "double_blocks" else "single_transformer_blocks"
        for i in range(count):
            for b, parts in fused:
                for end in (".weight", ".bias"):
                    tensor = bfl.pop(f"{blocks}.{i}.{b}{end}")
                    width = _row_width(out, target, i, tensor, len(parts))
                    sizes = [width] * 3 + ([tensor.shape[0] - 3 * width] if len(parts) == 4 else [])
                    for part, piece in zip(parts, torch.split(tensor, sizes, dim=0)):
                        out[f"{target}.{i}.{part}{end}"] = piece
    for end in (".weight", ".bias"):
        out[_SWAPPED[0] + end] = _swap_halves(bfl.pop(_SWAPPED[1] + end))
    if bfl:
        raise KeyError(f"tensors this Flux layout does not have: {', '.join(sorted(bfl)[:8])}")
    return out


def _row_width(out: dict, target: str, i: int, tensor, parts: int) -> int:
    """The attention width of one fused tensor: a third of qkv; for linear1, linear2's output rows (renamed
    to proj_out by then)."""
    if parts == 3:
        return tensor.shape[0] // 3
    return out[f"{target}.{i}.proj_out.weight"].shape[0]


def to_bfl(state: dict) -> dict:
    """diffusers' Flux transformer state dict in BFL's names (the demo's single files are made with it)."""
    import torch

    src = dict(state)
    doubles, singles = _count(src, "transformer_blocks."), _count(src, "single_transformer_blocks.")
    out = {}
    for d, b in _renames(doubles, singles):
        for end in _endings(d):
            if d + end in src:
                out[b + end] = src.pop(d + end)
    for blocks, target, count, fused in (("double_blocks", "transformer_blocks", doubles, _DOUBLE_FUSED),
                                         ("single_blocks", "single_transformer_blocks", singles, _SINGLE_FUSED)):
        for i in range(count):
            for b, parts in fused:
                for end in (".weight", ".bias"):
                    out[f"{blocks}.{i}.{b}{end}"] = torch.cat([src.pop(f"{target}.{i}.{p}{end}") for p in parts])
    for end in (".weight", ".bias"):
        out[_SWAPPED[1] + end] = _swap_halves(src.pop(_SWAPPED[0] + end))
    if src:
        raise KeyError(f"tensors the BFL layout has no name for: {', '.join(sorted(src)[:8])}")
    return out

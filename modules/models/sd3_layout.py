"""SD3 / SD3.5 transformer key names: diffusers' SD3Transformer2DModel → SAI's MMDiT (`joint_blocks.N.x_block…`,
the layout of the single files SAI ships and ComfyUI / Forge read).

Loading goes the other way through diffusers' own `convert_sd3_transformer_checkpoint_to_diffusers` (it reads
every width from the tensors); this is its inverse, for the demo's SAI-layout files, checked against it in
tests/unit/test_flow_files_sd3.py (to_sai, then diffusers' converter, gives the state back exactly).
"""
from __future__ import annotations

# (diffusers name inside transformer_blocks.N, SAI name inside joint_blocks.N), .weight / .bias both
_BLOCK = (
    ("attn.to_out.0", "x_block.attn.proj"), ("attn.to_add_out", "context_block.attn.proj"),
    ("attn2.to_out.0", "x_block.attn2.proj"),
    ("norm1.linear", "x_block.adaLN_modulation.1"), ("norm1_context.linear", "context_block.adaLN_modulation.1"),
    ("ff.net.0.proj", "x_block.mlp.fc1"), ("ff.net.2", "x_block.mlp.fc2"),
    ("ff_context.net.0.proj", "context_block.mlp.fc1"), ("ff_context.net.2", "context_block.mlp.fc2"),
    ("attn.norm_q", "x_block.attn.ln_q"), ("attn.norm_k", "x_block.attn.ln_k"),
    ("attn.norm_added_q", "context_block.attn.ln_q"), ("attn.norm_added_k", "context_block.attn.ln_k"),
    ("attn2.norm_q", "x_block.attn2.ln_q"), ("attn2.norm_k", "x_block.attn2.ln_k"),
)
_FUSED = (("attn", ("to_q", "to_k", "to_v"), "x_block.attn.qkv"),
          ("attn", ("add_q_proj", "add_k_proj", "add_v_proj"), "context_block.attn.qkv"),
          ("attn2", ("to_q", "to_k", "to_v"), "x_block.attn2.qkv"))
_TOP = (
    ("pos_embed.proj", "x_embedder.proj"), ("context_embedder", "context_embedder"),
    ("time_text_embed.timestep_embedder.linear_1", "t_embedder.mlp.0"),
    ("time_text_embed.timestep_embedder.linear_2", "t_embedder.mlp.2"),
    ("time_text_embed.text_embedder.linear_1", "y_embedder.mlp.0"),
    ("time_text_embed.text_embedder.linear_2", "y_embedder.mlp.2"),
    ("proj_out", "final_layer.linear"), ("norm_out.linear", "final_layer.adaLN_modulation.1"),
)
# (shift, scale) in SAI, (scale, shift) in diffusers' AdaLayerNormContinuous: the final norm and the last
# block's context norm (that block's context stream ends there).
_SWAPPED_TOP = "norm_out.linear"


def _swap_halves(tensor):
    import torch

    first, second = torch.chunk(tensor, 2, dim=0)
    return torch.cat([second, first], dim=0)


def to_sai(state: dict) -> dict:
    """diffusers' SD3 transformer state dict in SAI's names (no `model.diffusion_model.` prefix)."""
    import torch

    src = dict(state)
    blocks = 1 + max(int(k.split(".")[1]) for k in src if k.startswith("transformer_blocks."))
    out = {"pos_embed": src.pop("pos_embed.pos_embed")}
    for d, s in _TOP:
        for end in (".weight", ".bias"):
            if d + end in src:
                tensor = src.pop(d + end)
                out[s + end] = _swap_halves(tensor) if d == _SWAPPED_TOP else tensor
    for i in range(blocks):
        ours, theirs = f"transformer_blocks.{i}.", f"joint_blocks.{i}."
        for end in (".weight", ".bias"):
            for attn, parts, fused in _FUSED:
                names = [f"{ours}{attn}.{p}{end}" for p in parts]
                if names[0] in src:
                    out[theirs + fused + end] = torch.cat([src.pop(n) for n in names])
            for d, s in _BLOCK:
                if ours + d + end in src:
                    tensor = src.pop(ours + d + end)
                    last_context = i == blocks - 1 and d == "norm1_context.linear"
                    out[theirs + s + end] = _swap_halves(tensor) if last_context else tensor
    if src:
        raise KeyError(f"tensors the SAI layout has no name for: {', '.join(sorted(src)[:8])}")
    return out

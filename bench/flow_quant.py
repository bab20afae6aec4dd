"""Figures: the Flux transformer's footprint in memory when loaded quantized through Atelier's loader
(modules/models/flow_files.py) — GGUF Q8_0 / Q5_K / Q4_K files, bitsandbytes int8 / nf4 (the CPU layer swap) —
as a ratio to the same weights in bf16 (2 bytes a parameter); and the T5 text encoder's with the load option
t5 (modules/models/t5_storage.py: fp8 storage, int8 layer swap), on a T5 of T5-XXL's proportions (gated
feed-forward 2.5x as wide, the embedding ~3 % of the weights; 512 wide, 4 layers), kept in fp32 beside it.

The transformer is the demo factory's Flux layout made 512 wide (4 heads of 128; --quick: 256), so its layers
fit GGUF's 256-value K-quant blocks; norms, biases and the small embeddings stay F32, as in city96's files,
so the ratios of a real 12 B Flux (almost all of it in large Linear layers) are lower still.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

from bench.common import Figure

TITLE = "Flux transformer footprint, {name} / bf16 (same weights, loaded by Atelier)"
T5_TITLE = "T5 encoder footprint, t5 {name} / bf16 (T5-XXL's proportions, its embedding and norms in fp32)"


def _t5():
    import torch
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(0)
    config = T5Config(vocab_size=1024, d_model=512, d_ff=1280, d_kv=64, num_heads=8, num_layers=4,
                      feed_forward_proj="gated-gelu", is_encoder_decoder=False)
    return T5EncoderModel(config).eval()


def _t5_figures(device: str, log) -> list[Figure]:
    import torch

    from modules.models import memory, t5_storage
    from modules.models.quant import LoadOptions

    bf16 = 2 * sum(p.numel() for p in _t5().parameters())
    figures = []
    for name in ("fp8", "int8"):
        if device != "cpu" and name == "int8":
            figures.append(Figure.missing("t5_footprint_int8", T5_TITLE.format(name=name), "the CPU layer swap only"))
            continue
        t5_storage.check(LoadOptions(t5=name), "flux", device)
        model = _t5()
        t5_storage.store(model, name)
        assert model.shared.weight.dtype == torch.float32
        ratio = memory.footprint_bytes_module(model) / bf16
        log(f"flow_quant: T5 {name} {ratio:.3f} of bf16")
        figures.append(Figure.from_samples(f"t5_footprint_{name}", T5_TITLE.format(name=name), [ratio],
                                           target="< 1 (reported)", ok=lambda r: r < 1))
    return figures


def _transformer(width_heads: int):
    import torch
    from diffusers import FluxTransformer2DModel

    torch.manual_seed(0)
    return FluxTransformer2DModel(patch_size=1, in_channels=64, num_layers=2, num_single_layers=2,
                                  attention_head_dim=128, num_attention_heads=width_heads, joint_attention_dim=256,
                                  pooled_projection_dim=256, axes_dims_rope=(32, 32, 64), guidance_embeds=True).eval()


def run(device: str, quick: bool, log) -> list[Figure]:
    import torch

    from modules.models import detect, flow_files, flux_layout, memory, quant
    from modules.models.demo_flow import save_gguf
    from modules.models.registry import ModelEntry

    model = _transformer(2 if quick else 4)
    bf16 = 2 * sum(p.numel() for p in model.parameters())
    bfl = flux_layout.to_bfl(model.state_dict())
    figures = []
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "config"
        model.save_config(str(config / "transformer"))
        kind = detect.CheckpointKind("flux", variant="flux-dev", layout="bfl")
        for qtype in ("Q8_0", "Q5_K", "Q4_K"):
            path = save_gguf(Path(tmp) / f"flux-{qtype}.gguf", bfl, qtype)
            entry = ModelEntry(kind="checkpoint", name=path.name, path=path, format="gguf", size=path.stat().st_size)
            loaded = flow_files.load_transformer(entry, kind, config, flow_files.read_state(entry), torch.float32,
                                                 None, device)
            ratio = memory.footprint_bytes_module(loaded) / bf16
            log(f"flow_quant: GGUF {qtype} {ratio:.3f} of bf16")
            figures.append(Figure.from_samples(f"flux_footprint_gguf_{qtype.lower()}", TITLE.format(name=f"GGUF {qtype}"),
                                               [ratio], target="< 1 (reported)", ok=lambda r: r < 1))
        for quantization in ("int8", "nf4"):
            if device != "cpu":
                figures.append(Figure.missing(f"flux_footprint_{quantization}", TITLE.format(name=quantization),
                                              "the CPU layer swap only; CUDA loads through diffusers' config"))
                continue
            swapped = _transformer(2 if quick else 4)
            quant.swap_linear_layers(swapped, quant.LoadOptions(quantization=quantization))
            ratio = memory.footprint_bytes_module(swapped) / bf16
            log(f"flow_quant: {quantization} {ratio:.3f} of bf16")
            figures.append(Figure.from_samples(f"flux_footprint_{quantization}", TITLE.format(name=quantization),
                                               [ratio], target="< 1 (reported)", ok=lambda r: r < 1))
    return figures + _t5_figures(device, log)

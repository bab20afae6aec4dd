"""Tiny random-weight Flux.1 and SD3 pipelines from diffusers' and transformers' real classes (seeded),
saved as diffusers folders: the tests and the bench load them through the same code as a user's model.

Shapes follow the real models where the code depends on them: a 16-channel VAE with a shift factor,
Flux's 2×2 packed latents (transformer in_channels 64) and guidance embedding (as dev), SD3's three
text encoders (two CLIPs with projections, T5)."""
from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from modules.models.demo import DEMO_NOTE, write_clip_tokenizer

WIDTH = 32  # every text encoder's hidden size, and the joint attention width


def t5_tokenizer():
    """A T5 tokenizer over printable ASCII (a Unigram model, as T5's own), with T5's specials and `</s>` added."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import T5TokenizerFast

    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -1.0)] + [(chr(i), -2.0) for i in range(33, 127)]
    tok = Tokenizer(models.Unigram(vocab, unk_id=2, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return T5TokenizerFast(tokenizer_object=tok, eos_token="</s>", unk_token="<unk>", pad_token="<pad>",
                           extra_ids=0, model_max_length=512)


def _clip(tokenizer, projection: bool, seed: int, width: int = WIDTH):
    import torch
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(seed)
    config = CLIPTextConfig(hidden_size=width, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2,
                            vocab_size=len(tokenizer), max_position_embeddings=77, projection_dim=width,
                            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                            pad_token_id=tokenizer.pad_token_id)
    return (CLIPTextModelWithProjection if projection else CLIPTextModel)(config).eval()


def _t5(tokenizer, seed: int, width: int = WIDTH):
    import torch
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(seed)
    return T5EncoderModel(T5Config(vocab_size=len(tokenizer), d_model=width, d_ff=37, d_kv=8, num_heads=4,
                                   num_layers=2, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)).eval()


def _vae(seed: int, shift: float, scale: float):
    import torch
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
                         up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(16, 16, 32, 32),
                         layers_per_block=1, latent_channels=16, norm_num_groups=8, use_quant_conv=False,
                         use_post_quant_conv=False, shift_factor=shift, scaling_factor=scale).eval()


def _clip_tokenizer():
    from transformers import CLIPTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        write_clip_tokenizer(Path(tmp))
        return CLIPTokenizer.from_pretrained(tmp, local_files_only=True)


def build_flux_pipeline(seed: int = 0, width: int = WIDTH, head_dim: int = 16, blocks: tuple[int, int] = (1, 1)):
    """Flux.1-dev's layout, tiny by default: CLIP-L (pooled) + T5, `blocks` (double, single) transformer blocks
    of `width` (heads of `head_dim`; the real model: 3072 wide, heads of 128, 19 + 38 blocks), guidance embeds."""
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel

    clip_tok, t5_tok = _clip_tokenizer(), t5_tokenizer()
    torch.manual_seed(seed)
    rope = (head_dim // 4, 3 * head_dim // 8, 3 * head_dim // 8)  # the real split of 128: 16, 56, 56
    transformer = FluxTransformer2DModel(patch_size=1, in_channels=64, num_layers=blocks[0], num_single_layers=blocks[1],
                                         attention_head_dim=head_dim, num_attention_heads=width // head_dim,
                                         joint_attention_dim=width, pooled_projection_dim=width, axes_dims_rope=rope,
                                         guidance_embeds=True)
    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
                                                base_image_seq_len=256, max_image_seq_len=4096)
    return FluxPipeline(scheduler=scheduler, vae=_vae(seed + 1, 0.1159, 0.3611),
                        text_encoder=_clip(clip_tok, False, seed + 2, width), tokenizer=clip_tok,
                        text_encoder_2=_t5(t5_tok, seed + 3, width), tokenizer_2=t5_tok, transformer=transformer.eval())


def build_sd3_pipeline(seed: int = 0):
    """SD3's layout, tiny: CLIP-L and CLIP-G with projections, T5, an MMDiT of two joint blocks."""
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline

    tok_l, tok_g, t5_tok = _clip_tokenizer(), _clip_tokenizer(), t5_tokenizer()
    torch.manual_seed(seed)
    transformer = SD3Transformer2DModel(sample_size=32, patch_size=2, in_channels=16, out_channels=16, num_layers=2,
                                        attention_head_dim=16, num_attention_heads=2, caption_projection_dim=WIDTH,
                                        joint_attention_dim=WIDTH, pooled_projection_dim=2 * WIDTH, pos_embed_max_size=32)
    return StableDiffusion3Pipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0), vae=_vae(seed + 1, 0.0609, 1.5305),
        text_encoder=_clip(tok_l, True, seed + 2), tokenizer=tok_l, text_encoder_2=_clip(tok_g, True, seed + 3),
        tokenizer_2=tok_g, text_encoder_3=_t5(t5_tok, seed + 4), tokenizer_3=t5_tok, transformer=transformer.eval())


BUILDERS = {"flux": build_flux_pipeline, "sd3": build_sd3_pipeline}


def save_demo_flow(folder: Path, arch: str, seed: int = 0, **sizes) -> Path:
    """Build and save a tiny Flux or SD3 checkpoint as a diffusers folder (safetensors), whole or not at all;
    `sizes` go to the builder (the bench's bigger Flux)."""
    pipe = BUILDERS[arch](seed, **sizes)
    folder = Path(folder)
    tmp = folder.with_name("." + folder.name + ".building")
    shutil.rmtree(tmp, ignore_errors=True)
    pipe.save_pretrained(str(tmp), safe_serialization=True)
    (tmp / "ATELIER_DEMO.txt").write_text(DEMO_NOTE + "\n", encoding="utf-8")
    tmp.rename(folder)
    return folder


# Where the demo puts each text encoder in models/text_encoder: a name ending in .safetensors is a file of its
# weights (as ComfyUI's clip_l.safetensors), any other a transformers folder.
ENCODER_FILES = {"flux": (("text_encoder", "clip_l.safetensors"), ("text_encoder_2", "t5xxl")),
                 "sd3": (("text_encoder", "clip_l"), ("text_encoder_2", "clip_g"), ("text_encoder_3", "t5xxl"))}


def _load_saved(folder: Path):
    from diffusers import DiffusionPipeline

    return DiffusionPipeline.from_pretrained(str(folder), local_files_only=True)


def _arch(pipe) -> str:
    return "flux" if type(pipe).__name__ == "FluxPipeline" else "sd3"


def save_configs(folder: Path, models: Path) -> Path:
    """The folder's configs and tokenizers, no weights, as models/configs/<variant>/ (what a user downloads)."""
    index = json.loads((Path(folder) / "model_index.json").read_text(encoding="utf-8"))
    guided = json.loads((Path(folder) / "transformer" / "config.json").read_text(encoding="utf-8")).get("guidance_embeds")
    variant = ("flux-dev" if guided else "flux-schnell") if index["_class_name"] == "FluxPipeline" else "sd3"
    configs = models / "configs" / variant
    if not configs.exists():
        shutil.copytree(folder, configs, ignore=shutil.ignore_patterns("*.safetensors", "ATELIER_DEMO.txt"))
    return configs


def save_shared_parts(folder: Path, models: Path, suffix: str = "") -> None:
    """The folder's text encoders into models/text_encoder (ENCODER_FILES, `suffix` after each name so a second
    model's encoders sit beside the first's, as a user's clip_l_sd3) and its VAE into models/VAE."""
    from safetensors.torch import save_file

    pipe = _load_saved(folder)
    arch = _arch(pipe)
    encoders = models / "text_encoder"
    encoders.mkdir(parents=True, exist_ok=True)
    for slot, name in ENCODER_FILES[arch]:
        name = name.replace(".safetensors", suffix + ".safetensors") if name.endswith(".safetensors") else name + suffix
        if name.endswith(".safetensors"):
            save_file(_contiguous(pipe.components[slot].state_dict()), str(encoders / name))
        else:
            pipe.components[slot].save_pretrained(str(encoders / name), safe_serialization=True)
    (models / "VAE").mkdir(parents=True, exist_ok=True)
    save_file(_contiguous(pipe.vae.state_dict()), str(models / "VAE" / ("ae" if arch == "flux" else "sd3_vae")
                                                       ) + ".safetensors")


def save_flux_files(folder: Path, models: Path, name: str) -> Path:
    """The tiny Flux folder's weights as a Forge / ComfyUI user keeps them: the transformer alone in BFL key names
    (models/Stable-diffusion/<name>.safetensors), CLIP-L as a file and T5 as a folder in models/text_encoder,
    the VAE in models/VAE, and the configs + tokenizers without weights in models/configs/flux-dev/."""
    from safetensors.torch import save_file

    from modules.models import flux_layout

    save_configs(folder, models)
    save_shared_parts(folder, models)
    bfl = flux_layout.to_bfl(_load_saved(folder).transformer.state_dict())
    target = models / "Stable-diffusion" / f"{name}.safetensors"
    save_file(_contiguous({"model.diffusion_model." + k: v for k, v in bfl.items()}), str(target))
    return target


# Forge's all-in-one prefixes of the parts a Flux file may bundle (flow_files reads them back).
FLUX_BUNDLED = (("text_encoders.clip_l.transformer.", "text_encoder"), ("text_encoders.t5xxl.transformer.",
                                                                       "text_encoder_2"), ("vae.", "vae"))


def save_flux_bnb_nf4(folder: Path, models: Path, name: str, nested: bool = False, all_in_one: bool = False) -> Path:
    """The tiny Flux folder's transformer as Forge's pre-quantized bitsandbytes nf4 file (lllyasviel's
    flux1-dev-bnb-nf4; `nested`: v1's double quantization, else v2's float32 absmax) at
    models/Stable-diffusion/<name>.safetensors, in BFL names under model.diffusion_model.: every Linear weight (the
    2-D ones) packed by bitsandbytes' own quantize_4bit (nf4, blocksize 64) from bf16, its
    QuantState.as_dict(packed=True) beside it, the rest bf16; `all_in_one` bundles CLIP-L, T5 and the VAE under
    Forge's prefixes. + configs/flux-dev; the shared encoders and VAE are save_flux_files'."""
    import bitsandbytes.functional as bnb_f
    import torch
    from safetensors.torch import save_file

    from modules.models import flux_layout

    save_configs(folder, models)
    pipe = _load_saved(folder)
    out = {}
    for key, tensor in flux_layout.to_bfl(pipe.transformer.state_dict()).items():
        key, tensor = "model.diffusion_model." + key, tensor.to(torch.bfloat16)
        if tensor.ndim == 2 and key.endswith(".weight"):
            out[key], quant_state = bnb_f.quantize_4bit(tensor, blocksize=64, compress_statistics=nested,
                                                        quant_type="nf4")
            out.update({f"{key}.{part}": value for part, value in quant_state.as_dict(packed=True).items()})
        else:
            out[key] = tensor
    for prefix, slot in FLUX_BUNDLED if all_in_one else ():
        out.update({prefix + k: v for k, v in pipe.components[slot].state_dict().items()})
    target = models / "Stable-diffusion" / f"{name}.safetensors"
    save_file(_contiguous(out), str(target))
    return target


def save_sd3_files(folder: Path, models: Path, name: str) -> tuple[Path, Path]:
    """The tiny SD3 folder as single files: `<name>-aio.safetensors`, all in one as SAI ships them (the transformer
    in SAI's MMDiT names under model.diffusion_model.joint_blocks…, the encoders under text_encoders.clip_l /
    clip_g / t5xxl.transformer., the VAE under vae.), and `<name>.safetensors`, the transformer alone in
    diffusers' names; + configs/sd3."""
    from safetensors.torch import save_file

    from modules.models import sd3_layout

    save_configs(folder, models)
    pipe = _load_saved(folder)
    parts = {"text_encoders.clip_l.transformer.": pipe.text_encoder,
             "text_encoders.clip_g.transformer.": pipe.text_encoder_2,
             "text_encoders.t5xxl.transformer.": pipe.text_encoder_3, "vae.": pipe.vae}
    whole = {prefix + k: v for prefix, module in parts.items() for k, v in module.state_dict().items()}
    whole.update({"model.diffusion_model." + k: v for k, v in sd3_layout.to_sai(pipe.transformer.state_dict()).items()})
    aio = models / "Stable-diffusion" / f"{name}-aio.safetensors"
    save_file(_contiguous(whole), str(aio))
    alone = models / "Stable-diffusion" / f"{name}.safetensors"
    save_file(_contiguous(pipe.transformer.state_dict()), str(alone))
    return aio, alone


def save_sd3_gguf(folder: Path, models: Path, name: str, qtype: str = "Q8_0", suffix: str = "_sd3") -> Path:
    """The tiny SD3 folder's transformer as a GGUF file in SAI's MMDiT names (as city96's SD3 GGUFs), at
    models/<name>, with its encoders in models/text_encoder (names + `suffix`), its VAE in models/VAE and
    configs/sd3. Q8_0: the tiny model's 32-wide rows hold whole Q8_0 blocks, not Q4_K's 256."""
    from modules.models import sd3_layout

    save_configs(folder, models)
    save_shared_parts(folder, models, suffix)
    target = models / name
    target.parent.mkdir(parents=True, exist_ok=True)
    return save_gguf(target, sd3_layout.to_sai(_load_saved(folder).transformer.state_dict()), qtype, arch="sd3")


def _contiguous(state: dict) -> dict:
    """Own copies: safetensors refuses tensors that share memory (T5's tied embeddings)."""
    return {k: v.detach().clone().contiguous() for k, v in state.items()}


def save_gguf(path: Path, state: dict, qtype: str, arch: str = "flux") -> Path:
    """A GGUF file of `state` (BFL / SAI names, as city96's Flux and SD3 GGUFs; `arch` its general.architecture):
    2-D weights whose rows fit the type's blocks in `qtype` (Q8_0, Q5_0, Q4_0: the gguf package's quantizers;
    Q4_K, Q5_K: gguf_kquants'), the rest F32."""
    import gguf
    import numpy as np

    from modules.models import gguf_kquants

    kind = getattr(gguf.GGMLQuantizationType, qtype)
    block = gguf.GGML_QUANT_SIZES[kind][0]
    writer = gguf.GGUFWriter(str(path), arch=arch)
    for key, tensor in state.items():
        data = tensor.detach().float().numpy()
        if data.ndim == 2 and key.endswith(".weight") and data.shape[1] % block == 0:
            packed = gguf_kquants.quantize(data, kind)
            writer.add_tensor(key, packed, raw_shape=packed.shape, raw_dtype=kind)
        else:
            writer.add_tensor(key, np.ascontiguousarray(data, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return Path(path)

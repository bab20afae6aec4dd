"""Model files only the tests need, built from the studio's demo factory (modules/models/demo.py):
LoRAs (kohya and PEFT), the demo as an A1111 single file, and a tiny SDXL with its LoRA."""
from __future__ import annotations

from pathlib import Path

from modules.models.demo import DEMO_NOTE, build_sd15_pipeline, write_clip_tokenizer
from modules.models.demo_upscaler import realesrgan_state_dict
from modules.models.singlefile import copy_configs, save_single_file, unet_key


def save_demo_single_file(path: Path, seed: int = 0, sidecar: bool = True, **kwargs) -> Path:
    """The demo model as an A1111-style single .safetensors file (LDM key names).

    With `sidecar`, its configs and tokenizer go beside it as `<stem>.config/`, so it loads offline
    the way a user's civitai file does once its configs are on the machine.
    """
    import tempfile

    path = Path(path)
    pipe = build_sd15_pipeline(seed, **kwargs)
    save_single_file(pipe, path)
    if sidecar:
        with tempfile.TemporaryDirectory() as tmp:
            pipe.save_pretrained(tmp, safe_serialization=True)
            copy_configs(Path(tmp), path.with_name(path.stem + ".config"))
    return path


_LORA_UNET = ("to_q", "to_k", "to_v", "to_out.0")
_LORA_TE = ("q_proj", "k_proj", "v_proj", "out_proj")


def save_demo_lora(path: Path, fmt: str = "kohya", seed: int = 0, rank: int = 4, alpha: float | None = None,
                   scale: float = 0.3, text_encoder: bool = True, metadata: dict | None = None) -> Path:
    """A LoRA for the demo architecture with random (visible) weights.

    fmt "kohya": A1111/kohya keys `lora_unet_…` / `lora_te_text_model_…` with `.lora_down` / `.lora_up`
    and `.alpha` (left out when alpha is None, which scales by 1.0 as A1111 does).
    fmt "peft": diffusers' own format, made with peft's add_adapter and `save_lora_weights`.
    """
    import torch
    from safetensors.torch import save_file

    pipe = build_sd15_pipeline(0)
    gen = torch.Generator().manual_seed(seed)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "peft":
        from diffusers import StableDiffusionPipeline
        from diffusers.utils import convert_state_dict_to_diffusers
        from peft import LoraConfig
        from peft.utils import get_peft_model_state_dict

        pipe.unet.add_adapter(LoraConfig(r=rank, lora_alpha=alpha or rank, target_modules=list(_LORA_UNET)))
        for name, p in pipe.unet.named_parameters():
            if "lora_" in name:
                p.data = torch.randn(p.shape, generator=gen) * scale
        layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(pipe.unet))
        StableDiffusionPipeline.save_lora_weights(str(path.parent), unet_lora_layers=layers, weight_name=path.name)
        return path
    tensors = {}
    parts = [("lora_unet_", pipe.unet, _LORA_UNET)] + ([("lora_te_text_model_", pipe.text_encoder, _LORA_TE)]
                                                       if text_encoder else [])
    for prefix, model, suffixes in parts:
        for name, module in model.named_modules():
            if isinstance(module, torch.nn.Linear) and name.endswith(suffixes):
                key = prefix + name.removeprefix("text_model.").replace(".", "_")
                tensors[key + ".lora_down.weight"] = torch.randn(rank, module.in_features, generator=gen) * scale
                tensors[key + ".lora_up.weight"] = torch.randn(module.out_features, rank, generator=gen) * scale
                if alpha is not None:
                    tensors[key + ".alpha"] = torch.tensor(float(alpha))
    save_file(tensors, str(path), metadata={"ss_network_dim": str(rank), **(metadata or {})})
    return path


def build_sdxl_pipeline(seed: int = 0):
    """A tiny SDXL-architecture pipeline (two text encoders, pooled embeddings, time ids); random weights."""
    import tempfile

    import torch
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    torch.manual_seed(seed)
    with tempfile.TemporaryDirectory() as tmp:
        write_clip_tokenizer(Path(tmp))
        tok = CLIPTokenizer.from_pretrained(tmp, local_files_only=True)
    cfg = dict(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
               hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=3,
               vocab_size=len(tok), max_position_embeddings=77, projection_dim=32, layer_norm_eps=1e-5)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=1, sample_size=16, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4), use_linear_projection=True, addition_embed_type="text_time",
        addition_time_embed_dim=8, transformer_layers_per_block=(1, 1), projection_class_embeddings_input_dim=6 * 8 + 32,
        cross_attention_dim=64, norm_num_groups=1)
    vae = AutoencoderKL(block_out_channels=(32, 64), in_channels=3, out_channels=3, latent_channels=4,
                        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                        norm_num_groups=32, sample_size=32)
    return StableDiffusionXLPipeline(
        vae=vae.eval(), text_encoder=CLIPTextModel(CLIPTextConfig(**cfg)).eval(),
        text_encoder_2=CLIPTextModelWithProjection(CLIPTextConfig(**cfg)).eval(),
        tokenizer=tok, tokenizer_2=tok, unet=unet.eval(),
        scheduler=EulerDiscreteScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                                         steps_offset=1, timestep_spacing="leading"))


def save_demo_sdxl_checkpoint(folder: Path, seed: int = 0) -> Path:
    """A tiny SDXL checkpoint as a diffusers folder, written whole or not at all."""
    import shutil

    folder = Path(folder)
    tmp = folder.with_name("." + folder.name + ".building")
    shutil.rmtree(tmp, ignore_errors=True)
    build_sdxl_pipeline(seed).save_pretrained(str(tmp), safe_serialization=True)
    (tmp / "ATELIER_DEMO.txt").write_text(DEMO_NOTE + "\n", encoding="utf-8")
    tmp.rename(folder)
    return folder


def save_demo_sdxl_lora(path: Path, seed: int = 0, rank: int = 4, scale: float = 0.3) -> Path:
    """A kohya-format SDXL LoRA for the tiny SDXL: `lora_unet_<SGM block names>`, `lora_te1_…`, `lora_te2_…`."""
    import torch
    from safetensors.torch import save_file

    pipe = build_sdxl_pipeline(0)
    gen = torch.Generator().manual_seed(seed)
    tensors = {}

    def add(key, module):
        tensors[key + ".lora_down.weight"] = torch.randn(rank, module.in_features, generator=gen) * scale
        tensors[key + ".lora_up.weight"] = torch.randn(module.out_features, rank, generator=gen) * scale

    for name, module in pipe.unet.named_modules():
        if isinstance(module, torch.nn.Linear) and name.endswith(_LORA_UNET):
            ldm = unet_key(name + ".weight", pipe.unet.config)[: -len(".weight")]  # kohya SDXL uses SGM names
            add("lora_unet_" + ldm.replace(".", "_"), module)
    for prefix, encoder in (("lora_te1_text_model_", pipe.text_encoder), ("lora_te2_text_model_", pipe.text_encoder_2)):
        for name, module in encoder.named_modules():
            if isinstance(module, torch.nn.Linear) and name.endswith(_LORA_TE):
                add(prefix + name.removeprefix("text_model.").replace(".", "_"), module)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata={"ss_network_dim": str(rank)})
    return path


def save_demo_upscaler(path: Path, fmt: str = "safetensors", seed: int = 0) -> Path:
    """The tiny 4x Real-ESRGAN-layout upscaler as a .safetensors file, or as a .pth the way Real-ESRGAN
    ships them: torch.save({"params_ema": state_dict})."""
    import torch
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sd = realesrgan_state_dict(seed)
    if fmt == "safetensors":
        save_file(sd, str(path))
    else:
        torch.save({"params_ema": sd}, str(path))
    return path


def save_demo_paligemma_adapter(base_folder: Path, out: Path, base_name: str, seed: int = 0) -> Path:
    """A PEFT LoRA for the demo PaliGemma's language model (attention q/v) with random, not zero, B matrices,
    so it changes the answer; its adapter_config names `base_name`, as a paligemma_lora training writes it."""
    import json

    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import PaliGemmaForConditionalGeneration

    torch.manual_seed(seed)
    model = PaliGemmaForConditionalGeneration.from_pretrained(str(base_folder), local_files_only=True)
    config = LoraConfig(r=4, lora_alpha=64, init_lora_weights=False, task_type="CAUSAL_LM",
                        target_modules=r"^model\.language_model\.layers\.\d+\.self_attn\.(q|v)_proj$")
    get_peft_model(model, config).save_pretrained(str(out))
    adapter_config = json.loads((out / "adapter_config.json").read_text())
    adapter_config["base_model_name_or_path"] = base_name
    (out / "adapter_config.json").write_text(json.dumps(adapter_config))
    return out


def save_demo_gfpgan(path: Path) -> Path:
    """The random-weight GFPGANv1.4-layout face restorer as a .safetensors file (fp16, ~174 MB)."""
    from safetensors.torch import save_file

    from modules.models.demo_faces import gfpgan_state_dict

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(gfpgan_state_dict(), str(path))
    return path


def schematic_face(size: int = 256, background=(90, 120, 160)):
    """A drawn face (head, brows, eyes, nose, mouth, blurred) that OpenCV's frontal-face cascade finds."""
    from PIL import Image, ImageDraw, ImageFilter

    image = Image.new("RGB", (size, size), background)
    draw = ImageDraw.Draw(image)
    s = size / 256

    def ellipse(box, fill):
        draw.ellipse([v * s for v in box], fill=fill)

    ellipse((58, 30, 198, 220), (225, 185, 150))  # head
    draw.rectangle([v * s for v in (80, 78, 120, 86)], fill=(70, 50, 40))  # brows
    draw.rectangle([v * s for v in (136, 78, 176, 86)], fill=(70, 50, 40))
    ellipse((86, 96, 116, 112), (40, 30, 30))  # eyes
    ellipse((140, 96, 170, 112), (40, 30, 30))
    draw.polygon([(s * 128, s * 110), (s * 118, s * 150), (s * 138, s * 150)], fill=(200, 155, 125))  # nose
    ellipse((100, 166, 156, 184), (150, 60, 60))  # mouth
    return image.filter(ImageFilter.GaussianBlur(2 * s))


def save_flux_file_set(models: Path, folder_name: str, ggufs: dict[str, str], seed: int = 3) -> Path:
    """A tiny Flux-dev diffusers folder (layers 256 wide: whole GGUF K-quant blocks) in models/Stable-diffusion and
    the same weights as a user keeps them (demo_flow.save_flux_files: `tiny-flux-bfl.safetensors` + shared
    encoders, VAE, configs), plus GGUF files `{qtype: name under models/}` of its transformer. Returns the folder."""
    from safetensors.torch import load_file

    from modules.models.demo_flow import save_demo_flow, save_flux_files, save_gguf

    folder = save_demo_flow(models / "Stable-diffusion" / folder_name, "flux", seed=seed, width=256, head_dim=128)
    bfl_file = save_flux_files(folder, models, "tiny-flux-bfl")
    bfl = {k.removeprefix("model.diffusion_model."): v for k, v in load_file(str(bfl_file)).items()}
    for qtype, name in ggufs.items():
        (models / name).parent.mkdir(parents=True, exist_ok=True)
        save_gguf(models / name, bfl, qtype)
    return folder


def save_fp8_t5_file(t5_folder: Path, target: Path) -> Path:
    """A T5 encoder folder's weights as ComfyUI's t5xxl_fp8_e4m3fn.safetensors: every matrix in float8_e4m3fn
    (the embedding and attention bias too), the layer norms as they are; one copy of the tied embedding."""
    import torch
    from safetensors.torch import load_file, save_file

    state = load_file(str(next(Path(t5_folder).glob("*.safetensors"))))
    state.pop("encoder.embed_tokens.weight", None)
    fp8 = {k: (v.to(torch.float8_e4m3fn) if v.ndim == 2 else v).contiguous() for k, v in state.items()}
    save_file(fp8, str(target))
    return target


def bnb_nf4_dequantized(path: Path) -> dict:
    """The file's transformer in diffusers' names, every packed weight through bitsandbytes' own QuantState.from_dict
    + dequantize_4bit in float32 (the compute dtype here), every other tensor as stored."""
    import bitsandbytes.functional as bnb_f
    import torch
    from safetensors.torch import load_file

    from modules.models import flux_layout

    state = {k: v for k, v in load_file(str(path)).items() if k.startswith("model.diffusion_model.")}
    out = {}
    for key in [k for k in state if k.endswith(".weight") and state[k].dtype == torch.uint8]:
        stats = {k[len(key) + 1:]: state.pop(k) for k in list(state) if k.startswith(key + ".")}
        quant_state = bnb_f.QuantState.from_dict(stats, device="cpu")
        quant_state.dtype = torch.float32
        out[key] = bnb_f.dequantize_4bit(state.pop(key), quant_state)
    out.update({k: v.float() for k, v in state.items()})
    return flux_layout.to_diffusers(out)

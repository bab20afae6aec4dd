"""Flux single files as Forge / ComfyUI users keep them (modules/models/flow_files.py): a transformer-only
.safetensors in BFL key names and GGUF files (Q8_0, Q5_K, Q4_K) in models/Stable-diffusion and models/unet,
CLIP-L / T5 in models/text_encoder, the 16-channel VAE in models/VAE, configs in models/configs/flux-dev.
All made from one tiny diffusers folder (the demo factory), so the folder is the reference: the single file
loads bit for bit the same weights and image; GGUF and bitsandbytes nf4 / int8 (the CPU layer swap) generate
an image close to it, not equal, with the quantization in the infotext and a smaller footprint. Forge's
pre-quantized bitsandbytes nf4 files (v2; v1 all in one) run exactly bnb's dequantization of their blocks and
equal plain diffusers on those weights."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from modules.models.demo import DEMO_NAME

FOLDER, BFL, DIFFUSERS_LAYOUT = "tiny-flux-wide", "tiny-flux-bfl.safetensors", "tiny-flux-diffusers.safetensors"
GGUFS = {"Q8_0": "unet/tiny-flux-Q8_0.gguf", "Q5_K": "unet/tiny-flux-Q5_K.gguf", "Q4_K": "tiny-flux-Q4_K.gguf"}
# Forge's pre-quantized bitsandbytes nf4 files: v2 (transformer only, float32 absmax), v1 (double quantization,
# all in one with CLIP-L, T5 and the VAE), and a v2 whose first quant state is not JSON.
NF4_V2, NF4_V1_AIO, NF4_DAMAGED = ("tiny-flux-bnb-nf4-v2.safetensors", "tiny-flux-bnb-nf4.safetensors",
                                   "tiny-flux-bnb-nf4-damaged.safetensors")


def _own(state: dict) -> dict:
    return {k: v.clone() for k, v in state.items()}


@pytest.fixture(scope="module")
def studio(tmp_path_factory, demo_checkpoint):
    import torch
    from safetensors.torch import load_file, save_file

    from modules.studio import Studio, StudioOptions
    from tests.conftest import make_data_dir
    from modules.models.demo_flow import save_flux_bnb_nf4
    from tests.fixtures_models import save_flux_file_set

    data = make_data_dir(tmp_path_factory.mktemp("flow-files"), demo_checkpoint)
    models = data / "models"
    placed = {q: (n if "/" in n else "Stable-diffusion/" + n) for q, n in GGUFS.items()}
    folder = save_flux_file_set(models, FOLDER, placed)
    bfl_file = models / "Stable-diffusion" / BFL
    shutil.copy(bfl_file, models / "Stable-diffusion" / "tiny-flux-copy.safetensors")
    save_file(_own(load_file(str(folder / "transformer" / "diffusion_pytorch_model.safetensors"))),
              str(models / "Stable-diffusion" / DIFFUSERS_LAYOUT))
    schnell = {k: v for k, v in load_file(str(bfl_file)).items() if ".guidance_in." not in k}
    save_file(schnell, str(models / "Stable-diffusion" / "tiny-flux-schnell.safetensors"))
    v2 = save_flux_bnb_nf4(folder, models, NF4_V2.removesuffix(".safetensors"))
    save_flux_bnb_nf4(folder, models, NF4_V1_AIO.removesuffix(".safetensors"), nested=True, all_in_one=True)
    damaged = load_file(str(v2))
    first = next(k for k in sorted(damaged) if k.endswith(".quant_state.bitsandbytes__nf4"))
    damaged[first] = torch.tensor(list(b"{not json"), dtype=torch.uint8)
    save_file(damaged, str(models / "Stable-diffusion" / NF4_DAMAGED))
    s = Studio(StudioOptions(data_dir=data, device="cpu", build_demo=False))
    s.load()
    assert s.load_error is None, s.load_error
    yield s
    s.shutdown()


def _image(studio, checkpoint, **fields):
    from modules.diffusion.params import Txt2ImgRequest

    body = {"prompt": "a red fox", "steps": 3, "width": 64, "height": 64, "seed": 5, "sampler_name": "Euler",
            "cfg_scale": 1, "save_images": False, "override_settings": {"sd_model_checkpoint": checkpoint}, **fields}
    job = studio.jobs.run("txt2img", Txt2ImgRequest(**body), timeout=300)
    job.raise_for_error()
    generated = job.result.images[0]
    return np.asarray(generated.image.convert("RGB")).astype(int), generated.infotext


def _load(studio, name, **options):
    job = studio.jobs.run("load_checkpoint", {"name": name, "options": options}, timeout=300)
    job.raise_for_error()
    return studio.models.active  # the LoadedCheckpoint a load makes the active one


@pytest.fixture(scope="module")
def reference(studio):
    return _image(studio, FOLDER)[0]


def test_single_files_are_listed_as_flux_with_their_quantization(studio):
    assert studio.registry.get("checkpoint", BFL).arch == "flux"
    for qtype, name in GGUFS.items():
        entry = studio.registry.get("checkpoint", name)
        assert entry.arch == "flux" and entry.metadata["quantization"] == f"GGUF {qtype}", (name, entry)
    assert studio.registry.get("text_encoder", "clip_l.safetensors").arch == "clip_l"


def test_the_key_table_tells_flux_and_sd3_layouts_apart():
    from modules.models.detect import flow_kind_from_keys

    def kind(*keys):
        found = flow_kind_from_keys(list(keys))
        return found and (found.arch, found.variant, found.layout)

    dev = ("model.diffusion_model.double_blocks.0.img_attn.qkv.weight", "model.diffusion_model.single_blocks.0.linear1.weight",
           "model.diffusion_model.guidance_in.in_layer.weight")
    assert kind(*dev) == ("flux", "flux-dev", "bfl")
    assert kind(*(k.removeprefix("model.diffusion_model.") for k in dev[:2])) == ("flux", "flux-schnell", "bfl")
    assert kind("transformer_blocks.0.attn.to_q.weight", "single_transformer_blocks.0.proj_out.weight",
                "time_text_embed.guidance_embedder.linear_1.weight") == ("flux", "flux-dev", "diffusers")
    assert kind("joint_blocks.0.x_block.attn.qkv.weight", "joint_blocks.23.context_block.attn.qkv.weight") == (
        "sd3", "sd3", "bfl")
    assert kind("model.diffusion_model.joint_blocks.37.x_block.mlp.fc1.weight") == ("sd3", "sd35_large", "bfl")
    assert kind("joint_blocks.0.x_block.attn2.qkv.weight") == ("sd3", "sd35_medium", "bfl")
    assert kind("transformer_blocks.0.attn.to_q.weight", "context_embedder.weight", "pos_embed.pos_embed") == (
        "sd3", "sd3", "diffusers")
    assert kind("model.diffusion_model.input_blocks.0.0.weight", "down_blocks.0.attentions.0.transformer_blocks.0.x") is None


def test_the_bfl_conversion_equals_diffusers_at_flux1_width(studio):
    """diffusers' own converter only takes Flux.1's 3072 width: a (rows × 1) stand-in of that layout, converted
    both ways, must match tensor for tensor (the splits are row-wise, so one column is enough)."""
    import torch
    from diffusers.loaders.single_file_utils import convert_flux_transformer_checkpoint_to_diffusers
    from safetensors.torch import load_file

    from modules.models import flux_layout

    tiny = load_file(str(studio.registry.get("checkpoint", BFL).path))
    torch.manual_seed(0)
    wide = {k: torch.randn(v.shape[0] * 3072 // 256, 1) for k, v in tiny.items()}  # the tiny one is 256 wide
    ours = flux_layout.to_diffusers(dict(wide))
    theirs = convert_flux_transformer_checkpoint_to_diffusers(dict(wide))
    assert set(ours) == set(theirs)
    assert all(torch.equal(ours[k], theirs[k]) for k in theirs)


def test_k_quants_pack_as_gguf_reads_them():
    import gguf

    from modules.models import gguf_kquants

    data = np.random.default_rng(0).standard_normal((4, 512)).astype(np.float32)
    for name, bound in (("Q5_K", 0.12), ("Q4_K", 0.25)):
        kind = getattr(gguf.GGMLQuantizationType, name)
        back = gguf.quants.dequantize(gguf_kquants.quantize(data, kind), kind)
        assert back.shape == data.shape and 0 < np.abs(back - data).max() < bound, name


def test_the_bfl_single_file_loads_the_folders_weights_and_image_bit_for_bit(studio, reference):
    import torch

    single = _load(studio, BFL).pipe
    folder = _load(studio, FOLDER).pipe
    for part in ("transformer", "text_encoder", "text_encoder_2", "vae"):
        mine, theirs = single.components[part].state_dict(), folder.components[part].state_dict()
        assert set(mine) == set(theirs) and all(torch.equal(mine[k], theirs[k]) for k in theirs), part
    image, info = _image(studio, BFL)
    assert np.array_equal(image, reference)
    assert "Quantization" not in info
    assert np.array_equal(_image(studio, DIFFUSERS_LAYOUT)[0], reference)  # diffusers' names in a single file


@pytest.mark.parametrize("qtype", list(GGUFS))
def test_gguf_files_load_generate_close_to_the_folder_and_weigh_less(studio, reference, qtype):
    from modules.models import memory

    name = GGUFS[qtype]
    image, info = _image(studio, name)
    assert f"Quantization: GGUF {qtype}" in info
    assert not np.array_equal(image, reference) and np.abs(image - reference).mean() < 40, np.abs(image - reference).mean()
    transformer = _load(studio, name).pipe.transformer
    bf16_bytes = 2 * sum(p.numel() for p in _load(studio, FOLDER).pipe.transformer.parameters())
    assert memory.footprint_bytes_module(transformer) < bf16_bytes
    row = next(r for r in studio.models.describe() if r["name"] == name)
    assert row["footprint_bytes"] > 0 and row["arch"] == "flux" and row["quantization"] == f"GGUF {qtype}"


@pytest.mark.parametrize("name,quantization", [(BFL, "nf4"), (BFL, "int8"), (FOLDER, "nf4")])
def test_bitsandbytes_on_the_cpu_quantizes_the_flux_transformer(studio, reference, name, quantization):
    loaded = _load(studio, name, quantization=quantization)
    assert loaded.quantization == quantization
    assert any(type(m).__module__.startswith("bitsandbytes") for m in loaded.pipe.transformer.modules())
    image, info = _image(studio, name)
    assert f"Quantization: {quantization}" in info
    assert not np.array_equal(image, reference) and np.abs(image - reference).mean() < 40
    _load(studio, name)  # back to unquantized for the other tests


def test_a_gguf_file_refuses_bitsandbytes_by_field(studio):
    job = studio.jobs.run("load_checkpoint", {"name": GGUFS["Q8_0"], "options": {"quantization": "nf4"}}, timeout=60)
    assert job.state.value == "failed" and 400 <= job.error_status < 500, job.error
    assert job.error_field.split(".")[-1] == "quantization", (job.error_field, job.error)


def test_switching_sd_to_a_flux_file_and_back_generates_each(studio, reference):
    sd_first, _ = _image(studio, DEMO_NAME)
    assert _load(studio, DEMO_NAME).arch == "sd1"
    assert _load(studio, BFL).arch == "flux"
    assert np.array_equal(_image(studio, BFL)[0], reference)
    assert _load(studio, DEMO_NAME).arch == "sd1"
    assert np.array_equal(_image(studio, DEMO_NAME)[0], sd_first)


def test_missing_configs_and_encoders_are_named_with_where_they_go(studio):
    job = studio.jobs.run("load_checkpoint", {"name": "tiny-flux-schnell.safetensors"}, timeout=60)
    assert job.state.value == "failed" and job.error_field == "sd_model_checkpoint", job.error
    assert "black-forest-labs/FLUX.1-schnell" in job.error and "configs/flux-schnell" in job.error, job.error
    t5 = studio.paths.models / "text_encoder" / "t5xxl"
    aside = t5.with_name(".t5xxl-aside")
    t5.rename(aside)
    try:
        job = studio.jobs.run("load_checkpoint", {"name": "tiny-flux-copy.safetensors"}, timeout=60)
    finally:
        aside.rename(t5)
    assert job.state.value == "failed" and job.error_field == "sd_model_checkpoint", job.error
    assert "T5" in job.error and "models/text_encoder" in job.error and "CLIP" not in job.error, job.error


def test_forges_bnb_nf4_files_are_listed_as_flux_with_their_own_quantization(studio):
    for name in (NF4_V2, NF4_V1_AIO):
        entry = studio.registry.get("checkpoint", name)
        assert entry.arch == "flux" and entry.metadata["quantization"] == "nf4 (pre-quantized)", entry
        row = next(r for r in studio.models.describe() if r["name"] == name)
        assert row["arch"] == "flux" and row["quantization"] == "nf4 (pre-quantized)", row


@pytest.mark.parametrize("name", [NF4_V2, NF4_V1_AIO])
def test_a_bnb_nf4_file_runs_the_files_nf4_weights_and_equals_plain_diffusers_on_them(studio, name):
    """Kept in nf4 (as Forge keeps it), re-quantized from the dequantized weights: every Linear4bit dequantizes to
    exactly bnb's reading of the file's blocks, and the image equals plain diffusers with those weights."""
    import bitsandbytes as bnb
    import bitsandbytes.functional as bnb_f
    import torch
    from diffusers import FluxPipeline

    from tests.fixtures_models import bnb_nf4_dequantized

    expected = bnb_nf4_dequantized(studio.registry.get("checkpoint", name).path)
    loaded = _load(studio, name)
    assert loaded.quantization == "nf4"
    transformer = loaded.pipe.transformer
    layers = {n: m for n, m in transformer.named_modules() if isinstance(m, bnb.nn.Linear4bit)}
    assert len(layers) == sum(1 for m in transformer.modules() if isinstance(m, torch.nn.Linear))
    for layer_name, layer in layers.items():
        back = bnb_f.dequantize_4bit(layer.weight.data, layer.weight.quant_state)
        assert torch.equal(back, expected[layer_name + ".weight"]), layer_name
    plain_state = {k: v for k, v in transformer.state_dict().items() if k in expected and v.dtype == torch.float32}
    assert plain_state and all(torch.equal(v, expected[k]) for k, v in plain_state.items())
    image, info = _image(studio, name)
    assert "Quantization: nf4" in info, info
    pipe = FluxPipeline.from_pretrained(str(studio.paths.models / "Stable-diffusion" / FOLDER), local_files_only=True)
    pipe.transformer.load_state_dict(expected)
    pipe.set_progress_bar_config(disable=True)
    plain = pipe("a red fox", num_inference_steps=3, height=64, width=64, guidance_scale=3.5,
                 generator=torch.Generator().manual_seed(5)).images[0]
    assert np.array_equal(image, np.asarray(plain.convert("RGB")).astype(int))


def test_a_bnb_nf4_file_with_a_damaged_quant_state_is_refused_naming_the_file(studio):
    job = studio.jobs.run("load_checkpoint", {"name": NF4_DAMAGED}, timeout=120)
    assert job.state.value == "failed" and job.error_field == "sd_model_checkpoint", job.error
    assert NF4_DAMAGED in job.error and "nf4" in job.error and "download it again" in job.error, job.error

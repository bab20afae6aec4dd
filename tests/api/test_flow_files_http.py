"""Flux single files through a real server: the A1111 switch (POST /sdapi/v1/options) to a BFL transformer-only
file, then the official `webuiapi` client's txt2img — equal to plain diffusers on the folder of the same
weights; a GGUF Q4_K file in ComfyUI's models/unet as `unet/<name>` generates with `Quantization: GGUF Q4_K`
in its infotext and is listed by /atelier/v1/models with its type and footprint; Forge's pre-quantized bnb-nf4
file switched to by override_settings generates with `Quantization: nf4`, equal to plain diffusers on its
dequantized weights; SAI's all-in-one SD3 file switched to by `webuiapi`'s util_set_model equals plain diffusers
on its folder, and the BFL file loaded in nf4 through the models route generates through `webuiapi`; SD3 as a
GGUF Q8_0 file in models/unet with its encoders picked from the shared folders equals plain diffusers with that
GGUF transformer, and the SD3 folder in nf4; Flux and SD3 inpaint through `webuiapi` keep every pixel outside
the mask."""
from __future__ import annotations

from contextlib import contextmanager

import httpx
import numpy as np
import pytest
import webuiapi
from PIL import Image, ImageDraw

from tests.api.conftest import assert_json_error, server_errors
from tests.conftest import make_data_dir, start_live_server
from tests.fixtures_flow_loras import save_kohya_flux_lora
from tests.support import rgb_pixels

FOLDER, BFL, GGUF = "tiny-flux-wide", "tiny-flux-bfl.safetensors", "unet/tiny-flux-Q4_K.gguf"
NF4 = "tiny-flux-bnb-nf4-v2.safetensors"  # Forge's pre-quantized bitsandbytes nf4 file (lllyasviel's v2 layout)
SD3_FOLDER, SD3_AIO, SD3_GGUF = "tiny-sd3", "tiny-sd3-file-aio.safetensors", "unet/tiny-sd3-Q8_0.gguf"
# SD3's tiny encoders beside Flux's (other widths), picked as a Forge user picks them: the VAE, then the encoders.
SD3_MODULES = ["sd3_vae.safetensors", "clip_l_sd3", "clip_g_sd3", "t5xxl_sd3"]
ARGS = {"prompt": "a red fox", "width": 64, "height": 64, "steps": 3, "seed": 5, "sampler_name": "Euler", "cfg_scale": 1}


@pytest.fixture(scope="module")
def server(tmp_path_factory, demo_checkpoint):
    from tests.fixtures_models import save_flux_file_set

    data = make_data_dir(tmp_path_factory.mktemp("flow-files-server"), demo_checkpoint)
    from modules.models.demo_flow import save_demo_flow, save_flux_bnb_nf4, save_sd3_files, save_sd3_gguf

    folder = save_flux_file_set(data / "models", FOLDER, {"Q4_K": GGUF})
    save_flux_bnb_nf4(folder, data / "models", NF4.removesuffix(".safetensors"))
    sd3 = save_demo_flow(data / "models" / "Stable-diffusion" / SD3_FOLDER, "sd3", seed=4)
    save_sd3_files(sd3, data / "models", "tiny-sd3-file")  # all in one: no shared encoders in models/text_encoder
    save_sd3_gguf(sd3, data / "models", SD3_GGUF)  # its encoders as clip_l_sd3, clip_g_sd3, t5xxl_sd3
    (data / "models" / "Lora").mkdir(parents=True, exist_ok=True)
    save_kohya_flux_lora(data / "models" / "Lora" / "flux-wide-kohya.safetensors", seed=3, width=256)
    s = start_live_server(data)
    s.flux_folder, s.sd3_folder, s.models = folder, sd3, data / "models"
    yield s
    s.stop()


def plain_flux(server, transformer_state: dict | None = None):
    """Plain diffusers' image of ARGS on the tiny Flux folder (its transformer's weights replaced by
    `transformer_state` when given); cfg_scale 1 is Forge's distilled guidance 3.5."""
    import torch
    from diffusers import FluxPipeline

    pipe = FluxPipeline.from_pretrained(str(server.flux_folder), local_files_only=True)
    if transformer_state is not None:
        pipe.transformer.load_state_dict(transformer_state)
    pipe.set_progress_bar_config(disable=True)
    return pipe(ARGS["prompt"], num_inference_steps=3, height=64, width=64, guidance_scale=3.5,
                generator=torch.Generator().manual_seed(5)).images[0]


def test_an_a1111_switch_to_a_bfl_file_then_webuiapi_equals_plain_diffusers(server):
    switched = httpx.post(server.url + "/sdapi/v1/options", json={"sd_model_checkpoint": BFL}, timeout=300)
    assert switched.status_code == 200, switched.text
    api = webuiapi.WebUIApi(baseurl=server.url + "/sdapi/v1")
    result = api.txt2img(**ARGS)
    assert np.array_equal(rgb_pixels(result.image), rgb_pixels(plain_flux(server)))
    assert f"Model: {BFL.removesuffix('.safetensors')}" in result.info["infotexts"][0], result.info["infotexts"][0]


def assert_listed(server, name: str, arch: str, quantization: str) -> None:
    """/atelier/v1/models lists `name` with its architecture, quantized type and a footprint."""
    rows = httpx.get(server.url + "/atelier/v1/models", timeout=60).json()
    rows = rows["models"] if isinstance(rows, dict) else rows
    row = next(r for r in rows if r["name"] == name)
    assert row["arch"] == arch and row["quantization"] == quantization and row["footprint_bytes"] > 0, row


def test_a_gguf_file_in_models_unet_generates_and_is_listed_with_its_type(server):
    api = webuiapi.WebUIApi(baseurl=server.url + "/sdapi/v1")
    result = api.txt2img(**ARGS, override_settings={"sd_model_checkpoint": GGUF})
    assert "Quantization: GGUF Q4_K" in result.info["infotexts"][0], result.info["infotexts"][0]
    assert_listed(server, GGUF, "flux", "GGUF Q4_K")
    assert not server_errors(server)


def test_webuiapi_switches_to_forges_bnb_nf4_file_by_override_and_it_equals_plain_diffusers_on_its_weights(server):
    from tests.fixtures_models import bnb_nf4_dequantized

    api = webuiapi.WebUIApi(baseurl=server.url + "/sdapi/v1")
    result = api.txt2img(**ARGS, override_settings={"sd_model_checkpoint": NF4})
    assert "Quantization: nf4" in result.info["infotexts"][0], result.info["infotexts"][0]
    dequantized = bnb_nf4_dequantized(server.models / "Stable-diffusion" / NF4)
    assert np.array_equal(rgb_pixels(result.image), rgb_pixels(plain_flux(server, dequantized)))
    assert_listed(server, NF4, "flux", "nf4 (pre-quantized)")
    assert not server_errors(server)


def test_forges_modules_through_the_a1111_api_are_written_back_and_a_missing_one_is_refused_by_name(server):
    api = webuiapi.WebUIApi(baseurl=server.url + "/sdapi/v1")
    modules = ["/forge/models/VAE/ae.safetensors", "/forge/models/text_encoder/clip_l.safetensors", "t5xxl"]
    result = api.txt2img(**ARGS, override_settings={"sd_model_checkpoint": BFL, "forge_additional_modules": modules})
    assert "Module 1: ae, Module 2: clip_l, Module 3: t5xxl" in result.info["infotexts"][0], result.info["infotexts"][0]
    body = {**ARGS, "override_settings": {"sd_model_checkpoint": BFL, "forge_additional_modules": ["t5xxl_fp16"]}}
    refused = assert_json_error(httpx.post(server.url + "/sdapi/v1/txt2img", json=body, timeout=300))
    assert refused.get("field") == "forge_additional_modules" and "t5xxl_fp16" in refused["detail"], refused
    assert not server_errors(server)


def test_webuiapi_switches_to_sais_all_in_one_sd3_file_and_it_equals_plain_diffusers(server):
    import torch
    from diffusers import StableDiffusion3Pipeline

    api = webuiapi.WebUIApi(baseurl=server.url + "/sdapi/v1")
    api.util_set_model(SD3_AIO)
    assert api.util_get_current_model().startswith(SD3_AIO.removesuffix(".safetensors"))
    result = api.txt2img(**{**ARGS, "cfg_scale": 4}, negative_prompt="dark")
    pipe = StableDiffusion3Pipeline.from_pretrained(str(server.sd3_folder), local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    plain = pipe(ARGS["prompt"], negative_prompt="dark", num_inference_steps=3, height=64, width=64,
                 guidance_scale=4, generator=torch.Generator().manual_seed(5)).images[0]
    assert np.array_equal(rgb_pixels(result.image), rgb_pixels(plain))
    assert not server_errors(server)


@contextmanager
def loaded_in_nf4(server, name: str):
    """`name` loaded through the models route with the nf4 option, and back to unquantized after."""
    c = httpx.Client(base_url=server.url, timeout=300)
    loaded = c.post("/atelier/v1/models/load", json={"kind": "checkpoint", "name": name,
                                                     "options": {"quantization": "nf4"}})
    assert loaded.status_code == 200, loaded.text
    try:
        yield
    finally:
        c.post("/atelier/v1/models/load", json={"kind": "checkpoint", "name": name,
                                                "options": {"quantization": "none"}})


def test_the_bfl_file_in_nf4_through_the_models_route_generates_through_webuiapi(server):
    with loaded_in_nf4(server, BFL):
        api = webuiapi.WebUIApi(baseurl=server.url + "/sdapi/v1")
        made = api.txt2img(**ARGS, override_settings={"sd_model_checkpoint": BFL})
        assert "Quantization: nf4" in made.info["infotexts"][0], made.info["infotexts"][0]
    assert not server_errors(server)


@pytest.mark.parametrize("checkpoint", [BFL, GGUF])
def test_a_kohya_lora_on_the_bfl_and_gguf_files_through_webuiapi_changes_the_image_and_weight_zero_is_exact(
        server, checkpoint):
    api = webuiapi.WebUIApi(baseurl=server.url + "/sdapi/v1")
    args = {**ARGS, "override_settings": {"sd_model_checkpoint": checkpoint}}
    base = rgb_pixels(api.txt2img(**args).image)
    styled = api.txt2img(**{**args, "prompt": "a red fox <lora:flux-wide-kohya:1>"})
    assert "flux-wide-kohya: " in styled.info["infotexts"][0], styled.info["infotexts"][0]
    assert not np.array_equal(base, rgb_pixels(styled.image))
    zero = api.txt2img(**{**args, "prompt": "a red fox <lora:flux-wide-kohya:0>"})
    assert np.array_equal(base, rgb_pixels(zero.image))
    assert np.array_equal(base, rgb_pixels(api.txt2img(**args).image))
    assert not server_errors(server)


def plain_sd3_with_gguf_transformer(server):
    """Plain diffusers on the SD3 folder with the GGUF file's transformer (diffusers' own GGUF loading)."""
    import torch
    from diffusers import GGUFQuantizationConfig, SD3Transformer2DModel, StableDiffusion3Pipeline

    transformer = SD3Transformer2DModel.from_single_file(
        str(server.models / SD3_GGUF), config=str(server.sd3_folder), subfolder="transformer", local_files_only=True,
        quantization_config=GGUFQuantizationConfig(compute_dtype=torch.float32), torch_dtype=torch.float32)
    pipe = StableDiffusion3Pipeline.from_pretrained(str(server.sd3_folder), transformer=transformer,
                                                    local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    return pipe(ARGS["prompt"], negative_prompt="dark", num_inference_steps=3, height=64, width=64, guidance_scale=4,
                generator=torch.Generator().manual_seed(5)).images[0]


def test_an_sd3_gguf_file_in_models_unet_with_picked_modules_equals_plain_diffusers_and_is_listed(server):
    api = webuiapi.WebUIApi(baseurl=server.url + "/sdapi/v1")
    made = api.txt2img(**{**ARGS, "cfg_scale": 4}, negative_prompt="dark",
                       override_settings={"sd_model_checkpoint": SD3_GGUF, "forge_additional_modules": SD3_MODULES})
    info = made.info["infotexts"][0]
    assert "Quantization: GGUF Q8_0" in info and "Model: tiny-sd3-Q8_0" in info, info
    assert "Module 1: sd3_vae, Module 2: clip_l_sd3, Module 3: clip_g_sd3, Module 4: t5xxl_sd3" in info, info
    assert np.array_equal(rgb_pixels(made.image), rgb_pixels(plain_sd3_with_gguf_transformer(server)))
    assert_listed(server, SD3_GGUF, "sd3", "GGUF Q8_0")
    assert not server_errors(server)


def test_the_sd3_folder_in_nf4_through_the_models_route_generates_through_webuiapi(server):
    api = webuiapi.WebUIApi(baseurl=server.url + "/sdapi/v1")
    plain = rgb_pixels(api.txt2img(**ARGS, override_settings={"sd_model_checkpoint": SD3_AIO}).image)
    with loaded_in_nf4(server, SD3_FOLDER):
        made = api.txt2img(**ARGS, override_settings={"sd_model_checkpoint": SD3_FOLDER})
        info = made.info["infotexts"][0]
        assert "Quantization: nf4" in info and f"Model: {SD3_FOLDER}" in info, info
        # the all-in-one file holds the folder's weights: nf4 changes the image (the layers were swapped)
        assert not np.array_equal(rgb_pixels(made.image), plain)
    assert not server_errors(server)


@pytest.mark.parametrize("checkpoint", [FOLDER, SD3_FOLDER])
def test_flux_and_sd3_inpaint_through_webuiapi_keep_every_pixel_outside_the_mask(server, checkpoint):
    rng = np.random.default_rng(0)
    init = Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
    mask = Image.new("L", (64, 64), 0)
    ImageDraw.Draw(mask).rectangle((0, 0, 31, 63), fill=255)  # repaint the left half
    api = webuiapi.WebUIApi(baseurl=server.url + "/sdapi/v1")
    made = api.img2img(images=[init], mask_image=mask, inpainting_fill=1, inpaint_full_res=False, mask_blur=0,
                       denoising_strength=1.0, prompt="a red fox", width=64, height=64, steps=3, seed=5,
                       sampler_name="Euler", cfg_scale=1, override_settings={"sd_model_checkpoint": checkpoint})
    assert f"Model: {checkpoint}" in made.info["infotexts"][0], made.info["infotexts"][0]
    out, src = rgb_pixels(made.image), rgb_pixels(init)
    # A lossless PNG both ways and no blur: every pixel outside the mask is the original's, exactly.
    assert np.array_equal(out[:, 32:], src[:, 32:]), "pixels outside the mask must stay exactly as they were"
    assert np.abs(out[:, :32] - src[:, :32]).mean() > 5, "pixels inside the mask must be repainted"
    assert not server_errors(server)



def test_an_sd3_gguf_file_with_flux_sized_shared_encoders_is_refused_naming_the_encoder_file(server):
    # models/text_encoder's default clip_l is the tiny Flux's (256 wide): it cannot fill this SD3's slot
    body = {**ARGS, "override_settings": {"sd_model_checkpoint": SD3_GGUF}}
    refused = assert_json_error(httpx.post(server.url + "/sdapi/v1/txt2img", json=body, timeout=300))
    assert refused.get("field") == "sd_model_checkpoint", refused
    assert "text_encoder/clip_l.safetensors" in refused["detail"], refused
    assert not server_errors(server)

"""Flux and SD3 checkpoints (the tiny diffusers folders of modules/models/demo_flow.py) through a real server:
the official `webuiapi` client's txt2img equals plain diffusers on the same folder and seed, Forge's
`distilled_cfg_scale` acts, a UNet sampler is a 4xx naming `sampler_name`, an nf4 load through the model
manager's REST route generates (through `webuiapi`) and says so in the infotext; a kohya Flux LoRA and a PEFT SD3
LoRA through `webuiapi` change the image, weight 0 gives the base image bit for bit, /sdapi/v1/loras lists them;
`webuiapi`'s img2img on Flux and SD3 generates at the asked size."""
from __future__ import annotations

import httpx
import numpy as np
import pytest
import webuiapi

from tests.api.conftest import assert_json_error, png, server_errors
from tests.conftest import make_data_dir, start_live_server
from tests.fixtures_flow_loras import save_server_loras
from tests.support import rgb_pixels

FLUX, SD3 = "tiny-flux-dev", "tiny-sd3"
BODY = {"prompt": "a red fox", "width": 64, "height": 64, "steps": 3, "seed": 5, "sampler_name": "Euler",
        "cfg_scale": 1, "override_settings": {"sd_model_checkpoint": FLUX}}


@pytest.fixture(scope="module")
def server(tmp_path_factory, demo_checkpoint):
    from modules.models.demo_flow import save_demo_flow

    data = make_data_dir(tmp_path_factory.mktemp("flow-server"), demo_checkpoint)
    folder = save_demo_flow(data / "models" / "Stable-diffusion" / FLUX, "flux", seed=1)
    save_demo_flow(data / "models" / "Stable-diffusion" / SD3, "sd3", seed=2)
    save_server_loras(data / "models")
    s = start_live_server(data)
    s.flux_folder = folder
    yield s
    s.stop()


def test_webuiapi_txt2img_on_flux_equals_plain_diffusers(server):
    import torch
    from diffusers import FluxPipeline

    api = webuiapi.WebUIApi(baseurl=server.url + "/sdapi/v1")
    result = api.txt2img(prompt=BODY["prompt"], width=64, height=64, steps=3, seed=5, sampler_name="Euler",
                         cfg_scale=1, override_settings={"sd_model_checkpoint": FLUX})
    pipe = FluxPipeline.from_pretrained(str(server.flux_folder), local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    plain = pipe(BODY["prompt"], num_inference_steps=3, height=64, width=64, guidance_scale=3.5,
                 generator=torch.Generator().manual_seed(5)).images[0]
    assert np.array_equal(rgb_pixels(result.image), rgb_pixels(plain))
    assert "Distilled CFG Scale: 3.5" in result.info["infotexts"][0]


def test_distilled_cfg_scale_acts_and_a_unet_sampler_is_refused_by_name(server):
    c = httpx.Client(base_url=server.url + "/sdapi/v1", timeout=300)
    base = png(c.post("/txt2img", json=BODY).json()["images"][0])
    other = c.post("/txt2img", json={**BODY, "distilled_cfg_scale": 6})
    assert other.status_code == 200 and "Distilled CFG Scale: 6" in other.json()["info"]
    assert not np.array_equal(rgb_pixels(base), rgb_pixels(png(other.json()["images"][0])))
    refused = assert_json_error(c.post("/txt2img", json={**BODY, "sampler_name": "Euler a"}))
    assert refused.get("field") == "sampler_name" and "Euler" in refused["detail"], refused
    assert not server_errors(server)


def test_webuiapi_txt2img_on_sd3_equals_plain_diffusers(server):
    import torch
    from diffusers import StableDiffusion3Pipeline

    api = webuiapi.WebUIApi(baseurl=server.url + "/sdapi/v1")
    result = api.txt2img(prompt=BODY["prompt"], negative_prompt="dark", width=64, height=64, steps=3, seed=5,
                         sampler_name="Euler", cfg_scale=4, override_settings={"sd_model_checkpoint": SD3})
    folder = server.flux_folder.parent / SD3
    pipe = StableDiffusion3Pipeline.from_pretrained(str(folder), local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    plain = pipe(BODY["prompt"], negative_prompt="dark", num_inference_steps=3, height=64, width=64,
                 guidance_scale=4, generator=torch.Generator().manual_seed(5)).images[0]
    assert np.array_equal(rgb_pixels(result.image), rgb_pixels(plain))


def test_an_nf4_load_through_the_models_route_generates_and_says_so(server):
    c = httpx.Client(base_url=server.url, timeout=300)
    plain = png(c.post("/sdapi/v1/txt2img", json=BODY).json()["images"][0])
    loaded = c.post("/atelier/v1/models/load", json={"kind": "checkpoint", "name": FLUX,
                                                     "options": {"quantization": "nf4"}})
    assert loaded.status_code == 200, loaded.text
    try:
        api = webuiapi.WebUIApi(baseurl=server.url + "/sdapi/v1")
        made = api.txt2img(prompt=BODY["prompt"], width=64, height=64, steps=3, seed=5, sampler_name="Euler",
                           cfg_scale=1, override_settings={"sd_model_checkpoint": FLUX})
        assert "Quantization: nf4" in made.info["infotexts"][0]
        assert not np.array_equal(rgb_pixels(plain), rgb_pixels(made.image))  # 4-bit weights: another image
    finally:
        c.post("/atelier/v1/models/load", json={"kind": "checkpoint", "name": FLUX,
                                                "options": {"quantization": "none"}})


def test_t5_fp8_through_the_models_route_shrinks_the_footprint_and_a_t5_on_sd_is_refused_by_name(server):
    c = httpx.Client(base_url=server.url, timeout=300)
    body = {"kind": "checkpoint", "name": FLUX}
    full = c.post("/atelier/v1/models/load", json={**body, "options": {"t5": "none"}})
    assert full.status_code == 200, full.text
    try:
        fp8 = c.post("/atelier/v1/models/load", json={**body, "options": {"t5": "fp8"}})
        assert fp8.status_code == 200 and fp8.json()["footprint_bytes"] < full.json()["footprint_bytes"], fp8.text
        made = c.post("/sdapi/v1/txt2img", json=BODY)
        assert made.status_code == 200, made.text
    finally:
        c.post("/atelier/v1/models/load", json={**body, "options": {"t5": "none"}})
    refused = assert_json_error(c.post("/atelier/v1/models/load", json={"kind": "checkpoint", "name": "atelier-demo-sd15",
                                                                       "options": {"t5": "int8"}}))
    assert refused.get("field") == "t5", refused
    bad = assert_json_error(c.post("/atelier/v1/models/load", json={**body, "options": {"t5": "fp4"}}))
    assert bad.get("field") == "t5", bad
    assert not server_errors(server)


@pytest.mark.parametrize("checkpoint, lora, cfg", [(FLUX, "flux-kohya", 1), (SD3, "sd3-peft", 4)])
def test_webuiapi_loras_on_flux_and_sd3_change_the_image_and_weight_zero_is_bit_exact(server, checkpoint, lora, cfg):
    api = webuiapi.WebUIApi(baseurl=server.url + "/sdapi/v1")
    args = {"width": 64, "height": 64, "steps": 3, "seed": 5, "sampler_name": "Euler", "cfg_scale": cfg,
            "override_settings": {"sd_model_checkpoint": checkpoint}}
    base = rgb_pixels(api.txt2img(prompt="a red fox", **args).image)
    styled = api.txt2img(prompt=f"a red fox <lora:{lora}:1>", **args)
    assert not np.array_equal(base, rgb_pixels(styled.image))
    assert f"{lora}: " in styled.info["infotexts"][0], styled.info["infotexts"][0]  # Lora hashes
    assert np.array_equal(base, rgb_pixels(api.txt2img(prompt=f"a red fox <lora:{lora}:0>", **args).image))
    assert np.array_equal(base, rgb_pixels(api.txt2img(prompt="a red fox", **args).image))  # removed: the base again
    assert lora in [row["name"] for row in httpx.get(server.url + "/sdapi/v1/loras", timeout=60).json()]
    assert not server_errors(server)


@pytest.mark.parametrize("checkpoint, cfg", [(FLUX, 1), (SD3, 4)])
def test_webuiapi_img2img_on_flux_and_sd3_generates(server, checkpoint, cfg):
    from PIL import Image

    api = webuiapi.WebUIApi(baseurl=server.url + "/sdapi/v1")
    made = api.img2img(images=[Image.new("RGB", (64, 64), (200, 60, 20))], prompt="a red fox", width=64, height=64,
                       steps=4, seed=5, sampler_name="Euler", cfg_scale=cfg, denoising_strength=0.5,
                       override_settings={"sd_model_checkpoint": checkpoint})
    assert made.image.size == (64, 64) and f"Model: {checkpoint}" in made.info["infotexts"][0], made.info
    assert not server_errors(server)

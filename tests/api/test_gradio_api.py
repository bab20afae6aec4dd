"""The Gradio API as a Gradio user drives it with `gradio_client`: a few named endpoints (/txt2img, /img2img,
/inpaint, /png_info, /interrupt, /skip) with A1111's parameter names, and nothing else listed."""
from __future__ import annotations

import numpy as np
import pytest
from gradio_client import Client, handle_file
from PIL import Image

from tests.api.conftest import start_server

PUBLIC = {"/txt2img", "/img2img", "/inpaint", "/png_info", "/interrupt", "/skip", "/chat", "/vision", "/vision_batch",
          "/train_start", "/train_plan", "/interrogate", "/vision_video"}


@pytest.fixture(scope="module")
def server(tmp_path_factory, demo_checkpoint):
    s = start_server(tmp_path_factory, demo_checkpoint)
    yield s
    s.stop()


@pytest.fixture(scope="module")
def client(server):
    return Client(server.url, verbose=False)


def test_view_api_lists_only_the_named_endpoints(client):
    info = client.view_api(return_format="dict", print_info=False)
    assert set(info["named_endpoints"]) == PUBLIC
    assert not info["unnamed_endpoints"]
    names = [p["parameter_name"] for p in info["named_endpoints"]["/txt2img"]["parameters"]]
    assert names[:6] == ["prompt", "negative_prompt", "styles", "sampler_name", "scheduler", "steps"]
    assert {"seed", "width", "height", "cfg_scale", "enable_hr", "tiling"} <= set(names)
    assert all(p["parameter_has_default"] for p in info["named_endpoints"]["/txt2img"]["parameters"])
    img2img = [p["parameter_name"] for p in info["named_endpoints"]["/img2img"]["parameters"]]
    assert "image" in img2img and "denoising_strength" in img2img
    inpaint = [p["parameter_name"] for p in info["named_endpoints"]["/inpaint"]["parameters"]]
    assert {"image", "mask", "mask_blur", "inpainting_fill"} <= set(inpaint)


def test_txt2img_returns_the_image_and_its_infotext(client, server):
    import httpx

    gallery, text, info = client.predict(prompt="a red fox", negative_prompt="blurry", steps=3, width=64, height=64,
                                         seed=5, sampler_name="Euler", api_name="/txt2img")
    assert len(gallery) == 1
    with Image.open(gallery[0]["image"]) as im:
        assert im.size == (64, 64)
        assert im.info["parameters"] == text
        ours = np.asarray(im.convert("RGB")).astype(int)
    assert text.startswith("a red fox\nNegative prompt: blurry\nSteps: 3, Sampler: Euler") and "Seed: 5" in text
    assert info["all_seeds"] == [5] and info["infotexts"] == [text]
    # the same request through A1111's REST API makes the same picture
    r = httpx.post(server.url + "/sdapi/v1/txt2img", timeout=60,
                   json={"prompt": "a red fox", "negative_prompt": "blurry", "steps": 3, "width": 64, "height": 64,
                         "seed": 5, "sampler_name": "Euler"}).json()
    from tests.support import decode_png

    assert np.array_equal(np.asarray(decode_png(r["images"][0]).convert("RGB")).astype(int), ours)


def test_img2img_inpaint_and_png_info(client, tmp_path):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "init.png")
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (0, 0, 32, 64))
    mask.save(tmp_path / "mask.png")
    gallery, text, _ = client.predict(prompt="moss", image=handle_file(str(tmp_path / "init.png")), steps=4,
                                      width=64, height=64, seed=2, denoising_strength=0.5, api_name="/img2img")
    assert "Denoising strength: 0.5" in text and len(gallery) == 1
    gallery, text, _ = client.predict(prompt="moss", image=handle_file(str(tmp_path / "init.png")),
                                      mask=handle_file(str(tmp_path / "mask.png")), mask_blur=0, steps=4, width=64,
                                      height=64, seed=2, denoising_strength=1.0, api_name="/inpaint")
    out = np.asarray(Image.open(gallery[0]["image"]).convert("RGB")).astype(int)
    src = np.asarray(Image.open(tmp_path / "init.png").convert("RGB")).astype(int)
    assert np.abs(out[:, 40:] - src[:, 40:]).max() <= 3 and np.abs(out[:, :24] - src[:, :24]).mean() > 5
    assert "Mask blur: 0" in text
    read, parsed = client.predict(image=handle_file(gallery[0]["image"]), api_name="/png_info")
    assert read == text and parsed["Seed"] == "2" and parsed["Prompt"] == "moss"


def test_bad_input_is_an_error_naming_the_field_and_controls_answer(client):
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError) as err:
        client.predict(prompt="x", steps=2, width=64, height=64, styles=["no such style"], api_name="/txt2img")
    assert "styles" in str(err.value) and "no such style" in str(err.value)
    assert client.predict(api_name="/interrupt") == "nothing was running"
    assert client.predict(api_name="/skip") == "nothing was running"


def test_train_plan_and_train_start_take_the_rest_request(client, server):
    """A script plans and starts a training with the JSON body of POST /atelier/v1/train; a bad field is named."""
    from gradio_client.exceptions import AppError

    from tests.training_support import make_dataset, sd_request

    make_dataset(server.data_dir / "datasets" / "cats")
    plan = client.predict(request=sd_request("gc-lora", resolution=128), api_name="/train_plan")
    assert plan["steps"]["total_steps"] == 6 and plan["base_model"] == "atelier-demo-sd15"
    with pytest.raises(AppError, match="rank"):
        client.predict(request=sd_request("gc-lora", rank=0), api_name="/train_start")
    with pytest.raises(AppError, match="dataset"):
        client.predict(request=sd_request("gc-lora", dataset="datasets/none"), api_name="/train_plan")

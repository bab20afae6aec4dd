"""A1111's Extras, upscaler listings and interrogate over a real server, with the real `webuiapi` client
and the real gradio_client (img2img's Interrogate button). Upscalers: tiny random-weight 4x RRDBNets in
Real-ESRGAN's layout (.safetensors and a {"params_ema": …} .pth); face restoration: a random-weight network in
GFPGANv1.4's layout and a drawn face OpenCV's cascade finds; captions: the demo PaliGemma."""
from __future__ import annotations

import httpx
import numpy as np
import pytest
import webuiapi
from PIL import Image

from tests.api.conftest import assert_json_error, b64_of
from tests.conftest import link_model, make_data_dir, start_live_server
from tests.fixtures_models import save_demo_upscaler, schematic_face


@pytest.fixture(scope="module")
def server(tmp_path_factory, demo_checkpoint, demo_gfpgan):
    data = make_data_dir(tmp_path_factory.mktemp("extras-server"), demo_checkpoint)
    link_model(demo_gfpgan, data / "models" / "GFPGAN")
    save_demo_upscaler(data / "models" / "ESRGAN" / "tiny-x4.safetensors")
    save_demo_upscaler(data / "models" / "RealESRGAN" / "tiny-real.pth", "pth", seed=1)
    live = start_live_server(data)
    yield live
    live.stop()


@pytest.fixture
def api(server):
    return webuiapi.WebUIApi(baseurl=server.url + "/sdapi/v1")


def noise(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def test_webuiapi_extra_single_image_upscales_4x_with_a1111_info(api, server):
    r = api.extra_single_image(noise(40, 24), upscaler_1="tiny-x4", upscaling_resize=4)
    assert r.image.size == (160, 96)
    assert r.info == "Postprocess upscale by: 4, Postprocess upscaler: tiny-x4"
    assert r.image.info["parameters"] == r.info
    assert not (server.data_dir / "outputs" / "extras-images").exists(), "the API saves only when asked, as A1111"
    lanczos = api.extra_single_image(noise(40, 24), upscaler_1="Lanczos", upscaling_resize=4)
    assert np.abs(np.asarray(lanczos.image, dtype=int) - np.asarray(r.image, dtype=int)).mean() > 5  # the model ran


def test_webuiapi_extra_batch_images_with_upscaler_2_and_scale_to(api):
    images = [noise(30, 20, 1), noise(20, 20, 2)]
    r = api.extra_batch_images(images, name_list=["one", "two"], resize_mode=1, upscaling_resize_w=80,
                               upscaling_resize_h=60, upscaler_1="tiny-real", upscaler_2="tiny-x4",
                               extras_upscaler_2_visibility=0.3)
    assert [im.size for im in r.images] == [(80, 60), (80, 60)]
    assert "Postprocess upscaler 2: tiny-x4, Postprocess upscaler 2 visibility: 0.3" in r.info


def test_upscaler_listings_have_a1111s_shape(server):
    items = httpx.get(server.url + "/sdapi/v1/upscalers", timeout=30).json()
    assert [i["name"] for i in items] == ["None", "Lanczos", "Nearest", "tiny-x4", "tiny-real"]
    assert set(items[3]) == {"name", "model_name", "model_path", "model_url", "scale"}
    assert items[3]["model_name"] == "ESRGAN" and items[3]["model_path"].endswith("tiny-x4.safetensors")
    real = httpx.get(server.url + "/sdapi/v1/realesrgan-models", timeout=30).json()
    assert real == [{"name": "tiny-real", "path": items[4]["model_path"], "scale": 4}]


@pytest.mark.parametrize("body, field", [
    ({"upscaler_1": "no-such-model"}, "upscaler_1"),
    ({"upscaler_1": "tiny-x4", "gfpgan_visibility": 1.5}, "gfpgan_visibility"),
    ({"upscaler_1": "tiny-x4", "codeformer_visibility": 1}, "codeformer_visibility"),
    ({"upscaler_1": "None"}, "upscaler_1"),
    ({"upscaler_1": "None", "upscaler_2": "tiny-x4", "extras_upscaler_2_visibility": 1}, "upscaler_1"),
    ({"upscaler_1": "tiny-x4", "show_extras_results": False}, "show_extras_results"),
    ({"upscaler_1": "tiny-x4", "image": "bm90IGFuIGltYWdl"}, "image"),
    ({"upscaler_1": "tiny-x4", "upscaling_resize": 8, "image": "big"}, "upscaling_resize"),
])
def test_extras_refusals_name_the_field(server, body, field):
    image = b64_of(noise(2048, 8)) if body.get("image") == "big" else body.get("image", b64_of(noise(16, 16)))
    r = httpx.post(server.url + "/sdapi/v1/extra-single-image", json={**body, "image": image}, timeout=60)
    assert assert_json_error(r).get("field") == field, r.text


def test_hires_fix_with_an_upscaler_model_through_webuiapi(api):
    upscalers = [u["name"] for u in httpx.get(api.baseurl + "/upscalers", timeout=30).json()]
    assert "tiny-x4" in upscalers
    r = api.txt2img(prompt="a lighthouse", width=64, height=64, steps=2, seed=4, enable_hr=True, hr_scale=2,
                    hr_upscaler="tiny-x4", denoising_strength=0.3, hr_second_pass_steps=2)
    assert r.image.size == (128, 128)


def test_webuiapi_interrogate_is_the_vision_caption(api, server):
    image = noise(64, 64, 5)
    caption = api.interrogate(image).info  # model "clip", A1111's default: the studio's captioning model
    assert isinstance(caption, str)
    direct = httpx.post(server.url + "/atelier/v1/vision", json={"task": "caption", "image": b64_of(image)},
                        timeout=120).json()
    assert caption == direct["text"].strip()
    named = api.interrogate(image, model=direct["model"]).info
    assert named == caption
    refused = httpx.post(api.baseurl + "/interrogate", json={"image": b64_of(image), "model": "deepdanbooru"},
                         timeout=60)
    assert assert_json_error(refused)["field"] == "model"
    unknown = httpx.post(api.baseurl + "/interrogate", json={"image": b64_of(image), "model": "no-such-vlm"},
                         timeout=60)
    assert assert_json_error(unknown)["field"] == "model"


def test_img2img_interrogate_button_puts_the_caption_in_the_prompt(server, tmp_path):
    from gradio_client import Client, handle_file

    image = noise(64, 64, 6)
    path = tmp_path / "in.png"
    image.save(path)
    client = Client(server.url + "/", verbose=False)
    prompt = client.predict(handle_file(str(path)), api_name="/interrogate")
    direct = httpx.post(server.url + "/sdapi/v1/interrogate", json={"image": b64_of(image)}, timeout=120).json()
    assert prompt == direct["caption"]


def test_face_restorers_lists_gfpgan_and_extras_restores_the_face_through_webuiapi(api, server):
    assert httpx.get(server.url + "/sdapi/v1/face-restorers", timeout=30).json() == [
        {"name": "GFPGAN", "cmd_dir": str(server.data_dir / "models" / "GFPGAN")}]
    face = Image.new("RGB", (480, 240), (30, 90, 40))
    face.paste(schematic_face(200), (140, 20))
    r = api.extra_single_image(face, upscaler_1="Lanczos", upscaling_resize=1.5, gfpgan_visibility=0.8)
    assert r.image.size == (720, 360)
    assert r.info == "Postprocess upscale by: 1.5, Postprocess upscaler: Lanczos, GFPGAN visibility: 0.8"
    plain = api.extra_single_image(face, upscaler_1="Lanczos", upscaling_resize=1.5)
    changed = np.abs(np.asarray(r.image, dtype=int) - np.asarray(plain.image, dtype=int)).max(axis=2) > 0
    assert changed[140:200, 330:390].mean() > 0.9  # the middle of the face: restored
    assert not changed[:, :12].any() and not changed[:, -12:].any()  # the sides, outside the face's square: untouched


def test_restore_faces_in_txt2img_through_webuiapi_and_gradio_client_says_so_in_the_infotext(api, server):
    from gradio_client import Client

    r = api.txt2img(prompt="a portrait", steps=1, width=64, height=64, seed=3, restore_faces=True)
    assert "Face restoration: GFPGAN" in r.info["infotexts"][0]
    assert r.info["restore_faces"] is True and r.info["face_restoration_model"] == "GFPGAN"
    assert r.image.size == (64, 64)
    client = Client(server.url + "/", verbose=False)
    _, text, _ = client.predict(prompt="a portrait", steps=1, width=64, height=64, seed=3, restore_faces=True,
                                api_name="/txt2img")
    assert "Face restoration: GFPGAN" in text
    refused = httpx.post(api.baseurl + "/txt2img", json={"prompt": "a", "steps": 1, "width": 64, "height": 64,
                                                        "restore_faces": True, "override_settings": {
                                                            "face_restoration_model": "CodeFormer"}}, timeout=60)
    assert "spandrel-extra-arches" in assert_json_error(refused)["detail"]


def test_restore_faces_without_a_model_is_refused_naming_the_folder(plain_server):
    import webuiapi as client

    assert httpx.get(plain_server.url + "/sdapi/v1/face-restorers", timeout=30).json() == []
    r = httpx.post(plain_server.url + "/sdapi/v1/txt2img", json={"prompt": "a face", "steps": 1, "width": 64,
                                                                 "height": 64, "restore_faces": True}, timeout=60)
    body = assert_json_error(r)
    assert body["field"] == "restore_faces" and "models/GFPGAN" in body["detail"].replace("\\", "/")
    extras = httpx.post(plain_server.url + "/sdapi/v1/extra-single-image", json={
        "image": b64_of(schematic_face(64)), "upscaler_1": "None", "gfpgan_visibility": 1}, timeout=60)
    assert assert_json_error(extras)["field"] == "gfpgan_visibility"
    api = client.WebUIApi(baseurl=plain_server.url + "/sdapi/v1")
    assert api.txt2img(prompt="a face", steps=1, width=64, height=64, restore_faces=False).image.size == (64, 64)

"""Bad input gets a 4xx JSON error naming the field — never a 500 — and changes nothing; odd but
valid input is served. Hand-written cases for each kind of mistake, each checking the field named.
(The schema-driven battery over every endpoint and the hypothesis bodies: test_bad_input_openapi.py.)
One shared server (the session's plain_server); whatever a case could change is checked unchanged."""
from __future__ import annotations

import base64
import struct
import zlib

import httpx
import pytest
from PIL import Image

from tests.api.conftest import assert_json_error, b64_of, png, server_errors

SMALL = {"width": 64, "height": 64, "steps": 1}
VALID_IMAGE = b64_of(Image.new("RGB", (64, 64), (120, 30, 200)))
NOT_AN_IMAGE = base64.b64encode(b"hello, not a picture").decode()
TRAVERSALS = ["../../etc/passwd", "/etc/passwd", "..\\..\\windows\\win.ini", "a/../../b", "x\x00y", "", " ", "%2e%2e/x"]


def png_bomb_header(width: int = 100_000, height: int = 100_000) -> str:
    """A PNG whose header claims a huge size (a decompression bomb is refused before decoding)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    data = b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(ihdr)) + chunk + struct.pack(">I", zlib.crc32(chunk))
    return base64.b64encode(data).decode()


@pytest.fixture(scope="module")
def server(plain_server):
    return plain_server


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server.url + "/sdapi/v1", timeout=120) as c:
        before = c.get("/options").json()
        yield c
        assert c.get("/options").json() == before, "a refused request changed the settings"


TXT2IMG_BAD = [
    ({"steps": "ten"}, "steps"), ({"steps": -1}, "steps"), ({"steps": 10**9}, "steps"), ({"steps": 1.5}, "steps"),
    ({"width": 63}, "width"), ({"width": 0}, "width"), ({"width": 10**6}, "width"), ({"height": None, "width": []}, "width"),
    ({"cfg_scale": "high"}, "cfg_scale"), ({"cfg_scale": 1e308}, "cfg_scale"), ({"cfg_scale": -3}, "cfg_scale"),
    ({"seed": 2**70}, "seed"), ({"seed": -5}, "seed"), ({"batch_size": 0}, "batch_size"), ({"n_iter": 10**4}, "n_iter"),
    ({"prompt": 123}, "prompt"), ({"prompt": ["a"]}, "prompt"), ({"prompt": "x" * 100_001}, "prompt"),
    ({"negative_prompt": {"a": 1}}, "negative_prompt"), ({"styles": "not a list"}, "styles"),
    ({"styles": ["x"] * 1000}, "styles"), ({"override_settings": "x"}, "override_settings"),
    ({"denoising_strength": 2}, "denoising_strength"), ({"clip_skip": 0}, "clip_skip"),
    ({"subseed_strength": -1}, "subseed_strength"), ({"enable_hr": True, "hr_scale": 4, "width": 2048}, None),
    ({"enable_hr": "maybe"}, "enable_hr"), ({"sampler_name": 7}, "sampler_name"),
    ({"sampler_name": "no such sampler"}, "sampler_name"), ({"scheduler": "no such schedule"}, "scheduler"),
    ({"script_name": "Loopback"}, "script_name"), ({"script_name": "x/y/z plot"}, "script_args[1]"),
    ({"script_name": "x/y/z plot", "script_args": [4, "1, 500"]}, "script_args"),
    ({"script_args": [4, "1, 2"]}, "script_args"), ({"alwayson_scripts": {"ControlNet": {"args": []}}}, "alwayson_scripts"),
] + [({"sampler_name": t}, "sampler_name") for t in TRAVERSALS] + [
    ({"override_settings": {"sd_model_checkpoint": t}}, "override_settings.sd_model_checkpoint")
    for t in TRAVERSALS + ["no-such-model"] if t] + [  # "" means no override, as in A1111
    ({"override_settings": {"sd_model_checkpoint": 5}}, "override_settings.sd_model_checkpoint")]


@pytest.mark.parametrize("path", ["/txt2img", "/img2img"])
def test_generation_fields_out_of_range_or_of_the_wrong_type(client, path):
    for patch, field in TXT2IMG_BAD:
        body = {**SMALL, "init_images": [VALID_IMAGE], **patch}
        err = assert_json_error(client.post(path, json=body), case=patch)
        if field:
            assert err.get("field", "").startswith(field), (patch, err)


IMG2IMG_BAD = [
    ({}, "init_images"), ({"init_images": []}, "init_images"), ({"init_images": "abc"}, "init_images"),
    ({"init_images": ["not base64 !!"]}, "init_images"), ({"init_images": [NOT_AN_IMAGE]}, "init_images"),
    ({"init_images": [""]}, "init_images"), ({"init_images": [123]}, "init_images"),
    ({"init_images": [png_bomb_header()]}, "init_images"), ({"init_images": [VALID_IMAGE] * 9}, "init_images"),
    ({"init_images": ["data:image/png;base64,@@@"]}, "init_images"),
    ({"mask": "garbage"}, "mask"), ({"mask": NOT_AN_IMAGE}, "mask"), ({"mask": 5}, "mask"),
    ({"resize_mode": 7}, "resize_mode"), ({"inpainting_fill": 9}, "inpainting_fill"), ({"mask_blur": -1}, "mask_blur"),
    ({"inpaint_full_res_padding": 10**6}, "inpaint_full_res_padding"),
    ({"inpainting_mask_invert": 2}, "inpainting_mask_invert"), ({"denoising_strength": "x"}, "denoising_strength"),
]


def test_img2img_images_and_mask_fields(client):
    for patch, field in IMG2IMG_BAD:
        body = {**SMALL, "init_images": [VALID_IMAGE], **patch}
        if not patch:
            body.pop("init_images")
        err = assert_json_error(client.post("/img2img", json=body), case=patch)
        assert err.get("field", "").startswith(field), (str(patch)[:80], err)


def test_png_info_refuses_what_is_not_an_image(client):
    for body in [{}, {"image": ""}, {"image": 5}, {"image": "%%%"}, {"image": NOT_AN_IMAGE},
                 {"image": png_bomb_header()}, {"image": ["x"]}]:
        assert assert_json_error(client.post("/png-info", json=body))["field"] == "image"
    plain = client.post("/png-info", json={"image": VALID_IMAGE})
    assert plain.status_code == 200 and plain.json() == {"info": "", "items": {}, "parameters": {}}


OPTIONS_BAD = [({"sd_model_checkpoint": t}, "sd_model_checkpoint") for t in TRAVERSALS + ["no-such-model", 5, [1]]] + [
    ({"sd_vae": t}, "sd_vae") for t in TRAVERSALS[:5]] + [
    ({"outdir_txt2img_samples": t}, "outdir_txt2img_samples") for t in TRAVERSALS[:5] if "\\" not in t] + [
    ({"outdir_txt2img_samples": "../../escape"}, "outdir_txt2img_samples"),
    ({"outdir_img2img_samples": "/tmp/elsewhere"}, "outdir_img2img_samples"),
    ({"sd_vae": "../../x.safetensors"}, "sd_vae"), ({"sd_model_checkpoint": "name\x00.safetensors"}, "sd_model_checkpoint"),
    ({"outdir_img2img_samples": 5}, "outdir_img2img_samples"), ({"CLIP_stop_at_last_layers": 99}, "CLIP_stop_at_last_layers"),
    ({"CLIP_stop_at_last_layers": "x"}, "CLIP_stop_at_last_layers"), ({"memory_policy": "turbo"}, "memory_policy"),
    ({"show_progress_every_n_steps": -1}, "show_progress_every_n_steps"), ({"extensions": "x"}, "extensions"),
]


def test_options_refuse_bad_values_and_paths_and_change_nothing(client, server):
    before = client.get("/options").json()
    for patch, field in OPTIONS_BAD:
        err = assert_json_error(client.post("/options", json=patch), case=patch)
        assert err.get("field", "").startswith(field), (patch, err)
    assert client.get("/options").json() == before
    assert not (server.data_dir / "x").exists()


def test_queries_paths_and_methods(client):
    assert assert_json_error(client.get("/progress", params={"skip_current_image": "maybe"}))["field"] == "skip_current_image"
    for method, path in [("GET", "/nope"), ("GET", "/txt2img"), ("POST", "/sd-models"), ("DELETE", "/options"),
                         ("GET", "/%2e%2e/%2e%2e/etc/passwd"), ("GET", "/sd-models/..%2f..%2f..%2fetc%2fpasswd")]:
        assert_json_error(client.request(method, path), case=(method, path))


def test_odd_but_valid_text_is_served(client):
    # Unicode, right-to-left marks, NUL bytes and unbalanced brackets in a prompt are text, not an attack.
    for prompt in ["猫 🐱 \u202e reversed", "nul\x00byte", "(((a:1.5)))) [[b]"]:
        r = client.post("/txt2img", json={**SMALL, "prompt": prompt, "negative_prompt": prompt})
        assert r.status_code == 200, (prompt, r.status_code, r.text[:300])
        png(r.json()["images"][0])


@pytest.mark.parametrize("name", ["../../etc/passwd", "/etc/passwd", "..\\..\\windows\\win.ini", "a/../../b",
                                  "name\x00.safetensors", "%2e%2e%2f%2e%2e%2fetc%2fpasswd", "no-such-lora"])
def test_loras_in_the_prompt_that_cannot_be_used_are_refused_naming_the_prompt(client, name):
    # The README: a LoRA that cannot apply is refused by name — a tag is never silently dropped.
    r = client.post("/txt2img", json={**SMALL, "prompt": f"a fox <lora:{name}:1>"})
    err = assert_json_error(r, case=name)
    assert err["field"] == "prompt", err
    if name != "no-such-lora" and not name.startswith("%"):
        assert "no lora named" not in err["detail"].lower(), f"a path outside Lora/ must be refused as such: {err}"


def test_server_is_alive_and_logged_no_unexpected_error(client, server):
    # Runs last in this module: after everything above, a normal request still works.
    r = client.post("/txt2img", json={**SMALL, "prompt": "still here", "seed": 3})
    assert r.status_code == 200 and png(r.json()["images"][0]).size == (64, 64)
    assert not (server.data_dir / "x").exists() and not (server.data_dir.parent / "escape").exists()
    assert server_errors(server) == []

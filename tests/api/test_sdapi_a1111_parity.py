"""A1111 features over the API, with the `webuiapi` client as A1111 users call them: prompt editing and
alternation, styles (`styles` in requests, /prompt-styles, png-info's "Styles array"), tiling."""
from __future__ import annotations

import json

import httpx
import numpy as np
import pytest
import webuiapi

from tests.api.conftest import assert_json_error, start_server
from tests.support import rgb_pixels

STYLES = '\ufeffname,prompt,negative_prompt\r\nmoody,"dark, {prompt}, rain",sunny\r\nsharp,"sharp, detailed",blurry\r\n'


@pytest.fixture(scope="module")
def server(tmp_path_factory, demo_checkpoint):
    s = start_server(tmp_path_factory, demo_checkpoint)
    (s.data_dir / "styles.csv").write_bytes(STYLES.encode("utf-8"))  # read when it changes, no restart needed
    yield s
    s.stop()


@pytest.fixture
def api(server):
    return webuiapi.WebUIApi(baseurl=server.url + "/sdapi/v1", sampler="Euler", steps=6)


def gen(api, **kw):
    return api.txt2img(**{"width": 64, "height": 64, "steps": 6, "seed": 21, **kw})


def test_prompt_editing_and_alternation(api):
    a, b = gen(api, prompt="a red fox"), gen(api, prompt="a blue bird")
    edited = gen(api, prompt="[a red fox:a blue bird:0.5]")
    alternating = gen(api, prompt="[a red fox|a blue bird]")
    for r in (edited, alternating):
        assert not np.array_equal(rgb_pixels(r.image), rgb_pixels(a.image)) and not np.array_equal(rgb_pixels(r.image), rgb_pixels(b.image))
    assert edited.info["infotexts"][0].startswith("[a red fox:a blue bird:0.5]\n")  # as written
    assert edited.image.info["parameters"] == edited.info["infotexts"][0]
    assert api.png_info(edited.image).json["parameters"]["Prompt"] == "[a red fox:a blue bird:0.5]"
    assert np.array_equal(rgb_pixels(gen(api, prompt="[a red fox:a blue bird:6]").image), rgb_pixels(a.image))
    negative = gen(api, prompt="a red fox", negative_prompt="[blurry:grainy:2]")
    assert not np.array_equal(rgb_pixels(negative.image), rgb_pixels(a.image))


def test_styles_listed_applied_and_read_back(api, server):
    assert api.get_prompt_styles() == [
        {"name": "moody", "prompt": "dark, {prompt}, rain", "negative_prompt": "sunny"},
        {"name": "sharp", "prompt": "sharp, detailed", "negative_prompt": "blurry"},
    ]
    styled = gen(api, prompt="a red fox", negative_prompt="ugly", styles=["moody", "sharp"])
    text = styled.info["infotexts"][0]
    assert text.startswith("dark, a red fox, rain, sharp, detailed\nNegative prompt: ugly, sunny, blurry\n")
    assert styled.info["styles"] == ["moody", "sharp"] and styled.info["prompt"] == "a red fox"
    assert styled.info["all_prompts"] == ["dark, a red fox, rain, sharp, detailed"]
    assert styled.parameters["styles"] == ["moody", "sharp"] and styled.parameters["prompt"] == "a red fox"
    same = gen(api, prompt="dark, a red fox, rain, sharp, detailed", negative_prompt="ugly, sunny, blurry")
    assert np.array_equal(rgb_pixels(styled.image), rgb_pixels(same.image))
    parsed = api.png_info(styled.image).json["parameters"]
    assert parsed["Styles array"] == ["moody", "sharp"]
    assert (parsed["Prompt"], parsed["Negative prompt"]) == ("a red fox", "ugly")


def test_an_unknown_style_is_refused_naming_the_field(server):
    r = httpx.post(server.url + "/sdapi/v1/txt2img", timeout=60,
                   json={"prompt": "x", "steps": 2, "width": 64, "height": 64, "styles": ["moody", "nope"]})
    body = assert_json_error(r, 422, 422)
    assert body["field"] == "styles" and "nope" in body["detail"] and "moody" in body["detail"]
    r = httpx.post(server.url + "/sdapi/v1/txt2img", timeout=60, json={"prompt": "x", "styles": [3]})
    assert assert_json_error(r, 422, 422)["field"].startswith("styles")


def test_styles_file_edited_while_serving(server):
    path = server.data_dir / "styles.csv"
    path.write_bytes((STYLES + "late,late style,\r\n").encode("utf-8"))
    names = [s["name"] for s in httpx.get(server.url + "/sdapi/v1/prompt-styles", timeout=30).json()]
    assert names == ["moody", "sharp", "late"]
    r = httpx.post(server.url + "/sdapi/v1/txt2img", timeout=60,
                   json={"prompt": "x", "steps": 2, "width": 64, "height": 64, "styles": ["late"]})
    assert r.status_code == 200 and json.loads(r.json()["info"])["infotexts"][0].startswith("x, late style\n")


def test_tiling_acts_and_is_recorded(api):
    plain = gen(api, prompt="a stone wall texture")
    tiled = gen(api, prompt="a stone wall texture", tiling=True)
    assert not np.array_equal(rgb_pixels(tiled.image), rgb_pixels(plain.image))
    assert "Tiling: True" in tiled.info["infotexts"][0] and "Tiling" not in plain.info["infotexts"][0]
    assert tiled.parameters["tiling"] is True
    assert api.png_info(tiled.image).json["parameters"]["Tiling"] == "True"
    again = gen(api, prompt="a stone wall texture")
    assert np.array_equal(rgb_pixels(again.image), rgb_pixels(plain.image)), "the next job has no tiling left behind"
    rng = np.random.default_rng(1)
    from PIL import Image

    init = Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
    r = api.img2img(images=[init], prompt="moss", tiling=True, denoising_strength=0.5, width=64, height=64, steps=4)
    assert "Tiling: True" in r.info["infotexts"][0]


XYZ = ["x_type", "x_values", "x_values_dropdown", "y_type", "y_values", "y_values_dropdown", "z_type", "z_values",
       "z_values_dropdown", "draw_legend", "include_lone_images", "include_sub_grids", "no_fixed_seeds", "vary_seeds_x",
       "vary_seeds_y", "vary_seeds_z", "margin_size", "csv_mode"]


def xyz_args(**kw):
    """script_args as an A1111 1.7+ script sends them (indices into A1111's txt2img axis list)."""
    named = {"x_type": 4, "x_values": "2, 3", "x_values_dropdown": [], "y_type": 9, "y_values": "",
             "y_values_dropdown": ["Euler", "DDIM"], "z_type": 0, "z_values": "", "z_values_dropdown": [],
             "draw_legend": True, "include_lone_images": False, "include_sub_grids": False, "no_fixed_seeds": False,
             "vary_seeds_x": False, "vary_seeds_y": False, "vary_seeds_z": False, "margin_size": 0, "csv_mode": False}
    named.update(kw)
    return [named[k] for k in XYZ]


def test_xyz_plot_script_over_the_api(api, server):
    assert api.get_scripts() == {"txt2img": ["x/y/z plot"], "img2img": ["x/y/z plot"]}
    info = httpx.get(server.url + "/sdapi/v1/script-info", timeout=30).json()
    assert [a["label"] for a in info[0]["args"]] == XYZ and "Steps" in info[0]["args"][0]["choices"]
    r = gen(api, prompt="a red fox", script_name="x/y/z plot", script_args=xyz_args())  # Steps x Sampler (dropdown)
    assert len(r.images) == 1 and r.image.width > 2 * 64 and r.image.height > 2 * 64
    text = r.info["infotexts"][0]
    assert "Script: X/Y/Z plot, X Type: Steps, X Values: \"2, 3\", Y Type: Sampler" in text
    assert r.image.info["parameters"] == text
    lone = gen(api, prompt="a red fox", script_name="X/Y/Z plot", script_args=xyz_args(include_lone_images=True))
    assert len(lone.images) == 5 and len(lone.info["infotexts"]) == 5
    alone = gen(api, prompt="a red fox", steps=3, sampler_name="DDIM")  # the cell (steps 3, DDIM)
    assert np.array_equal(rgb_pixels(lone.images[4]), rgb_pixels(alone.image))
    assert "Steps: 3, Sampler: DDIM" in lone.info["infotexts"][4]


def test_xyz_refusals_name_the_field(server):
    base = {"prompt": "x", "steps": 2, "width": 64, "height": 64, "script_name": "x/y/z plot"}
    cases = [(xyz_args(x_type=13), "script_args[0]"), (xyz_args(x_values="2, 999"), "script_args"),
             (xyz_args(y_values_dropdown=["Euler", "Warp drive"]), "script_args")]
    for script_args, field in cases:
        r = httpx.post(server.url + "/sdapi/v1/txt2img", json={**base, "script_args": script_args}, timeout=60)
        assert assert_json_error(r, 422, 422)["field"] == field, r.text
    r = httpx.post(server.url + "/sdapi/v1/txt2img", json={**base, "script_name": "Loopback", "script_args": []}, timeout=60)
    assert assert_json_error(r, 422, 422)["field"] == "script_name"


def test_options_are_read_written_and_act(api, server):
    before = api.get_options()
    assert {k: before[k] for k in ("samples_format", "jpeg_quality", "send_seed", "send_size", "img2img_fix_steps")} == \
        {"samples_format": "png", "jpeg_quality": 80, "send_seed": True, "send_size": True, "img2img_fix_steps": False}
    api.set_options({"samples_format": "jpg", "jpeg_quality": 60, "send_seed": False, "send_size": False,
                     "img2img_fix_steps": True})
    try:
        after = api.get_options()
        assert (after["samples_format"], after["jpeg_quality"], after["send_seed"], after["send_size"],
                after["img2img_fix_steps"]) == ("jpg", 60, False, False, True)
        r = gen(api, prompt="a red fox", save_images=True)
        assert r.image.format == "JPEG"  # A1111's API answers in the samples_format too
        raw = httpx.post(server.url + "/sdapi/v1/txt2img", timeout=60,
                         json={"prompt": "a red fox", "steps": 2, "width": 64, "height": 64}).json()
        assert raw["images"][0].startswith("/9j/")  # JPEG's magic, base64
        read = httpx.post(server.url + "/sdapi/v1/png-info", json={"image": raw["images"][0]}, timeout=30).json()
        assert read["info"] == json.loads(raw["info"])["infotexts"][0]  # the infotext rides in EXIF
        saved = sorted((server.data_dir / "outputs" / "txt2img-images").rglob("*.jpg"))
        assert saved, "saved as .jpg"
        for bad in ({"samples_format": "avif"}, {"jpeg_quality": 101}, {"send_seed": "maybe"}):
            resp = httpx.post(server.url + "/sdapi/v1/options", json=bad, timeout=30)
            assert assert_json_error(resp, 422, 422)["field"] == next(iter(bad))
        assert api.get_options()["samples_format"] == "jpg", "a refused value changes nothing"
    finally:
        api.set_options({k: before[k] for k in ("samples_format", "jpeg_quality", "send_seed", "send_size",
                                                "img2img_fix_steps")})

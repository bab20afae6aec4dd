"""AUTOMATIC1111 clients work unchanged: the official `webuiapi` package and plain HTTP,
against a real server holding two checkpoints and a LoRA (the session's two_model_server)."""
from __future__ import annotations

import json
import shutil
import time

import httpx
import numpy as np
import pytest
import webuiapi
from PIL import Image, ImageDraw

from modules.models.demo import DEMO_NAME
from tests.api.conftest import SECOND, png
from tests.conftest import STYLE_LORA
from tests.support import rgb_pixels


@pytest.fixture(scope="module")
def server(two_model_server):
    return two_model_server


@pytest.fixture
def api(server):
    return webuiapi.WebUIApi(baseurl=server.url + "/sdapi/v1", sampler="Euler a", steps=3)


def gen(api, **kw):
    args = {"prompt": "a red fox", "width": 64, "height": 64, "steps": 3, "seed": 5, **kw}
    return api.txt2img(**args)


def title_of(api, stem: str) -> str:
    return next(t for t in api.util_get_model_names() if t.startswith(stem))


def test_webuiapi_txt2img_returns_png_with_infotext_and_a1111_info(api):
    r = gen(api, seed=7, negative_prompt="blurry")
    assert r.image.size == (64, 64)
    assert isinstance(r.info, dict), "info must be a JSON string, as A1111 returns it"
    assert r.info["all_seeds"] == [7] and r.info["seed"] == 7
    text = r.info["infotexts"][0]
    assert text.startswith("a red fox\nNegative prompt: blurry\n") and "Seed: 7" in text and "Steps: 3" in text
    assert r.image.info["parameters"] == text, "the PNG carries the infotext"
    assert r.parameters["prompt"] == "a red fox" and r.parameters["steps"] == 3
    again = gen(api, seed=7, negative_prompt="blurry")
    assert (rgb_pixels(again.image) == rgb_pixels(r.image)).all(), "same seed, same image"


def test_batch_returns_every_image_with_its_seed(api):
    r = gen(api, seed=100, batch_size=2, n_iter=2)
    assert len(r.images) == 4
    assert r.info["all_seeds"] == [100, 101, 102, 103]
    assert [f"Seed: {s}" in t for s, t in zip(r.info["all_seeds"], r.info["infotexts"])] == [True] * 4


def test_img2img_and_inpaint_with_mask(api):
    rng = np.random.default_rng(0)
    init = Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
    r = api.img2img(images=[init], prompt="a fox", denoising_strength=0.6, width=64, height=64, steps=4, seed=3)
    assert r.image.size == (64, 64) and r.info["all_seeds"] == [3]
    assert "Denoising strength: 0.6" in r.info["infotexts"][0]
    assert r.parameters["init_images"] is None, "images are echoed only with include_init_images"

    mask = Image.new("L", (64, 64), 0)
    ImageDraw.Draw(mask).rectangle((0, 0, 31, 63), fill=255)  # repaint the left half
    r = api.img2img(images=[init], mask_image=mask, inpainting_fill=1, inpaint_full_res=False, mask_blur=0,
                    denoising_strength=1.0, width=64, height=64, steps=4, seed=3)
    out, src = rgb_pixels(r.image), rgb_pixels(init)
    # A lossless PNG both ways and no blur: every pixel outside the mask is the original's, exactly.
    assert np.array_equal(out[:, 32:], src[:, 32:]), "pixels outside the mask must stay exactly as they were"
    assert np.abs(out[:, :32] - src[:, :32]).mean() > 5, "pixels inside the mask must be repainted"


def test_png_info_reads_the_infotext_back(api):
    r = gen(api, seed=11)
    res = api.png_info(r.image)
    assert res.info == r.info["infotexts"][0]
    assert res.json["parameters"]["Seed"] == "11" and res.json["parameters"]["Prompt"] == "a red fox"


def test_switch_checkpoint_via_options_and_back(api, server):
    demo, second = title_of(api, DEMO_NAME), title_of(api, SECOND)
    api.util_set_model(demo)
    first = gen(api)
    assert f"Model: {DEMO_NAME}" in first.info["infotexts"][0]

    api.util_set_model(second)  # webuiapi: POST /options {"sd_model_checkpoint": title}
    assert api.util_get_current_model().startswith(SECOND)
    other = gen(api)
    assert f"Model: {SECOND}" in other.info["infotexts"][0]
    assert (rgb_pixels(other.image) != rgb_pixels(first.image)).any(), "another checkpoint makes another image"
    assert json.loads((server.data_dir / "config.json").read_text())["sd_model_checkpoint"] == SECOND

    api.set_options({"sd_model_checkpoint": demo})
    assert api.util_get_current_model().startswith(DEMO_NAME)
    back = gen(api)
    assert f"Model: {DEMO_NAME}" in back.info["infotexts"][0]
    assert (rgb_pixels(back.image) == rgb_pixels(first.image)).all(), "back on the first checkpoint: the same image"
    api.set_options({"sd_model_checkpoint": SECOND})
    assert (rgb_pixels(gen(api).image) == rgb_pixels(other.image)).all()
    api.set_options({"sd_model_checkpoint": DEMO_NAME})  # by plain name as well as by title


def test_override_settings_uses_a_checkpoint_for_one_request(api):
    api.set_options({"sd_model_checkpoint": DEMO_NAME})
    base = gen(api)
    other = gen(api, override_settings={"sd_model_checkpoint": SECOND})
    assert f"Model: {SECOND}" in other.info["infotexts"][0]
    assert (rgb_pixels(other.image) != rgb_pixels(base.image)).any()
    after = gen(api)
    assert f"Model: {DEMO_NAME}" in after.info["infotexts"][0], "the override lasts one request"
    assert (rgb_pixels(after.image) == rgb_pixels(base.image)).all()


def test_listings_have_a1111_shapes(server, api):
    c = httpx.Client(base_url=server.url + "/sdapi/v1", timeout=30)
    models = c.get("/sd-models").json()
    assert {m["model_name"] for m in models} >= {DEMO_NAME, SECOND}
    for m in models:
        assert set(m) == {"title", "model_name", "hash", "sha256", "filename", "config"}
    samplers = c.get("/samplers").json()
    assert "Euler a" in [s["name"] for s in samplers] and all(set(s) == {"name", "aliases", "options"} for s in samplers)
    assert "karras" in api.util_get_scheduler_names()
    assert all({"name", "label"} <= set(s) for s in c.get("/schedulers").json())
    assert all("name" in u for u in c.get("/upscalers").json())
    assert {"name": "Latent"} in c.get("/latent-upscale-modes").json()
    assert isinstance(c.get("/loras").json(), list) and isinstance(c.get("/sd-vae").json(), list)
    assert set(c.get("/embeddings").json()) == {"loaded", "skipped"}
    options = api.get_options()
    assert isinstance(options["sd_model_checkpoint"], str) and "CLIP_stop_at_last_layers" in options
    flags = api.get_cmd_flags()
    assert flags["port"] == server.port and flags["api"] is True
    mem = api.get_memory()
    assert {"free", "used", "total"} <= set(mem["ram"]) and ("error" in mem["cuda"] or "system" in mem["cuda"])
    progress = api.get_progress()
    assert progress["progress"] == 0 and progress["state"]["job_count"] == 0
    assert c.get("/scripts").json() == {"txt2img": ["x/y/z plot"], "img2img": ["x/y/z plot"]}


def test_embeddings_lists_what_the_checkpoint_took_and_what_it_refused(server, api, tmp_path):
    import torch
    from safetensors.torch import save_file

    from tests.support import save_malicious_pickle

    c = httpx.Client(base_url=server.url + "/sdapi/v1", timeout=30)
    folder = server.data_dir / "models" / "embeddings"
    folder.mkdir(parents=True, exist_ok=True)
    good = folder / "api-style.safetensors"
    save_file({"emb_params": torch.randn(2, 32)}, str(good))  # two vectors for the demo's 32-wide text encoder
    marker = tmp_path / "payload-ran"
    bad = save_malicious_pickle(folder / "api-payload.pt", marker,
                                {"string_to_param": {"*": torch.randn(1, 32)}, "name": "api-payload"})
    try:
        assert c.post("/refresh-embeddings").status_code == 200
        gen(api)  # a generation syncs the checkpoint's embeddings
        listing = c.get("/embeddings").json()
        assert listing["loaded"]["api-style"]["vectors"] == 2 and listing["loaded"]["api-style"]["shape"] == 32
        assert "api-payload" not in listing["loaded"]
        assert "refused" in listing["skipped"]["api-payload"]["error"] and not marker.exists()
    finally:
        good.unlink()
        bad.unlink()
        c.post("/refresh-embeddings")
    after = c.get("/embeddings").json()
    assert "api-style" not in after["loaded"] and "api-payload" not in after["skipped"]  # removed files go


def test_refresh_picks_up_new_checkpoints_and_loras(server, demo_checkpoint):
    from safetensors.numpy import save_file

    c = httpx.Client(base_url=server.url + "/sdapi/v1", timeout=30)
    shutil.copytree(demo_checkpoint, server.data_dir / "models" / "Stable-diffusion" / "zz-late-arrival")
    assert c.post("/refresh-checkpoints").status_code == 200
    assert "zz-late-arrival" in [m["model_name"] for m in c.get("/sd-models").json()]
    save_file({"w": np.zeros(2, dtype=np.float32)}, str(server.data_dir / "models" / "Lora" / "tiny.safetensors"),
              metadata={"ss_output_name": "tiny"})
    assert c.post("/refresh-loras").status_code == 200
    loras = {x["name"]: x for x in c.get("/loras").json()}
    assert set(loras) == {STYLE_LORA, "tiny"} and loras["tiny"]["path"].endswith("tiny.safetensors")
    assert all(set(x) == {"name", "alias", "path", "metadata"} for x in loras.values())


def test_raw_http_png_response_and_save_images_default(server):
    # A1111's API does not save unless save_images is true; the info field is a JSON *string*.
    before = sorted(server.data_dir.joinpath("outputs").rglob("*.png"))
    r = httpx.post(server.url + "/sdapi/v1/txt2img", json={"prompt": "x", "steps": 2, "width": 64, "height": 64}, timeout=60)
    assert r.status_code == 200 and isinstance(r.json()["info"], str)
    assert png(r.json()["images"][0]).size == (64, 64)
    assert sorted(server.data_dir.joinpath("outputs").rglob("*.png")) == before
    r = httpx.post(server.url + "/sdapi/v1/txt2img", timeout=60,
                   json={"prompt": "x", "steps": 2, "width": 64, "height": 64, "save_images": True, "send_images": False})
    assert r.status_code == 200 and r.json()["images"] == []
    assert len(sorted(server.data_dir.joinpath("outputs").rglob("*.png"))) == len(before) + 1


def test_switching_during_a_generation_waits_for_it(server):
    # The switch goes through the queue: the running job finishes on the model it started with.
    from concurrent.futures import ThreadPoolExecutor

    c = httpx.Client(base_url=server.url + "/sdapi/v1", timeout=120)
    assert c.post("/options", json={"sd_model_checkpoint": DEMO_NAME}).status_code == 200
    with ThreadPoolExecutor(2) as pool:
        running = pool.submit(c.post, "/txt2img", json={"prompt": "slow", "steps": 25, "width": 64, "height": 64})
        deadline = time.monotonic() + 60
        while c.get("/progress").json()["state"]["sampling_step"] < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        switch = pool.submit(c.post, "/options", json={"sd_model_checkpoint": SECOND})
        first = running.result()
        assert switch.result().status_code == 200
    assert f"Model: {DEMO_NAME}" in json.loads(first.json()["info"])["infotexts"][0]
    after = c.post("/txt2img", json={"prompt": "x", "steps": 2, "width": 64, "height": 64}).json()
    assert f"Model: {SECOND}" in json.loads(after["info"])["infotexts"][0]
    c.post("/options", json={"sd_model_checkpoint": DEMO_NAME})


def test_prompt_lora_over_the_api_changes_the_image_and_names_its_hash(server):
    c = httpx.Client(base_url=server.url + "/sdapi/v1", timeout=120)
    assert c.post("/options", json={"sd_model_checkpoint": DEMO_NAME}).status_code == 200
    body = {"prompt": "a red cat", "steps": 3, "width": 64, "height": 64, "seed": 21, "sampler_name": "Euler"}
    plain = c.post("/txt2img", json=body).json()
    styled = c.post("/txt2img", json={**body, "prompt": f"a red cat <lora:{STYLE_LORA}:1>"}).json()
    assert not np.array_equal(rgb_pixels(png(styled["images"][0])), rgb_pixels(png(plain["images"][0])))
    lora = next(x for x in c.get("/loras").json() if x["name"] == STYLE_LORA)
    text = json.loads(styled["info"])["infotexts"][0]
    assert f"Lora hashes: \"{STYLE_LORA}: " in text, text
    again = c.post("/txt2img", json=body).json()
    assert np.array_equal(rgb_pixels(png(again["images"][0])), rgb_pixels(png(plain["images"][0]))), \
        "the LoRA must be gone from the next generation"
    assert lora["path"].endswith(f"{STYLE_LORA}.safetensors")

"""Over the A1111 API of a real server: two checkpoints swapped back and forth with POST /options,
the right one answering each time, and a LoRA from the prompt recorded in the infotext."""
from __future__ import annotations

import base64
import json

import httpx
import pytest

SECOND = "second-sd15"


@pytest.fixture(scope="module")
def server(tmp_path_factory, demo_checkpoint):
    from modules.models.demo import save_demo_checkpoint
    from tests.fixtures_models import save_demo_lora
    from tests.conftest import LiveServer, make_data_dir

    data = make_data_dir(tmp_path_factory.mktemp("api-swap"), demo_checkpoint)
    save_demo_checkpoint(data / "models" / "Stable-diffusion" / SECOND, seed=1)
    save_demo_lora(data / "models" / "Lora" / "style.safetensors", seed=2)
    s = LiveServer(data).wait_ready()
    yield s
    s.stop()


def _gen(server, prompt="a red cat"):
    body = {"prompt": prompt, "steps": 3, "width": 64, "height": 64, "seed": 21, "sampler_name": "Euler"}
    r = httpx.post(server.url + "/sdapi/v1/txt2img", json=body, timeout=180)
    assert r.status_code == 200, r.text[:400]
    out = r.json()
    return base64.b64decode(out["images"][0]), json.loads(out["info"])


def _switch(server, name):
    r = httpx.post(server.url + "/sdapi/v1/options", json={"sd_model_checkpoint": name}, timeout=180)
    assert r.status_code == 200, r.text[:400]


def test_two_checkpoints_swapped_back_and_forth_over_the_api(server):
    from io import BytesIO

    import numpy as np
    from PIL import Image

    def pixels(png):
        return np.asarray(Image.open(BytesIO(png)).convert("RGB"))

    _switch(server, "atelier-demo-sd15")
    first, info = _gen(server)
    assert info["sd_model_name"] == "atelier-demo-sd15"
    answers = []
    for name in (SECOND, "atelier-demo-sd15", SECOND, "atelier-demo-sd15"):
        _switch(server, name)
        assert httpx.get(server.url + "/sdapi/v1/options", timeout=30).json()["sd_model_checkpoint"].startswith(name)
        png, info = _gen(server)
        assert info["sd_model_name"] == name
        answers.append(pixels(png))
    assert np.array_equal(answers[1], pixels(first)) and np.array_equal(answers[3], pixels(first))
    assert np.array_equal(answers[0], answers[2]) and not np.array_equal(answers[0], answers[1])


def test_prompt_lora_over_the_api_changes_the_image_and_names_its_hash(server):
    _switch(server, "atelier-demo-sd15")
    plain, _ = _gen(server)
    styled, info = _gen(server, "a red cat <lora:style:1>")
    assert styled != plain
    loras = httpx.get(server.url + "/sdapi/v1/loras", timeout=30).json()
    assert [item["name"] for item in loras] == ["style"]
    assert "Lora hashes" in info["infotexts"][0] and "style:" in info["infotexts"][0]
    again, _ = _gen(server)
    assert again == plain, "the LoRA must be gone from the next generation"

"""A PEFT adapter made for the demo PaliGemma (as the Train tab's paligemma_lora writes one) on a real server:
listed under its model by GET /atelier/v1/vision/tasks, chosen in the Vision tab's Adapter field through
the real gradio_client and in POST /atelier/v1/vision, it changes the answer; without it the base answers;
an adapter that does not exist is a 4xx naming `adapter`."""
from __future__ import annotations

import json

import httpx
import pytest

from modules.models.demo_lm import DEMO_PALIGEMMA_NAME
from tests.api.conftest import assert_json_error, b64_of
from tests.conftest import make_data_dir, start_live_server
from tests.fixtures_models import save_demo_paligemma_adapter

ADAPTER = "shapes-test"
TIMEOUT = 180


@pytest.fixture(scope="module")
def server(tmp_path_factory, demo_checkpoint, demo_language_models):
    data = make_data_dir(tmp_path_factory.mktemp("vision-adapter"), demo_checkpoint)
    save_demo_paligemma_adapter(data / "models" / "VLM" / DEMO_PALIGEMMA_NAME, data / "models" / "LLM-loras" / ADAPTER,
                                DEMO_PALIGEMMA_NAME)
    s = start_live_server(data)
    yield s
    s.stop()


@pytest.fixture(scope="module")
def image_file(tmp_path_factory):
    from PIL import Image, ImageDraw

    path = tmp_path_factory.mktemp("vision-adapter-image") / "shape.png"
    image = Image.new("RGB", (80, 60), (240, 240, 240))
    ImageDraw.Draw(image).rectangle([10, 10, 60, 50], fill=(200, 30, 30))
    image.save(path)
    return path


def test_the_tasks_listing_offers_the_adapter_under_its_model(server):
    tasks = httpx.get(server.url + "/atelier/v1/vision/tasks", timeout=30).json()["tasks"]
    raw = next(t for t in tasks if t["name"] == "raw")
    assert raw["adapters"][DEMO_PALIGEMMA_NAME] == [ADAPTER]


def test_choosing_the_adapter_in_the_vision_tab_changes_the_answer(server, image_file):
    from gradio_client import Client, handle_file

    client = Client(server.url + "/", verbose=False)

    def caption(adapter: str) -> dict:
        out = client.predict(handle_file(str(image_file)), "raw", DEMO_PALIGEMMA_NAME, "", "", "caption en", "en", 8,
                             adapter, api_name="/vision")
        return json.loads(out[7])

    base, tuned, again = caption(""), caption(ADAPTER), caption("")
    assert tuned["adapter"] == ADAPTER and "adapter" not in base
    assert tuned["text"] != base["text"], "the adapter changed nothing"
    assert again["text"] == base["text"], "without the adapter the base model answers again"


def test_the_rest_api_takes_the_adapter_and_refuses_an_unknown_one(server, image_file):
    from PIL import Image

    body = {"task": "raw", "prompt": "caption en", "model": DEMO_PALIGEMMA_NAME, "max_new_tokens": 8,
            "image": b64_of(Image.open(image_file))}
    tuned = httpx.post(server.url + "/atelier/v1/vision", json={**body, "adapter": ADAPTER}, timeout=TIMEOUT)
    assert tuned.status_code == 200 and tuned.json()["adapter"] == ADAPTER
    refused = httpx.post(server.url + "/atelier/v1/vision", json={**body, "adapter": "no-such"}, timeout=TIMEOUT)
    assert assert_json_error(refused).get("field") == "adapter"

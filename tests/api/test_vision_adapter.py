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

ADAPTER = "shapes-test"
TIMEOUT = 180


def _write_adapter(base_folder, out) -> None:
    """A LoRA on the language model's attention with random (not zero) B matrices, so it changes the output."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import PaliGemmaForConditionalGeneration

    torch.manual_seed(0)
    model = PaliGemmaForConditionalGeneration.from_pretrained(str(base_folder), local_files_only=True)
    config = LoraConfig(r=4, lora_alpha=64, init_lora_weights=False, task_type="CAUSAL_LM",
                        target_modules=r"^model\.language_model\.layers\.\d+\.self_attn\.(q|v)_proj$")
    get_peft_model(model, config).save_pretrained(str(out))
    adapter_config = json.loads((out / "adapter_config.json").read_text())
    adapter_config["base_model_name_or_path"] = DEMO_PALIGEMMA_NAME
    (out / "adapter_config.json").write_text(json.dumps(adapter_config))


@pytest.fixture(scope="module")
def server(tmp_path_factory, demo_checkpoint, demo_language_models):
    data = make_data_dir(tmp_path_factory.mktemp("vision-adapter"), demo_checkpoint)
    _write_adapter(data / "models" / "VLM" / DEMO_PALIGEMMA_NAME, data / "models" / "LLM-loras" / ADAPTER)
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

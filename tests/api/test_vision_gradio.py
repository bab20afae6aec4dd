"""The Vision tab's own event, driven with the real gradio_client as a Gradio user scripts it:
every PaliGemma task runs end to end on the demo model through the UI's path."""
from __future__ import annotations

import json

import pytest

TASKS = [
    ("caption", {}),
    ("describe", {}),
    ("ocr", {}),
    ("answer", {"question": "what colour is it?"}),
    ("detect", {"objects": "cat ; dog"}),
    ("segment", {"objects": "cat"}),
    ("raw", {"prompt": "caption es"}),
]


@pytest.fixture(scope="module")
def client(plain_server):
    from gradio_client import Client

    return Client(plain_server.url + "/", verbose=False)


@pytest.fixture(scope="module")
def image_file(tmp_path_factory):
    from PIL import Image

    path = tmp_path_factory.mktemp("vision-image") / "square.png"
    Image.new("RGB", (80, 60), (30, 160, 90)).save(path)
    return str(path)


@pytest.mark.parametrize("task, fields", TASKS, ids=[t for t, _ in TASKS])
def test_every_paligemma_task_runs_through_the_vision_tab(client, image_file, task, fields):
    from gradio_client import handle_file

    out = client.predict(handle_file(image_file), task, "atelier-demo-paligemma", fields.get("objects", ""),
                         fields.get("question", ""), fields.get("prompt", ""), "en", 0, api_name="/vision")
    overlay, text, _shown, _table, _send, _png, _json_file, shown_json = out[:8]
    result = json.loads(shown_json)
    assert result["task"] == task and result["model"] == "atelier-demo-paligemma"
    assert (result["width"], result["height"]) == (80, 60)
    assert result["text"] == text
    expected_prompt = {"caption": "caption en", "describe": "describe en", "ocr": "ocr",
                       "answer": "answer en what colour is it?", "detect": "detect cat ; dog",
                       "segment": "segment cat", "raw": "caption es"}[task]
    assert result["prompt"] == expected_prompt
    from PIL import Image

    with Image.open(overlay) as drawn:
        assert drawn.size == (80, 60)


def test_a_bad_request_from_the_tab_is_an_error_naming_the_problem(client, image_file):
    from gradio_client import handle_file

    with pytest.raises(Exception) as err:
        client.predict(handle_file(image_file), "detect", "atelier-demo-paligemma", "", "", "", "en", 0,
                       api_name="/vision")
    assert "object" in str(err.value)

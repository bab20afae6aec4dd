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


def test_the_video_section_captions_a_clip_through_the_public_vision_video(client, tmp_path):
    """/vision_video as a script calls it: a clip captioned by the demo PaliGemma, the timeline back."""
    from gradio_client import handle_file

    from tests.video_support import rectangle_video

    (tmp_path / "clip.mp4").write_bytes(rectangle_video(6, fps=6, size=(48, 32)))
    out = client.predict(handle_file(str(tmp_path / "clip.mp4")), "", "caption",
                         "atelier-demo-paligemma", "bytetrack", 0.1, 0.7, 640, 30, 0.8, 1, 0, 0, 900, 2, "", "en",
                         api_name="/vision_video")
    _progress, video, summary, _tracks, _counts, captions, _description = out
    assert video is None and "2 frames in" in summary
    assert [row[1] for row in captions["data"]] == [2, 5], "the first frames at 0.25 s and 0.75 s (6 fps)"

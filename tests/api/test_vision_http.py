"""POST /atelier/v1/vision and GET /atelier/v1/vision/tasks on a real server (`python -m webui`) with the
demo PaliGemma and Gemma 3: every task answers the JSON shape through the job queue, the overlay
comes back as a PNG of the image's size, and bad input gets a 4xx naming the field."""
from __future__ import annotations

import json

import httpx
import pytest

from tests.conftest import wait_until
from tests.api.conftest import assert_json_error, b64_of, png, server_errors, start_server

URL = "/atelier/v1/vision"
TIMEOUT = 180
KEYS = {"model", "task", "prompt", "text", "width", "height", "objects", "invalid"}


@pytest.fixture(scope="module")
def server(tmp_path_factory, demo_checkpoint):
    s = start_server(tmp_path_factory, demo_checkpoint)
    yield s
    s.stop()


def picture(w=90, h=60):
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (w, h), (240, 240, 240))
    ImageDraw.Draw(image).rectangle([10, 10, 50, 40], fill=(30, 30, 200))
    return image


def post(server, body: dict, timeout: float = TIMEOUT) -> httpx.Response:
    return httpx.post(server.url + URL, json=body, timeout=timeout)


@pytest.mark.parametrize("body", [
    {"task": "caption"}, {"task": "describe", "language": "fr"}, {"task": "ocr"},
    {"task": "answer", "question": "how many squares?"}, {"task": "detect", "objects": "square ; circle"},
    {"task": "segment", "objects": ["square"]}, {"task": "raw", "prompt": "caption en"},
    {"task": "question", "question": "what is this?"},
], ids=lambda b: b["task"])
def test_every_task_answers_the_json_shape_with_the_overlay(server, body):
    image = picture()
    r = post(server, {**body, "image": "data:image/png;base64," + b64_of(image), "max_new_tokens": 6,
                      "overlay": True})
    assert r.status_code == 200, r.text[:500]
    out = r.json()
    assert KEYS <= set(out) and out["task"] == body["task"]
    assert (out["width"], out["height"]) == image.size
    assert png(out["overlay"]).size == image.size
    for obj in out["objects"]:
        assert {"label", "box", "box_normalized", "score", "mask"} <= set(obj)


def test_overlay_only_when_asked(server):
    r = post(server, {"task": "caption", "image": b64_of(picture()), "max_new_tokens": 2})
    assert r.status_code == 200, r.text[:300]
    assert "overlay" not in r.json()


def test_tasks_list_the_models_that_run_them(server):
    r = httpx.get(server.url + URL + "/tasks", timeout=60)
    assert r.status_code == 200, r.text[:300]
    tasks = {t["name"]: t for t in r.json()["tasks"]}
    assert tasks["detect"]["models"] == ["atelier-demo-paligemma"]
    assert tasks["question"]["models"] == ["atelier-demo-gemma3"]
    assert tasks["segment"]["ready"] is True and tasks["caption"]["owner"] == "builtin"


def test_bad_input_is_a_4xx_naming_the_field(server):
    from PIL import Image

    good = b64_of(picture())
    cases = [
        ({"task": "caption", "image": "bm90IGFuIGltYWdl"}, "image"),
        ({"task": "caption", "image": b64_of(Image.new("1", (5000, 4000)))}, "image"),
        ({"task": "caption"}, "image"),
        ({"task": "teleport", "image": good}, "task"),
        ({"task": "question", "question": "hi", "model": "atelier-demo-paligemma", "image": good}, "task"),
        ({"task": "caption", "model": "atelier-demo-gemma3", "image": good}, "task"),
        ({"task": "detect", "image": good}, "objects"),
        ({"task": "detect", "objects": [], "image": good}, "objects"),
        ({"task": "caption", "model": "no-such-model", "image": good}, "model"),
        ({"task": "caption", "language": "English!", "image": good}, "language"),
        ({"task": "caption", "max_new_tokens": 0, "image": good}, "max_new_tokens"),
        ({"task": "caption", "image": good, "surprise": 1}, "surprise"),
    ]
    for body, field in cases:
        body_err = assert_json_error(post(server, body, timeout=60), case=body)
        assert body_err.get("field") == field, (body.get("task"), field, body_err)
    assert_json_error(httpx.post(server.url + URL, content=b"[1, 2]", timeout=30))
    assert server_errors(server) == []


def test_segment_without_the_vq_vae_file_is_a_4xx_saying_where_to_put_it(server):
    decoder = server.data_dir / "models" / "VLM" / "vae-oid.npz"
    kept = decoder.read_bytes()
    decoder.unlink()
    try:
        r = post(server, {"task": "segment", "objects": "square", "image": b64_of(picture())}, timeout=60)
        body = assert_json_error(r)
        assert body["field"] == "task" and "vae-oid.npz" in body["detail"] and "models/VLM" in body["detail"]
        listed = {t["name"]: t for t in httpx.get(server.url + URL + "/tasks", timeout=60).json()["tasks"]}
        assert listed["segment"]["ready"] is False and "vae-oid.npz" in listed["segment"]["problem"]
    finally:
        decoder.write_bytes(kept)


# -- POST /atelier/v1/vision/batch -------------------------------------------------------------

def batch(server, body: dict) -> dict:
    """Submit a batch, follow its job to the end (GET /atelier/v1/jobs/{id}); → the job's JSON."""
    r = httpx.post(server.url + URL + "/batch", json=body, timeout=60)
    assert r.status_code == 200, r.text[:500]
    started = r.json()
    assert started["kind"] == "vision_batch" and started["id"]

    def finished():
        job = httpx.get(f"{server.url}/atelier/v1/jobs/{started['id']}", timeout=30).json()
        return job if job["state"] not in ("queued", "running") else None

    job = wait_until(finished, TIMEOUT, "the batch to end", interval=0.2)
    assert job["state"] == "done", job
    return {"started": started, **job}


def test_a_batch_of_uploads_is_a_job_whose_result_has_every_outcome_and_the_jsonl(server):
    from PIL import Image

    images = [b64_of(picture()), "bm90IGFuIGltYWdl", "data:image/png;base64," + b64_of(picture(64, 48))]
    job = batch(server, {"task": "caption", "images": images, "names": ["one.png", "broken.png", "three.png"],
                         "max_new_tokens": 4})
    assert job["started"]["images"] == 3 and (job["step"], job["total"]) == (3, 3)
    result = job["result"]
    assert (result["total"], result["done"], result["failed"], result["interrupted"]) == (3, 2, 1, False)
    one, broken, three = result["items"]
    assert broken["source"] == "broken.png" and "not a readable image" in broken["error"]
    for item, size in ((one, (90, 60)), (three, (64, 48))):
        assert KEYS <= set(item) and item["task"] == "caption" and (item["width"], item["height"]) == size
        with Image.open(server.data_dir / "outputs" / item["overlay"]) as overlay:
            assert overlay.size == size
    lines = [json.loads(line) for line in (server.data_dir / "outputs" / result["jsonl"]).read_text().splitlines()]
    assert lines == result["items"], "the JSONL holds the same outcomes, in order"


def test_a_batch_of_a_folder_without_overlays_writes_only_the_jsonl(server):
    folder = server.data_dir / "batch-in"
    folder.mkdir(exist_ok=True)
    picture().save(folder / "b.png")
    picture(40, 40).save(folder / "a.jpg")
    job = batch(server, {"task": "detect", "objects": "square", "folder": "batch-in", "overlay": False,
                         "max_new_tokens": 4})
    result = job["result"]
    assert job["started"]["images"] == 2 and [i["source"] for i in result["items"]] == ["a.jpg", "b.png"]
    assert result["done"] == 2 and all(i["overlay"] is None and "objects" in i for i in result["items"])
    assert (server.data_dir / "outputs" / result["jsonl"]).is_file()


def test_a_bad_batch_is_a_4xx_naming_the_field(server):
    good = b64_of(picture())
    (server.data_dir / "empty-folder").mkdir(exist_ok=True)
    cases = [
        ({"task": "caption"}, "images"),
        ({"task": "caption", "images": [good], "folder": "batch-in"}, "images"),
        ({"task": "caption", "images": [good, 7]}, "images.1"),
        ({"task": "caption", "images": [""]}, "images.0"),
        ({"task": "caption", "images": ["/home/me/cat.png"]}, "images.0"),
        ({"task": "caption", "images": [good] * 257}, "images"),
        ({"task": "caption", "images": [good, good], "names": ["one"]}, "names"),
        ({"task": "caption", "folder": "../outside"}, "folder"),
        ({"task": "caption", "folder": "no-such-folder"}, "folder"),
        ({"task": "caption", "folder": "empty-folder"}, "folder"),
        ({"task": "teleport", "images": [good]}, "task"),
        ({"task": "detect", "images": [good]}, "objects"),
        ({"task": "caption", "model": "no-such-model", "images": [good]}, "model"),
        ({"task": "caption", "images": [good], "save": False}, "save"),
        ({"task": "caption", "images": [good], "image": good}, "image"),
    ]
    for body, field in cases:
        r = httpx.post(server.url + URL + "/batch", json=body, timeout=60)
        err = assert_json_error(r, case=body)
        assert err.get("field") == field, (field, err)
    assert_json_error(httpx.post(server.url + URL + "/batch", content=b"not json", timeout=30))
    assert server_errors(server) == []

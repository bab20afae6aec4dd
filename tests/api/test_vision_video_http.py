"""POST /atelier/v1/vision/video on a real server (the session's plain_server, demo PaliGemma): a caption
job from an upload and from a path under the data dir, followed through GET /atelier/v1/jobs/{id} to its
result (the JSONL under outputs/, the captions timeline); bad input refused with a 4xx naming the field."""
from __future__ import annotations

import json

import httpx
import pytest

from tests.api.conftest import assert_json_error
from tests.conftest import wait_until
from tests.video_support import b64_video, rectangle_video

URL = "/atelier/v1/vision/video"
TIMEOUT = 300


@pytest.fixture(scope="module")
def server(plain_server):
    return plain_server


def follow(server, body: dict) -> dict:
    r = httpx.post(server.url + URL, json=body, timeout=60)
    assert r.status_code == 200, r.text[:500]
    started = r.json()
    assert started["kind"] == "vision_video" and started["id"] and started["task"] == body["task"]

    def finished():
        job = httpx.get(f"{server.url}/atelier/v1/jobs/{started['id']}", timeout=30).json()
        return job if job["state"] not in ("queued", "running") else None

    job = wait_until(finished, TIMEOUT, "the video job to end", interval=0.2)
    assert job["state"] == "done", job
    return {"started": started, **job}


def test_a_caption_job_from_an_upload_and_from_a_data_dir_path(server):
    clip = rectangle_video(10, fps=5, size=(48, 32))
    job = follow(server, {"task": "caption", "video": "data:video/mp4;base64," + b64_video(clip), "frames": 2,
                          "max_new_tokens": 3})
    assert job["started"]["source"] == {"width": 48, "height": 32, "fps": 5.0, "frames": 10, "duration": 2.0,
                                        "codec": "h264"}
    result = job["result"]
    assert [c["frame"] for c in result["summary"]["captions"]] == [3, 8] and result["frames_done"] == 2
    jsonl = server.data_dir / "outputs" / result["jsonl"]
    assert [json.loads(x) for x in jsonl.read_text().splitlines()] == result["summary"]["captions"]
    assert result["jsonl"].startswith("vision/") and result["output"] is None

    (server.data_dir / "clips").mkdir(exist_ok=True)
    (server.data_dir / "clips" / "moving.mp4").write_bytes(clip)
    job = follow(server, {"task": "caption", "path": "clips/moving.mp4", "frames": 1, "start": 1.0,
                          "max_new_tokens": 2})
    assert [c["frame"] for c in job["result"]["summary"]["captions"]] == [8]  # the middle of 1–2 s at 5 fps


def test_bad_input_is_a_4xx_naming_the_field(server):
    ok = b64_video(rectangle_video(5, size=(32, 32)))
    (server.data_dir / "clips").mkdir(exist_ok=True)
    (server.data_dir / "clips" / "notes.mp4").write_bytes(b"plain text, no video")
    cases = [({"task": "caption", "video": b64_video(b"not a video" * 30)}, "video"),
             ({"task": "caption", "video": "%%%"}, "video"),
             ({"task": "caption"}, "video"),
             ({"task": "caption", "path": "clips/notes.mp4"}, "path"),
             ({"task": "caption", "path": "../../etc/passwd"}, "path"),
             ({"task": "caption", "video": ok, "start": 3.0}, "start"),
             ({"task": "caption", "video": ok, "start": 0.2, "end": 0.1}, "end"),
             ({"task": "caption", "video": ok, "options": {"conf": 0.5}}, "options"),
             ({"task": "track", "video": ok, "model": "none.pt"}, "track_task"),  # no tracker without YOLO enabled
             ({"task": "paint", "video": ok}, "task")]
    for body, field in cases:
        r = httpx.post(server.url + URL, json=body, timeout=60)
        err = assert_json_error(r, case=json.dumps(body)[:120])
        assert err["field"] == field or err["field"].startswith(field + "."), (body, err)
    assert httpx.get(server.url + "/atelier/health", timeout=10).status_code == 200

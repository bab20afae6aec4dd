"""YOLO over HTTP on a real server (`python -m webui --extension-envs …`): enabled through the extensions
API with confirmation (the install-on-enable step: on a clean clone it builds the environment into the
clone's cache, .cache/extension-envs, which later sessions reuse), a .pt refused until trusted
through /ext/yolo/trust, a segment batch through POST /atelier/v1/vision/batch answering masks and
overlays, bad options refused at submit naming the field, and every worker process gone with its model and
with the server (a worker ends when its socket closes, whatever ended the server)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import psutil
import pytest

from tests.api.conftest import assert_json_error, b64_of, server_errors
from tests.conftest import make_data_dir, start_live_server, wait_until
from tests.unit.test_yolo_extension import BUILD_S, ENVS

TIMEOUT = 300


def picture(w=160, h=120):
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (w, h), (90, 140, 200))
    ImageDraw.Draw(image).ellipse([30, 20, 130, 100], fill=(240, 200, 40))
    return image


@pytest.fixture(scope="module")
def server(tmp_path_factory, demo_checkpoint):
    s = start_live_server(make_data_dir(tmp_path_factory.mktemp("yolo-http"), demo_checkpoint),
                          "--extension-envs", str(ENVS))
    yield s
    s.stop()


def make_models(python: str, data: Path) -> None:
    models = data / "models" / "yolo"
    code = ("from ultralytics import YOLO\nfor s in ('', '-seg'):\n"
            f"    YOLO(f'yolov8n{{s}}.yaml').save(f'{models}/yolov8n{{s}}.pt')")  # random weights, no download
    done = subprocess.run([python, "-c", code], cwd=data, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "YOLO_OFFLINE": "1", "YOLO_CONFIG_DIR": str(data / ".ultralytics")})
    assert done.returncode == 0, done.stderr[-3000:]


def post(server, path: str, body: dict) -> httpx.Response:
    return httpx.post(server.url + path, json=body, timeout=TIMEOUT)


def worker_pids(server) -> dict[str, int]:
    rows = httpx.get(server.url + "/atelier/v1/models", timeout=60).json()["models"]
    return {m["name"]: int(m["location"].rsplit(" ", 1)[1].rstrip(")")) for m in rows
            if m["kind"] == "yolo" and "worker pid" in m["location"]}


def enable_over_http(server) -> dict | None:
    """The install-on-enable step over HTTP: on a clean clone it builds the environment (minutes), then reuses it;
    → the environment's description (None: YOLO runs in the studio's Python)."""
    r = httpx.post(server.url + "/atelier/extensions/yolo/enable", json={"confirm_requirements": True},
                   timeout=BUILD_S)
    assert r.status_code == 200 and r.json()["status"] == "enabled", r.text[:800]
    return r.json()["environment"]


@pytest.mark.timeout(BUILD_S + 600)
def test_yolo_over_http_enable_trust_batch_and_workers_end(server):
    environment = enable_over_http(server)
    make_models(environment["python"] if environment else sys.executable, server.data_dir)
    for step, body in (("disable", None), ("enable", {"confirm_requirements": False})):  # the folder is rescanned
        r = httpx.post(f"{server.url}/atelier/extensions/yolo/{step}", json=body, timeout=TIMEOUT)
        assert r.status_code == 200, r.text[:800]
    assert r.json()["status"] == "enabled", "built already: nothing left to confirm"
    image = b64_of(picture())

    refused = assert_json_error(post(server, "/atelier/v1/vision", {"task": "yolo-detect", "model": "yolov8n.pt",
                                                                    "image": image}))
    listed = {f["name"]: f for f in httpx.get(server.url + "/ext/yolo/trust", timeout=60).json()["files"]}
    assert refused["field"] == "model" and listed["yolov8n.pt"]["sha256"] in refused["detail"]
    for name in ("yolov8n.pt", "yolov8n-seg.pt"):
        assert post(server, "/ext/yolo/trust", {"name": name, "sha256": listed[name]["sha256"]}).status_code == 200

    options = {"conf": 0.0001, "max_det": 3, "imgsz": 320}
    bad = assert_json_error(post(server, "/atelier/v1/vision/batch", {"task": "yolo-segment", "model": "yolov8n-seg.pt",
                                                                      "images": [image], "options": {"conf": 2}}))
    assert bad["field"] == "options.conf", "refused at submit, not image by image"
    started = post(server, "/atelier/v1/vision/batch", {"task": "yolo-segment", "model": "yolov8n-seg.pt",
                                                       "images": [image, b64_of(picture(96, 64))], "options": options})
    assert started.status_code == 200, started.text[:500]

    def finished():
        job = httpx.get(f"{server.url}/atelier/v1/jobs/{started.json()['id']}", timeout=30).json()
        return job if job["state"] not in ("queued", "running") else None

    job = wait_until(finished, TIMEOUT, "the YOLO batch to end", interval=0.2)
    assert job["state"] == "done" and job["result"]["done"] == 2, job
    for item, size in zip(job["result"]["items"], ((160, 120), (96, 64))):
        assert (item["width"], item["height"]) == size and item["task"] == "yolo-segment" and item["overlay"]
        assert 1 <= len(item["objects"]) <= 3
        assert all(o["mask"]["size"] == [size[1], size[0]] for o in item["objects"]), "COCO RLE over the image"

    pids = worker_pids(server)
    assert set(pids) == {"yolov8n-seg.pt"} and psutil.pid_exists(pids["yolov8n-seg.pt"])
    assert post(server, "/atelier/v1/models/unload", {"kind": "yolo", "name": "yolov8n-seg.pt"}).status_code == 200
    assert not psutil.pid_exists(pids["yolov8n-seg.pt"]) and worker_pids(server) == {}

    single = post(server, "/atelier/v1/vision", {"task": "yolo-detect", "model": "yolov8n.pt", "image": image,
                                                 "options": options, "overlay": True})
    assert single.status_code == 200 and single.json()["model"] == "yolov8n.pt", single.text[:500]
    pid = worker_pids(server)["yolov8n.pt"]
    assert server_errors(server) == []
    server.stop()  # however the server ends (SIGTERM here), its workers' socket closes and they end
    wait_until(lambda: not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE, 30,
               "the worker to end with the server", interval=0.1)

"""YOLO training as the extension's training kind, on a real server (`python -m webui --extension-envs …`) with
the YOLO extension enabled over HTTP: a script starts it through the Train tab's public /train_start endpoint
(gradio_client), one epoch from yolov8n.yaml random weights on a generated dataset (64×64 images with
coloured rectangles, their YOLO label files, a data.yaml), in a child process with the extension's own
interpreter; the per-epoch metrics arrive in the job's series (the Train tab's plots read them), the best
weights land in models/yolo trusted, and a Vision detect job runs them at once. Bad dataset input is a 4xx
naming the field, over REST and through /train_start. Nothing in ultralytics' processes reaches for the network
(no Arial.ttf, no yolov8n.pt): a sitecustomize on their path records every lookup and connection."""
from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError

from tests.api.conftest import assert_json_error, b64_of, server_errors
from tests.conftest import make_data_dir, start_live_server, wait_until
from tests.unit.test_yolo_extension import BUILD_S, ENVS

TIMEOUT = 300
METRICS = {"box_loss", "cls_loss", "dfl_loss", "precision", "recall", "mAP50", "mAP50-95"}
# Loaded by every Python the server starts (PYTHONPATH); records only in the extension's own environment's.
NET_WATCH = """
import os, socket, sys
if "extension-envs" in sys.prefix:
    def _record(what):
        with open(os.environ["ATELIER_TEST_NET_LOG"], "a") as f:
            f.write(f"{os.getpid()} {what}\\n")
    _connect, _lookup = socket.socket.connect, socket.getaddrinfo
    def connect(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6):
            _record(f"connect {address}")
        return _connect(self, address)
    def getaddrinfo(host, *args, **kwargs):
        _record(f"getaddrinfo {host}")
        return _lookup(host, *args, **kwargs)
    socket.socket.connect, socket.getaddrinfo = connect, getaddrinfo
"""


def rectangles(root: Path, count: int = 4) -> None:
    """A YOLO-format dataset: images/{train,val}, labels/{train,val} (class cx cy w h, 0-1) and data.yaml."""
    from PIL import Image, ImageDraw

    colours = ((220, 40, 40), (40, 200, 60))
    for split in ("train", "val"):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        for i in range(count):
            image = Image.new("RGB", (64, 64), (25, 25, 25))
            x0, y0, w, h, cls = 6 + 7 * i, 8 + 5 * i, 24, 20, i % 2
            ImageDraw.Draw(image).rectangle([x0, y0, x0 + w, y0 + h], fill=colours[cls])
            image.save(root / "images" / split / f"{i}.png")
            (root / "labels" / split / f"{i}.txt").write_text(
                f"{cls} {(x0 + w / 2) / 64:.5f} {(y0 + h / 2) / 64:.5f} {w / 64:.5f} {h / 64:.5f}\n")
    (root / "data.yaml").write_text("train: images/train\nval: images/val\nnames: [red, green]\n")


def yolo_request(name: str, **overrides) -> dict:
    return {"kind": "yolo", "output_name": name, "dataset": "datasets/rects", "base_model": "yolov8n.yaml",
            "epochs": 1, "imgsz": 64, "batch_size": 2, "workers": 0, **overrides}


@pytest.fixture(scope="module")
def net_log(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("net-watch") / "attempts.log"


@pytest.fixture(scope="module")
def server(tmp_path_factory, demo_checkpoint, net_log):
    watch = tmp_path_factory.mktemp("net-watch-site")
    (watch / "sitecustomize.py").write_text(NET_WATCH)
    s = start_live_server(make_data_dir(tmp_path_factory.mktemp("yolo-train"), demo_checkpoint),
                          "--extension-envs", str(ENVS),
                          env={"PYTHONPATH": str(watch), "ATELIER_TEST_NET_LOG": str(net_log)})
    r = httpx.post(s.url + "/atelier/extensions/yolo/enable", json={"confirm_requirements": True}, timeout=BUILD_S)
    assert r.status_code == 200 and r.json()["status"] == "enabled", r.text[:800]
    rectangles(s.data_dir / "datasets" / "rects")
    yield s
    s.stop()


def post(server, path: str, body: dict) -> httpx.Response:
    return httpx.post(server.url + path, json=body, timeout=TIMEOUT)


@pytest.mark.timeout(BUILD_S + 300)
def test_bad_yolo_dataset_input_is_a_4xx_naming_the_field(server):
    bad = server.data_dir / "datasets" / "bad-labels"
    rectangles(bad, count=2)
    (bad / "labels" / "train" / "1.txt").write_text("7 0.5 0.5 0.2 0.2\n")  # a class data.yaml does not name
    no_yaml = server.data_dir / "datasets" / "no-yaml"
    rectangles(no_yaml, count=2)
    (no_yaml / "data.yaml").unlink()
    cases = [({"dataset": "datasets/none"}, "dataset", "no folder"),
             ({"dataset": "datasets/no-yaml"}, "dataset", "data.yaml"),
             ({"dataset": "datasets/bad-labels"}, "dataset", "labels/train/1.txt:1"),
             ({"dataset": "../outside"}, "dataset", "outside the data dir"),
             ({"base_model": "missing.pt"}, "base_model", "missing.pt"),
             ({"imgsz": 50}, "imgsz", "multiple"),
             ({"lr0": 0.02}, "lr0", "optimizer"),
             ({"resume": True}, "resume", "resume")]
    for overrides, field, words in cases:
        body = assert_json_error(post(server, "/atelier/v1/train", yolo_request("refused", **overrides)), case=overrides)
        assert body["field"] == field and words in body["detail"], (overrides, body)
    with pytest.raises(AppError, match="labels/train/1.txt:1"):  # the same check behind the Train tab's endpoint
        Client(server.url, verbose=False).predict(request=yolo_request("refused", dataset="datasets/bad-labels"),
                                                  api_name="/train_start")
    assert not (server.data_dir / "models" / "yolo" / "refused.pt").exists()


@pytest.mark.timeout(BUILD_S + 900)
def test_yolo_trains_an_epoch_through_the_train_tabs_api_and_detects_at_once(server, net_log):
    plan = post(server, "/atelier/v1/train/plan", yolo_request("rects"))
    assert plan.status_code == 200 and plan.json()["steps"]["total_steps"] == 2, plan.text[:500]  # 4 images / batch 2
    started = Client(server.url, verbose=False).predict(request=yolo_request("rects"), api_name="/train_start")
    assert started["kind"] == "train_yolo" and started["run"] == "rects"

    def finished():
        job = httpx.get(f"{server.url}/atelier/v1/jobs/{started['id']}", timeout=30).json()
        return job if job["state"] not in ("queued", "running") else None

    job = wait_until(finished, 900, "the YOLO training to end", interval=0.5)
    assert job["state"] == "done", (job.get("error"), "\n".join(job["log"][-30:]))
    assert METRICS <= set(job["metrics"]), job["metrics"]
    assert all([step for step, _ in job["metrics"][name]] == [1] for name in METRICS), "one row per epoch"
    assert job["result"]["metrics"][0]["epoch"] == 1 and METRICS <= set(job["result"]["metrics"][0])
    weights = server.data_dir / "models" / "yolo" / "rects.pt"
    assert job["result"]["output"] == str(weights) and weights.is_file()
    assert job["step"] == job["total"] == 2

    listed = {f["name"]: f for f in httpx.get(server.url + "/ext/yolo/trust", timeout=60).json()["files"]}
    assert listed["rects.pt"]["trusted"], "the studio made it: trusted without asking"
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (64, 64), (25, 25, 25))
    ImageDraw.Draw(image).rectangle([10, 10, 34, 30], fill=(220, 40, 40))
    detected = post(server, "/atelier/v1/vision", {"task": "yolo-detect", "model": "rects.pt", "image": b64_of(image),
                                                   "options": {"imgsz": 64, "conf": 0.0001, "max_det": 5}})
    assert detected.status_code == 200 and detected.json()["model"] == "rects.pt", detected.text[:500]
    assert all(o["label"] in ("red", "green") for o in detected.json()["objects"]), "its own classes"
    taken = assert_json_error(post(server, "/atelier/v1/train", yolo_request("rects")))
    assert taken["field"] == "output_name", "an existing result is not replaced without overwrite"
    assert server_errors(server) == []
    assert not net_log.exists(), "ultralytics reached for the network: " + net_log.read_text()[:500]


@pytest.mark.timeout(BUILD_S + 600)
def test_stop_ends_a_yolo_training_between_batches_and_keeps_its_last_weights(server):
    started = post(server, "/atelier/v1/train", yolo_request("stopped", epochs=50, batch_size=1))
    assert started.status_code == 200, started.text[:500]
    url = f"{server.url}/atelier/v1/jobs/{started.json()['id']}"
    wait_until(lambda: httpx.get(url, timeout=30).json()["metrics"].get("mAP50"), 600, "the first epoch", interval=0.2)
    assert httpx.post(url + "/interrupt", timeout=30).status_code == 200
    job = wait_until(lambda: (j := httpx.get(url, timeout=30).json())["state"] not in ("queued", "running") and j,
                     300, "the stopped training to end", interval=0.2)
    assert job["state"] == "interrupted" and job["result"]["outcome"] == "interrupted", job.get("error")
    assert job["result"]["steps"] < job["result"]["total_steps"] == 200, "it stopped long before the 50 epochs"
    assert Path(job["result"]["checkpoint"]).is_file(), "the last weights are kept in the run folder"
    assert (server.data_dir / "models" / "yolo" / "stopped.pt").is_file()

"""YOLO export over HTTP on a real server with the extension enabled (its own environment, from the clone's
cache): a random-weight yolov8n .pt exported to ONNX (FP32, FP16, INT8 on a calibration folder) and
OpenVINO by POST /ext/yolo/export as jobs; each export listed at once in /atelier/v1/models and run through
/atelier/v1/vision with no trust step; the ONNX export's detections match the PyTorch model's on the same
generated image within a stated tolerance; bad requests refused with a 4xx naming the field."""
from __future__ import annotations

import httpx
import pytest

from tests.api.conftest import assert_json_error, b64_of, server_errors
from tests.api.test_yolo_http import enable_over_http, make_models, post
from tests.conftest import make_data_dir, start_live_server, wait_until
from tests.unit.test_yolo_extension import BUILD_S, ENVS

TIMEOUT = 300
# The same letterboxed 320x320 input reaches both backends (a square image: no rect padding on the .pt side).
SIZE = 320
OPTIONS = {"conf": 0.0001, "iou": 0.7, "max_det": 10, "imgsz": SIZE}
# ONNX Runtime vs PyTorch in FP32 on the CPU: different kernels, the same graph. Measured here (random weights,
# scores all about 1.6e-4, many tied): the same 10 objects, the same integer boxes, scores within 5e-9 (relative
# 3e-5). Allowed: 1 px per box corner and 0.1 % of the score.
BOX_PX, SCORE_REL = 1, 1e-3


def picture():
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (SIZE, SIZE), (90, 140, 200))
    draw = ImageDraw.Draw(image)
    draw.ellipse([60, 50, 250, 240], fill=(240, 200, 40))
    draw.rectangle([200, 200, 300, 300], fill=(30, 160, 60))
    return image


@pytest.fixture(scope="module")
def server(tmp_path_factory, demo_checkpoint):
    data = make_data_dir(tmp_path_factory.mktemp("yolo-export"), demo_checkpoint)
    calibration = data / "datasets" / "calib"
    calibration.mkdir(parents=True)
    for i in range(4):
        picture().rotate(90 * i).save(calibration / f"{i}.png")
    s = start_live_server(data, "--extension-envs", str(ENVS))
    yield s
    s.stop()


def run_job(server, body: dict) -> dict:
    started = post(server, "/ext/yolo/export", body)
    assert started.status_code == 200, started.text[:800]

    def finished():
        job = httpx.get(f"{server.url}/atelier/v1/jobs/{started.json()['id']}", timeout=30).json()
        return job if job["state"] not in ("queued", "running") else None

    job = wait_until(finished, TIMEOUT, "the export job to end", interval=0.2)
    assert job["state"] == "done", job
    return job["result"]


def detect(server, model: str, image: str) -> list[dict]:
    r = post(server, "/atelier/v1/vision", {"task": "yolo-detect", "model": model, "image": image,
                                            "options": OPTIONS})
    assert r.status_code == 200, r.text[:800]
    assert r.json()["model"] == model
    return r.json()["objects"]


def yolo_models(server) -> dict[str, dict]:
    rows = httpx.get(server.url + "/atelier/v1/models", timeout=60).json()["models"]
    return {m["name"]: m for m in rows if m["kind"] == "yolo"}


@pytest.mark.timeout(BUILD_S + 900)
def test_export_to_onnx_and_openvino_over_http_runs_and_matches_pytorch(server):
    environment = enable_over_http(server)
    assert environment, "this machine's torch cannot run ultralytics: the extension's own environment"
    make_models(environment["python"], server.data_dir)
    image = b64_of(picture())

    formats = httpx.get(server.url + "/ext/yolo/export/formats", timeout=TIMEOUT).json()
    assert formats["onnx"]["available"] and formats["onnx"]["half"] and formats["onnx"]["int8"]
    assert formats["openvino"]["available"], formats["openvino"]
    assert not formats["engine"]["available"] and "not available on this machine" in formats["engine"]["why"]

    untrusted = assert_json_error(post(server, "/ext/yolo/export", {"model": "yolov8n.pt"}))
    assert untrusted["field"] == "model" and "sha256" in untrusted["detail"], "a pickle exports only once trusted"
    listed = {f["name"]: f for f in httpx.get(server.url + "/ext/yolo/trust", timeout=60).json()["files"]}
    assert post(server, "/ext/yolo/trust", {"name": "yolov8n.pt",
                                            "sha256": listed["yolov8n.pt"]["sha256"]}).status_code == 200
    for body, field in (({"format": "engine"}, "format"), ({"format": "tflite"}, "format"),
                        ({"format": "pdf"}, "format"), ({"half": True, "int8": True, "data": "calib"}, "half"),
                        ({"int8": True}, "data"), ({"int8": True, "data": "nowhere"}, "data"),
                        ({"data": "calib"}, "data"), ({"imgsz": 300}, "imgsz"), ({"quantize": 8}, "quantize"),
                        ({"name": "../up"}, "name"), ({"model": "yolov8n-seg.onnx"}, "model")):
        refused = assert_json_error(post(server, "/ext/yolo/export", {"model": "yolov8n.pt", **body}), case=body)
        assert refused["field"] == field, (body, refused)
        if field == "format" and body["format"] != "pdf":
            assert "not available on this machine" in refused["detail"], refused
    assert not any(n.endswith((".onnx", "_openvino_model")) for n in yolo_models(server)), "nothing written"

    onnx = run_job(server, {"model": "yolov8n.pt", "format": "onnx", "imgsz": SIZE})
    assert (onnx["name"], onnx["precision"], onnx["task"]) == ("yolov8n.onnx", "fp32", "detect")
    models = yolo_models(server)
    assert "yolov8n.onnx" in models, "listed at once, as a model of the same kind"

    # The studio's own Vision path, both models: the PyTorch .pt (in its worker) and the ONNX export (ONNX Runtime).
    torch_objects, onnx_objects = detect(server, "yolov8n.pt", image), detect(server, "yolov8n.onnx", image)
    assert len(torch_objects) == OPTIONS["max_det"], "conf so low that random weights give detections to compare"
    assert len(onnx_objects) == len(torch_objects)
    unmatched = list(onnx_objects)
    for a in torch_objects:  # tied scores may come in another order: match each object to one of the other side
        b = next((b for b in unmatched if b["label"] == a["label"]
                  and all(abs(x - y) <= BOX_PX for x, y in zip(a["box"], b["box"]))
                  and abs(a["score"] - b["score"]) <= SCORE_REL * max(a["score"], b["score"])), None)
        assert b is not None, ("no ONNX Runtime object matches the PyTorch one", a, onnx_objects)
        unmatched.remove(b)
    assert "cpu (worker pid" in yolo_models(server)["yolov8n.onnx"]["location"]

    again = run_job(server, {"model": "yolov8n.pt", "format": "onnx", "imgsz": SIZE})
    assert again["name"] == "yolov8n-2.onnx", "an export never overwrites an earlier one"
    taken = assert_json_error(post(server, "/ext/yolo/export", {"model": "yolov8n.pt", "name": "yolov8n"}))
    assert taken["field"] == "name" and "exists" in taken["detail"]

    half = run_job(server, {"model": "yolov8n.pt", "format": "onnx", "half": True, "imgsz": SIZE})
    int8 = run_job(server, {"model": "yolov8n.pt", "format": "onnx", "int8": True, "data": "calib", "imgsz": SIZE})
    vino = run_job(server, {"model": "yolov8n.pt", "format": "openvino", "imgsz": SIZE, "name": "tiny-vino"})
    assert (half["name"], half["precision"]) == ("yolov8n-fp16.onnx", "fp16")
    assert (int8["name"], int8["precision"]) == ("yolov8n-int8.onnx", "int8")
    assert vino["name"] == "tiny-vino_openvino_model" and vino["format"] == "openvino"
    assert int8["size"] < onnx["size"] * 0.7 and half["size"] < onnx["size"] * 0.7, (onnx, half, int8)
    models = yolo_models(server)
    for name in ("yolov8n-fp16.onnx", "yolov8n-int8.onnx", "tiny-vino_openvino_model"):
        assert name in models, sorted(models)
        objects = detect(server, name, image)
        assert 1 <= len(objects) <= OPTIONS["max_det"], (name, objects)
    assert not [n for n in models if n.startswith(".")] and not list((server.data_dir / "datasets" / "calib")
                                                                     .glob("*.cache")), "no temporaries left"
    assert server_errors(server) == []

"""Training over REST on a live server: POST /atelier/v1/train → the id; GET /atelier/v1/jobs/{id}
shows progress, metric series, samples and the result; the LoRA works in /sdapi txt2img at once;
POST /jobs/{id}/interrupt stops with a checkpoint and /train/resume continues; bad input is a 4xx
naming the field."""
from __future__ import annotations

import time

import httpx
import pytest

from tests.api.conftest import assert_json_error, server_errors
from tests.conftest import make_data_dir, start_live_server
from tests.support import decode_png
from tests.training_support import dreambooth_request, make_dataset, sd_request

DEADLINE_S = 300


@pytest.fixture(scope="module")
def server(tmp_path_factory, demo_checkpoint):
    data = make_data_dir(tmp_path_factory.mktemp("train-http"), demo_checkpoint)
    make_dataset(data / "datasets" / "cats")
    srv = start_live_server(data)
    yield srv
    srv.stop()


def _post(server, path: str, body: dict) -> httpx.Response:
    return httpx.post(server.url + path, json=body, timeout=60)


def _wait(server, job_id: str, until=lambda job: job["state"] not in ("queued", "running")) -> dict:
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        job = httpx.get(f"{server.url}/atelier/v1/jobs/{job_id}", timeout=30).json()
        if until(job):
            return job
        time.sleep(0.1)
    raise TimeoutError(job)


@pytest.mark.parametrize("overrides, field", [
    ({"rank": 0}, "rank"),
    ({"unet_lr": "fast"}, "unet_lr"),
    ({"dataset": "../../etc"}, "dataset"),
    ({"dataset": "datasets/none"}, "dataset"),
    ({"base_model": "atelier-demo-gemma2"}, "base_model"),
])
def test_bad_requests_are_4xx_naming_the_field(server, overrides, field):
    body = assert_json_error(_post(server, "/atelier/v1/train", sd_request("bad", **overrides)), case=overrides)
    assert body["field"] == field, body
    assert not server_errors(server)


@pytest.mark.parametrize("overrides, field", [
    ({"class_prompt": ""}, "class_prompt"),
    ({"instance_prompt": None}, "instance_prompt"),
    ({"mode": "full", "rank": 4}, "rank"),
    ({"mode": "everything"}, "mode"),
    ({"class_dataset": "../elsewhere"}, "class_dataset"),
    ({"class_dataset": "datasets/cats/class"}, "class_dataset"),
    ({"num_class_images": 0}, "num_class_images"),
])
def test_bad_dreambooth_requests_are_4xx_naming_the_field(server, overrides, field):
    body = {k: v for k, v in dreambooth_request("bad-db", dataset="datasets/cats", **overrides).items()
            if v is not None}
    error = assert_json_error(_post(server, "/atelier/v1/train", body), case=overrides)
    assert error["field"] == field, error
    assert not server_errors(server)


def test_the_dreambooth_plan_says_how_many_class_images_txt2img_will_make(server):
    r = _post(server, "/atelier/v1/train/plan", dreambooth_request("db-plan", dataset="datasets/cats",
                                                                   max_steps=None))
    assert r.status_code == 200, r.text
    plan = r.json()
    assert plan["class_images"] == {"folder": "class_images/a_photo_of_a_cat", "have": 0, "wanted": 3, "to_make": 3}
    assert plan["steps"]["samples_per_epoch"] == 2 * 6 and "x 2 (class images)" in plan["steps"]["formula"]


def test_train_over_rest_then_use_the_lora_in_txt2img(server):
    plan = _post(server, "/atelier/v1/train/plan", sd_request("rest-lora", sample_prompts=["a red cat"],
                                                              sample_steps=2, sample_every=3))
    assert plan.status_code == 200 and plan.json()["steps"]["total_steps"] == 6, plan.text
    r = _post(server, "/atelier/v1/train", sd_request("rest-lora", sample_prompts=["a red cat"], sample_steps=2,
                                                      sample_every=3))
    assert r.status_code == 200, r.text
    job = _wait(server, r.json()["id"])
    assert job["state"] == "done", job["error"]
    assert (job["step"], job["total"]) == (6, 6)
    assert [p[0] for p in job["metrics"]["loss"]] == [1, 2, 3, 4, 5, 6] and "lr" in job["metrics"]
    assert [f.rsplit("/", 1)[-1] for f in job["files"]] == ["step-000003-0.png", "step-000006-0.png"]
    assert job["result"]["output"].endswith("models/Lora/rest-lora.safetensors")
    assert any(row["id"] == job["id"] for row in httpx.get(server.url + "/atelier/v1/jobs", timeout=30).json())
    loras = httpx.get(server.url + "/sdapi/v1/loras", timeout=30).json()
    assert "rest-lora" in {entry["name"] for entry in loras}
    images = []
    for prompt in ("a red cat", "a red cat <lora:rest-lora:1>"):
        out = _post(server, "/sdapi/v1/txt2img", {"prompt": prompt, "steps": 3, "width": 64, "height": 64,
                                                  "seed": 5, "sampler_name": "Euler"})
        assert out.status_code == 200, out.text
        images.append(decode_png(out.json()["images"][0]).tobytes())
    assert images[0] != images[1], "the LoRA changed nothing"


def test_interrupt_keeps_a_checkpoint_and_resume_finishes(server):
    r = _post(server, "/atelier/v1/train", sd_request("rest-stop", max_steps=40))
    job_id = r.json()["id"]
    _wait(server, job_id, until=lambda job: job["step"] >= 1 or job["state"] not in ("queued", "running"))
    assert httpx.post(f"{server.url}/atelier/v1/jobs/{job_id}/interrupt", timeout=30).status_code == 200
    job = _wait(server, job_id)
    assert job["state"] == "interrupted" and job["result"]["outcome"] == "stopped", job
    runs = {run["name"]: run for run in httpx.get(server.url + "/atelier/v1/train/runs", timeout=30).json()}
    assert runs["rest-stop"]["resumable"] and runs["rest-stop"]["checkpoints"]
    again = _post(server, "/atelier/v1/train", sd_request("rest-stop", max_steps=40))
    assert assert_json_error(again)["field"] == "output_name"  # the run exists: resume it, or overwrite
    resumed = _post(server, "/atelier/v1/train/resume", {"run": "rest-stop"})
    assert resumed.status_code == 200, resumed.text
    done = _wait(server, resumed.json()["id"])
    assert done["state"] == "done" and done["result"]["steps"] == 40, done["error"]
    assert done["metrics"]["loss"][0][0] == job["result"]["steps"] + 1

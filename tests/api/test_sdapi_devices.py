"""Several devices over HTTP: /sdapi/v1/progress lists each device's job, and an interrupt by job id
stops that job only. A real server with `--device cpu,cpu` (two devices simulated on the CPU) and
two checkpoints; a long job per checkpoint, so both run at once on their own device."""
from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.api.conftest import SECOND, server_errors, start_server

LONG = {"steps": 150, "width": 64, "height": 64, "seed": 1}
DEADLINE_S = 120


@pytest.fixture(scope="module")
def server(tmp_path_factory, demo_checkpoint, second_checkpoint):
    s = start_server(tmp_path_factory, demo_checkpoint, "--device", "cpu,cpu", checkpoints=[second_checkpoint])
    yield s
    assert server_errors(s) == []
    s.stop()


def post(server, prompt: str, checkpoint: str) -> httpx.Response:
    body = {"prompt": prompt, **LONG, "override_settings": {"sd_model_checkpoint": checkpoint}}
    return httpx.post(server.url + "/sdapi/v1/txt2img", json=body, timeout=DEADLINE_S)


def progress(server) -> dict:
    r = httpx.get(server.url + "/sdapi/v1/progress", params={"skip_current_image": True}, timeout=30)
    assert r.status_code == 200, r.text[:300]
    return r.json()


def test_idle_progress_lists_both_devices(server):
    p = progress(server)
    assert [d["device"] for d in p["devices"]] == ["cpu:0", "cpu:1"]
    assert all(d["job"] == "" and d["id"] is None for d in p["devices"])
    assert p["state"]["job"] == "" and p["progress"] == 0.0  # A1111's fields: idle


def test_interrupting_an_unknown_job_id_is_a_404_naming_it(server):
    r = httpx.post(server.url + "/sdapi/v1/interrupt", params={"id": "no-such-job"}, timeout=10)
    assert r.status_code == 404 and r.json().get("field") == "id", r.text[:300]


def test_progress_shows_both_jobs_and_an_interrupt_by_id_stops_only_that_one(server):
    demo = httpx.get(server.url + "/sdapi/v1/sd-models", timeout=30).json()
    first = next(m["model_name"] for m in demo if m["model_name"] != SECOND)
    with ThreadPoolExecutor(2) as pool:
        kept = pool.submit(post, server, "kept", first)
        stopped = pool.submit(post, server, "stopped", SECOND)
        deadline = time.monotonic() + DEADLINE_S
        while True:
            p = progress(server)
            running = [d for d in p["devices"] if d["sampling_step"] >= 2]
            if len(running) == 2:
                break
            assert not kept.done() and not stopped.done(), "a job ended before both ran at once"
            assert time.monotonic() < deadline, f"both devices never ran at once; last: {p['devices']}"
            time.sleep(0.02)
        assert {d["device"] for d in running} == {"cpu:0", "cpu:1"}
        assert all(d["sampling_steps"] == 150 and d["job"].startswith("txt2img(") for d in running)
        assert p["state"]["job"] in {d["job"] for d in running}  # A1111's fields: one of them
        # The demo checkpoint was loaded on cpu:0 at start, so SECOND's job runs on cpu:1 (the free one
        # holding nothing), whichever request came first.
        target = next(d["id"] for d in running if d["device"] == "cpu:1")
        assert target != next(d["id"] for d in running if d["device"] == "cpu:0")
        assert httpx.post(server.url + "/sdapi/v1/interrupt", params={"id": target}, timeout=10).status_code == 200
        stopped_r, kept_r = stopped.result(DEADLINE_S), kept.result(DEADLINE_S)
    assert stopped_r.status_code == 200 and kept_r.status_code == 200
    stopped_info, kept_info = json.loads(stopped_r.json()["info"]), json.loads(kept_r.json()["info"])
    assert stopped_info["interrupted"] is True
    assert kept_info["interrupted"] is False and len(kept_r.json()["images"]) == 1

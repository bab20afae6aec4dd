"""/atelier/v1/jobs and /atelier/v1/models on a live server.

An extension registers job kinds the way training will run: work in a child process that
crashes (the job fails with the reason, the server serves on), and a job that streams pieces
(two SSE clients each read the whole stream)."""
from __future__ import annotations

import json
import threading
import time

import httpx
import pytest

from tests.conftest import LiveServer, make_data_dir
from tests.unit.test_extensions_support import write_extension

DEADLINE_S = 60

JOBS_EXTENSION = '''
import time

def setup(api):
    def crash(ctx, request):
        return ctx.run_child("tests.jobs_child_targets:exit_status", {"status": 3})

    def talk(ctx, request):
        for i in range(request["n"]):
            ctx.emit({"i": i})
            if i % 20 == 0:
                time.sleep(0.01)
        return request["n"]

    api.register_job_kind("crashy", crash, queue="training", persist=True)
    api.register_job_kind("talker", talk, queue="chat")

    @api.post("/submit")
    def submit(body: dict) -> dict:
        return {"id": api.submit_job(body["kind"], body["request"]).id}
'''


@pytest.fixture(scope="module")
def server(tmp_path_factory, demo_checkpoint):
    data = make_data_dir(tmp_path_factory.mktemp("jobs-server"), demo_checkpoint)
    write_extension(data / "extensions" / "jobs-ext", JOBS_EXTENSION)
    srv = LiveServer(data).wait_ready()
    yield srv
    srv.stop()


def _submit(server, kind: str, request) -> str:
    r = httpx.post(server.url + "/ext/jobs-ext/submit", json={"kind": kind, "request": request}, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()["id"]


def _wait_finished(server, job_id: str) -> dict:
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        job = httpx.get(f"{server.url}/atelier/v1/jobs/{job_id}", timeout=10).json()
        if job["state"] not in ("queued", "running"):
            return job
        time.sleep(0.1)
    raise TimeoutError(f"job {job_id} never finished")


def test_a_child_process_that_crashes_fails_its_job_and_the_server_serves_on(server):
    job = _wait_finished(server, _submit(server, "crashy", {}))
    assert job["state"] == "failed"
    assert "exited with status 3" in job["error"]
    listed = httpx.get(server.url + "/atelier/v1/jobs", params={"kind": "crashy"}, timeout=10).json()
    assert [row["id"] for row in listed] == [job["id"]]
    r = httpx.post(server.url + "/sdapi/v1/txt2img", json={"prompt": "still serving", "steps": 2, "width": 64,
                                                           "height": 64}, timeout=120)
    assert r.status_code == 200 and len(r.json()["images"]) == 1


def _read_sse(url: str, out: list) -> None:
    with httpx.stream("GET", url, timeout=DEADLINE_S) as response:
        event = "message"
        for line in response.iter_lines():
            if line.startswith("event: "):
                event = line[len("event: "):]
            elif line.startswith("data: "):
                if event == "end":
                    out.append(("end", json.loads(line[len("data: "):])["state"]))
                    return
                out.append(json.loads(line[len("data: "):]))


def test_two_sse_clients_each_read_the_whole_stream_in_order(server):
    job_id = _submit(server, "talker", {"n": 300})
    url = f"{server.url}/atelier/v1/jobs/{job_id}/stream"
    first, second = [], []
    readers = [threading.Thread(target=_read_sse, args=(url, out)) for out in (first, second)]
    for reader in readers:
        reader.start()
    for reader in readers:
        reader.join(DEADLINE_S)
    expected = [{"i": i} for i in range(300)] + [("end", "done")]
    assert first == expected
    assert second == expected
    late = []
    _read_sse(url + "?cursor=295", late)  # a reader that reconnects resumes from its cursor
    assert late == [{"i": i} for i in range(295, 300)] + [("end", "done")]


def test_models_listing_has_every_kind_with_location_and_the_budget(server):
    body = httpx.get(server.url + "/atelier/v1/models", timeout=30).json()
    rows = {(m["kind"], m["name"]): m for m in body["models"]}
    demo = rows[("checkpoint", "atelier-demo-sd15")]
    assert demo["location"] == "cpu" and demo["active"] and demo["footprint_bytes"] > 0
    (cpu,) = [b for b in body["budgets"] if b["device"] == "cpu"]
    assert cpu["used_bytes"] >= demo["footprint_bytes"] and cpu["budget_bytes"] > cpu["used_bytes"]
    assert "checkpoint" in body["loadable_kinds"]


@pytest.mark.parametrize("body, field", [
    ({"kind": "checkpoint", "name": "atelier-demo-sd15", "options": {"quantization": "int5"}}, "quantization"),
    ({"kind": "checkpoint"}, "name"),
    ({"kind": "checkpoint", "name": "atelier-demo-sd15", "colour": "red"}, "colour"),
    ({"kind": "nope", "name": "x"}, "kind"),
])
def test_a_bad_load_request_is_refused_naming_the_field(server, body, field):
    r = httpx.post(server.url + "/atelier/v1/models/load", json=body, timeout=30)
    assert 400 <= r.status_code < 500, r.text
    assert field in json.dumps(r.json()), r.text


def test_unload_then_load_with_options_reports_the_footprints(server):
    r = httpx.post(server.url + "/atelier/v1/models/unload", json={"kind": "checkpoint", "name": "atelier-demo-sd15"},
                   timeout=30)
    assert r.status_code == 200, r.text
    rows = httpx.get(server.url + "/atelier/v1/models", timeout=30).json()["models"]
    assert [m["location"] for m in rows if m["name"] == "atelier-demo-sd15"] == ["disk"]
    r = httpx.post(server.url + "/atelier/v1/models/load", json={"kind": "checkpoint", "name": "atelier-demo-sd15",
                                                              "options": {"dtype": "bf16"}}, timeout=120)
    assert r.status_code == 200, r.text
    bf16 = r.json()
    assert bf16["footprint_before"] == 0 and bf16["footprint_bytes"] > 0
    r = httpx.post(server.url + "/atelier/v1/models/load", json={"kind": "checkpoint", "name": "atelier-demo-sd15",
                                                              "options": {"dtype": "fp32"}}, timeout=120)
    fp32 = r.json()
    assert fp32["footprint_before"] == bf16["footprint_bytes"]
    assert fp32["footprint_bytes"] > 1.9 * bf16["footprint_bytes"], "fp32 should be twice the bf16 footprint"

"""The queue seen through the API: progress with steps and previews, interrupt, skip, and many
concurrent requests that all answer while /progress stays responsive."""
from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.api.conftest import png, server_errors, start_server


@pytest.fixture(scope="module")
def server(tmp_path_factory, demo_checkpoint):
    s = start_server(tmp_path_factory, demo_checkpoint)
    yield s
    assert server_errors(s) == []
    s.stop()


def post(server, body: dict, timeout: float = 180) -> httpx.Response:
    return httpx.post(server.url + "/sdapi/v1/txt2img", json=body, timeout=timeout)


def progress(server) -> dict:
    r = httpx.get(server.url + "/sdapi/v1/progress", timeout=10)
    assert r.status_code == 200
    return r.json()


def wait_for(server, predicate, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        p = progress(server)
        if predicate(p):
            return p
        time.sleep(0.05)
    raise AssertionError(f"progress never matched; last: {p}")


def test_progress_reports_steps_and_preview_then_interrupt_ends_the_job(server):
    with ThreadPoolExecutor(1) as pool:
        fut = pool.submit(post, server, {"prompt": "long", "steps": 150, "width": 64, "height": 64, "seed": 1})
        p = wait_for(server, lambda p: p["state"]["sampling_step"] >= 3)
        assert p["state"]["sampling_steps"] == 150 and p["state"]["job_count"] == 1 and p["state"]["job"]
        assert 0 < p["progress"] < 1 and p["eta_relative"] > 0
        later = wait_for(server, lambda q: q["state"]["sampling_step"] > p["state"]["sampling_step"] + 2
                         and q["current_image"])
        assert later["progress"] > p["progress"]
        assert png(later["current_image"]).size[0] > 0, "the live preview is a PNG"
        assert progress(server)["current_image"] is not None
        assert httpx.get(server.url + "/sdapi/v1/progress?skip_current_image=true").json()["current_image"] is None

        started = time.monotonic()
        assert httpx.post(server.url + "/sdapi/v1/interrupt", timeout=10).status_code == 200
        r = fut.result(timeout=60)
        assert time.monotonic() - started < 5, "interrupt takes effect within a step"
    assert r.status_code == 200, r.text[:300]
    info = json.loads(r.json()["info"])
    assert info["interrupted"] is True
    idle = progress(server)
    assert idle["progress"] == 0 and idle["state"]["job_count"] == 0
    after = post(server, {"prompt": "next", "steps": 3, "width": 64, "height": 64, "seed": 2})
    assert after.status_code == 200 and "Steps: 3" in json.loads(after.json()["info"])["infotexts"][0]


def test_skip_drops_the_current_image_and_goes_on_with_the_batch(server):
    with ThreadPoolExecutor(1) as pool:
        fut = pool.submit(post, server, {"prompt": "b", "steps": 20, "n_iter": 2, "width": 64, "height": 64, "seed": 50})
        wait_for(server, lambda p: p["state"]["job_no"] == 0 and p["state"]["sampling_step"] >= 2)
        assert httpx.post(server.url + "/sdapi/v1/skip", timeout=10).status_code == 200
        p = wait_for(server, lambda p: p["state"]["job_no"] == 1 or p["state"]["job_count"] == 0)
        r = fut.result(timeout=120)
    assert r.status_code == 200
    info = json.loads(r.json()["info"])
    assert "Seed: 51" in info["infotexts"][-1], "the second image of the batch was still made"


def test_concurrent_requests_all_answer_while_progress_stays_responsive(server):
    n = 44  # more than FastAPI's 40 worker threads: waiting must not take them
    with ThreadPoolExecutor(n) as pool:
        futures = [pool.submit(post, server, {"prompt": f"n{i}", "steps": 1, "width": 64, "height": 64, "seed": 1000 + i})
                   for i in range(n)]
        max_pending, slowest = 0, 0.0
        while not all(f.done() for f in futures):
            t = time.monotonic()
            max_pending = max(max_pending, progress(server)["state"]["queue_pending"])
            assert httpx.get(server.url + "/sdapi/v1/sd-models", timeout=10).status_code == 200
            slowest = max(slowest, time.monotonic() - t)
            time.sleep(0.05)
        responses = [f.result() for f in futures]
    assert max_pending >= 20, f"the requests should have queued up together (saw {max_pending} pending)"
    assert slowest < 3.0, f"/progress and /sd-models took {slowest:.1f}s while requests waited"
    for i, r in enumerate(responses):
        assert r.status_code == 200, r.text[:300]
        body = r.json()
        assert png(body["images"][0]).size == (64, 64)
        assert json.loads(body["info"])["all_seeds"] == [1000 + i], "each answer belongs to its request"

"""The queue seen through the API: progress with steps and previews, interrupt, skip, and many
concurrent requests that all answer while /progress stays responsive.

Time limits are relative to a baseline taken in the same test (a whole small request on the same
server, just before), never a fixed number of seconds: the machine may be busy."""
from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest

from tests.api.conftest import png, server_errors

SMALL = {"width": 64, "height": 64}


@pytest.fixture(scope="module")
def server(plain_server):
    yield plain_server
    assert server_errors(plain_server) == []


def post(server, body: dict, timeout: float = 180) -> httpx.Response:
    return httpx.post(server.url + "/sdapi/v1/txt2img", json=body, timeout=timeout)


def progress(server, skip_image: bool = False) -> dict:
    r = httpx.get(server.url + "/sdapi/v1/progress", params={"skip_current_image": skip_image}, timeout=30)
    assert r.status_code == 200
    return r.json()


def wait_for(server, predicate, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    p = None
    while time.monotonic() < deadline:
        p = progress(server, skip_image=True)
        if predicate(p):
            return p
        time.sleep(0.02)
    raise AssertionError(f"progress never matched; last: {p}")


def small_request_seconds(server) -> float:
    """The baseline: one whole 3-step request (sample, decode, PNG, HTTP) on this server, now."""
    started = time.monotonic()
    r = post(server, {"prompt": "baseline", "steps": 3, "seed": 9, **SMALL})
    assert r.status_code == 200, r.text[:300]
    return time.monotonic() - started


def pixels(b64: str) -> np.ndarray:
    return np.asarray(png(b64).convert("RGB")).astype(int)


def test_progress_reports_steps_and_preview_then_interrupt_ends_the_job(server):
    baseline = small_request_seconds(server)
    with ThreadPoolExecutor(1) as pool:
        fut = pool.submit(post, server, {"prompt": "long", "steps": 150, "seed": 1, **SMALL})
        p = wait_for(server, lambda p: p["state"]["sampling_step"] >= 3)
        assert p["state"]["sampling_steps"] == 150 and p["state"]["job_count"] == 1 and p["state"]["job"]
        assert 0 < p["progress"] < 1 and p["eta_relative"] > 0
        deadline = time.monotonic() + 60
        while True:  # a later step, with the live preview attached
            later = progress(server)
            if later["state"]["sampling_step"] > p["state"]["sampling_step"] + 2 and later["current_image"]:
                break
            assert time.monotonic() < deadline, f"no later step with a preview; last: {later['state']}"
            time.sleep(0.02)
        assert later["progress"] > p["progress"]
        assert png(later["current_image"]).size[0] > 0, "the live preview is a PNG"
        assert progress(server, skip_image=True)["current_image"] is None

        started = time.monotonic()
        assert httpx.post(server.url + "/sdapi/v1/interrupt", timeout=10).status_code == 200
        at_interrupt = progress(server, skip_image=True)["state"]["sampling_step"]
        r = fut.result(timeout=120)
        waited = time.monotonic() - started
    # An interrupted job finishes its step, decodes and answers: no longer than a whole 3-step request
    # (3x for noise); a broken interrupt would run the ~140 steps left.
    assert waited < 3 * baseline, f"the answer took {waited:.2f}s after interrupt; a 3-step request takes {baseline:.2f}s"
    assert r.status_code == 200, r.text[:300]
    info = json.loads(r.json()["info"])
    assert info["interrupted"] is True and at_interrupt < 150
    idle = progress(server)
    assert idle["progress"] == 0 and idle["state"]["job_count"] == 0
    after = post(server, {"prompt": "next", "steps": 3, "seed": 2, **SMALL})
    assert after.status_code == 200 and "Steps: 3" in json.loads(after.json()["info"])["infotexts"][0]


def test_skip_drops_the_current_image_and_goes_on_with_the_batch(server):
    # Enough steps that the skip lands inside the first image even when the machine is busy.
    body = {"prompt": "b", "steps": 150, "seed": 50, "sampler_name": "Euler", **SMALL}
    with ThreadPoolExecutor(1) as pool:
        fut = pool.submit(post, server, {**body, "n_iter": 2})
        wait_for(server, lambda p: p["state"]["job_no"] == 0 and 2 <= p["state"]["sampling_step"])
        assert httpx.post(server.url + "/sdapi/v1/skip", timeout=10).status_code == 200
        landed = progress(server, skip_image=True)["state"]
        assert landed["job_no"] == 0, f"the skip came after the first image was done: {landed}"
        r = fut.result(timeout=120)
    assert r.status_code == 200, r.text[:300]
    images, info = r.json()["images"], json.loads(r.json()["info"])
    assert len(images) == 2 and info["all_seeds"] == [50, 51] and info["interrupted"] is False
    # The same two pictures made whole, one request each: the skipped one was cut short, the next one not.
    whole_50 = post(server, {**body, "seed": 50}).json()["images"][0]
    whole_51 = post(server, {**body, "seed": 51}).json()["images"][0]
    # Where the skip lands depends on the machine's pace (any step before the last); the sampling is
    # deterministic, so a whole image equals its run exactly and any cut one differs.
    assert not np.array_equal(pixels(images[0]), pixels(whole_50)), "skip did not cut the current image short"
    assert np.array_equal(pixels(images[1]), pixels(whole_51)), "the image after the skipped one must be made whole"


def test_concurrent_requests_all_answer_while_progress_stays_responsive(server):
    n = 44  # more than FastAPI's 40 worker threads: waiting requests must not hold them
    baseline = small_request_seconds(server)
    with ThreadPoolExecutor(n + 1) as pool:
        # A long job in front, so all n requests wait in the queue behind it at once.
        long = pool.submit(post, server, {"prompt": "in front", "steps": 150, "n_iter": 20, "seed": 7, **SMALL})
        front = wait_for(server, lambda p: p["state"]["sampling_step"] >= 1)["state"]["job"]
        futures = [pool.submit(post, server, {"prompt": f"n{i}", "steps": 1, "seed": 1000 + i, **SMALL})
                   for i in range(n)]
        wait_for(server, lambda p: p["state"]["queue_pending"] >= n, timeout=120)
        slowest = 0.0
        for _ in range(10):  # every poll answers while the job in front still runs and all n wait
            t = time.monotonic()
            state = progress(server, skip_image=True)["state"]
            assert httpx.get(server.url + "/sdapi/v1/sd-models", timeout=30).status_code == 200
            slowest = max(slowest, time.monotonic() - t)
            assert state["job"] == front and state["queue_pending"] >= n, state
        assert httpx.post(server.url + "/sdapi/v1/interrupt", timeout=10).status_code == 200
        assert long.result(timeout=120).status_code == 200
        responses = [f.result(timeout=300) for f in futures]
    # Held threads would have blocked the polls above until the job in front ended (it never would have:
    # the interrupt comes after them). Under CPU contention with that job a poll is slower than idle, but
    # nowhere near a few whole requests.
    assert slowest < 5 * baseline, f"/progress + /sd-models took {slowest:.2f}s with {n} requests waiting; a " \
                                   f"whole 3-step request takes {baseline:.2f}s"
    for i, r in enumerate(responses):
        assert r.status_code == 200, r.text[:300]
        body = r.json()
        assert png(body["images"][0]).size == (64, 64)
        assert json.loads(body["info"])["all_seeds"] == [1000 + i], "each answer belongs to its request"

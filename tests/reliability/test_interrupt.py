"""Interrupt and skip mid-generation, over the API and in the engine: the job stops within one
step of the request, and the next job runs normally."""
from __future__ import annotations

import json
import threading
import time

import httpx
import pytest

from modules.diffusion.params import Txt2ImgRequest
from modules.jobs import JobState
from tests.reliability.helpers import ProgressWatcher, body, decode_png

LONG = 150  # steps: far more than the test ever lets run


@pytest.fixture(scope="module")
def server(plain_server):
    return plain_server  # the session's shared server


def _post_in_thread(url: str, payload: dict) -> tuple[threading.Thread, dict]:
    out: dict = {}

    def go():
        r = httpx.post(url + "/sdapi/v1/txt2img", json=payload, timeout=300)
        out["status"], out["json"], out["at"] = r.status_code, r.json(), time.monotonic()

    t = threading.Thread(target=go, daemon=True)
    t.start()
    return t, out


def _step_now(url: str, job: str, part: int | None = None) -> int:
    """The step the job is on once the request has been taken (read right after it returns):
    the job may finish the step it is in, and no more."""
    state = httpx.get(url + "/sdapi/v1/progress?skip_current_image=true", timeout=10).json()["state"]
    if state["job"] != job or (part is not None and state["job_no"] != part):
        return 10**6  # already past it: nothing left to check against
    return state["sampling_step"]


def _next_job_runs(url: str) -> None:
    r = httpx.post(url + "/sdapi/v1/txt2img", json=body(seed=5, steps=3), timeout=120)
    assert r.status_code == 200, r.text[:300]
    assert decode_png(r.json()["images"][0]).size == (64, 64)
    assert json.loads(r.json()["info"])["interrupted"] is False


def test_api_interrupt_stops_within_one_step(server):
    with ProgressWatcher(server.url) as watch:
        thread, out = _post_in_thread(server.url, body(seed=1, steps=LONG))
        state = watch.wait_for(lambda s: s["job"].startswith("txt2img") and s["sampling_step"] >= 3)
        assert httpx.post(server.url + "/sdapi/v1/interrupt", timeout=10).status_code == 200
        at_request = _step_now(server.url, state["job"])
        thread.join(60)
        assert not thread.is_alive(), "the interrupted request never answered"
        job_steps = [step for (job, _), step in watch.seen.items() if job == state["job"]]
    assert out["status"] == 200, out
    assert json.loads(out["json"]["info"])["interrupted"] is True
    assert max(job_steps) <= at_request + 1, f"interrupt at step {at_request}, but it ran to step {max(job_steps)}"
    decode_png(out["json"]["images"][0])  # what was done is returned
    _next_job_runs(server.url)


def test_api_skip_drops_the_current_image_and_goes_on(server):
    with ProgressWatcher(server.url) as watch:
        thread, out = _post_in_thread(server.url, body(seed=2, steps=LONG, n_iter=2))
        state = watch.wait_for(lambda s: s["job"].startswith("txt2img") and s["job_no"] == 0 and s["sampling_step"] >= 3)
        assert httpx.post(server.url + "/sdapi/v1/skip", timeout=10).status_code == 200
        at_request = _step_now(server.url, state["job"], part=0)
        # The batch goes on with its second image…
        watch.wait_for(lambda s: s["job"] == state["job"] and s["job_no"] == 1 and s["sampling_step"] >= 1, timeout=60)
        first_part = watch.seen[(state["job"], 0)]
        httpx.post(server.url + "/sdapi/v1/interrupt", timeout=10)  # …which the test does not wait 150 steps for
        thread.join(60)
    assert first_part <= at_request + 1, f"skip at step {at_request}, but the image ran to step {first_part}"
    assert out["status"] == 200, out
    _next_job_runs(server.url)


def _wait_step(job, step: int, timeout: float = 60) -> int:
    deadline = time.monotonic() + timeout
    while job.progress.step < step or job.state != JobState.RUNNING:
        assert time.monotonic() < deadline, f"the job never reached step {step}: {job.snapshot()}"
        job.wait_for_change(job.version, 0.05)
    return job.progress.step


def test_engine_interrupt_and_skip_stop_within_one_step(studio):
    req = Txt2ImgRequest(prompt="a boat", steps=LONG, width=64, height=64, seed=3, save_images=False)
    job = studio.submit("txt2img", req)
    _wait_step(job, 3)
    studio.jobs.interrupt(job.id)
    at_request = job.progress.step
    job.wait(60)
    assert job.state == JobState.INTERRUPTED, job.snapshot()
    assert job.progress.step <= at_request + 1, f"interrupt at step {at_request}, ended at {job.progress.step}"

    skipped = studio.submit("txt2img", req.model_copy(update={"n_iter": 2, "steps": 40}))
    _wait_step(skipped, 3)
    studio.jobs.skip(skipped.id)
    at_request = last_first = skipped.progress.step
    deadline = time.monotonic() + 60
    while skipped.progress.part == 0:
        assert time.monotonic() < deadline, "skip did not move on to the next image"
        skipped.wait_for_change(skipped.version, 0.05)
        if skipped.progress.part == 0:
            last_first = skipped.progress.step
    assert last_first <= at_request + 1, f"skip at step {at_request}, the first image ran to {last_first}"
    skipped.wait(120)
    assert skipped.state == JobState.DONE, skipped.snapshot()

    after = studio.jobs.run("txt2img", req.model_copy(update={"steps": 3}), timeout=60)
    assert after.state == JobState.DONE and len(after.result.images) == 1

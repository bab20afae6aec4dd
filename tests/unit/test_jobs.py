"""The job engine: order, progress, interrupt, skip, failures at the job boundary."""
import threading
import time

import pytest

from modules.errors import InvalidRequest, NotFound
from modules.jobs import JobEngine, JobState
from tests.conftest import wait_until


def stepping_runner(steps=50, delay=0.01):
    """A job that does `steps` steps, honouring interrupt and skip like the generators do."""
    def run(ctx, request):
        done = []
        for item in range(request.get("items", 1)):
            for step in range(steps):
                ctx.progress(step + 1, steps, part=item)
                time.sleep(delay)
                if ctx.should_stop_item:
                    break
            done.append((item, ctx.job.progress.step))
            ctx.take_skip()
            if ctx.interrupted:
                break
        return done
    return run


@pytest.fixture
def engine():
    e = JobEngine()
    e.register_kind("steps", stepping_runner())
    yield e
    e.shutdown()


def test_jobs_run_in_submission_order_and_report_done(engine):
    order = []
    engine.register_kind("record", lambda ctx, req: order.append(req) or req)
    jobs = [engine.submit("record", i) for i in range(5)]
    for job in jobs:
        assert job.wait(10).state == JobState.DONE
    assert order == [0, 1, 2, 3, 4]
    assert [j.result for j in jobs] == [0, 1, 2, 3, 4]


def test_progress_and_eta_are_reported(engine):
    job = engine.submit("steps", {"items": 1})
    seen = set()
    version = 0
    deadline = time.monotonic() + 30
    while not job.state.finished:
        assert time.monotonic() < deadline, f"the job did not finish: {job.snapshot()}"
        version = job.wait_for_change(version, 1.0)
        seen.add(job.progress.step)
    assert job.state == JobState.DONE
    assert max(seen) == 50 and len(seen) > 5
    assert job.eta == 0.0


def test_interrupt_stops_within_one_step_and_keeps_done_work(engine):
    job = engine.submit("steps", {"items": 3})
    wait_until(lambda: job.progress.step >= 5, 10, "step 5")
    at_request = job.progress.step
    engine.interrupt(job.id)
    assert job.wait(10).state == JobState.INTERRUPTED
    assert len(job.result) == 1
    assert job.result[0][1] <= at_request + 1
    nxt = engine.run("steps", {"items": 1}, timeout=10)
    assert nxt.state == JobState.DONE and nxt.result == [(0, 50)]


def test_skip_drops_current_item_and_goes_on(engine):
    job = engine.submit("steps", {"items": 2})
    wait_until(lambda: job.progress.step >= 3, 10, "step 3")
    engine.skip(job.id)
    assert job.wait(10).state == JobState.DONE
    assert job.result[0][1] < 50 and job.result[1] == (1, 50)


def test_interrupting_a_queued_job_cancels_it(engine):
    gate = threading.Event()
    engine.register_kind("block", lambda ctx, req: gate.wait(10))
    first = engine.submit("block", None)
    queued = engine.submit("steps", {"items": 1})
    engine.interrupt(queued.id)
    gate.set()
    assert queued.wait(10).state == JobState.CANCELLED
    assert first.wait(10).state == JobState.DONE


def test_a_crashing_job_fails_alone(engine):
    def boom(ctx, req):
        raise RuntimeError("out of cheese")

    def refuse(ctx, req):
        raise InvalidRequest("must be positive", "steps")

    engine.register_kind("boom", boom)
    engine.register_kind("refuse", refuse)
    crashed = engine.run("boom", None, timeout=10)
    assert crashed.state == JobState.FAILED and "out of cheese" in crashed.error
    refused = engine.run("refuse", None, timeout=10)
    assert refused.state == JobState.FAILED and refused.error_field == "steps" and refused.error_status == 422
    with pytest.raises(Exception) as info:
        refused.raise_for_error()
    assert "steps" in str(info.value)
    assert engine.run("steps", {"items": 1}, timeout=10).state == JobState.DONE


def test_unknown_kind_and_id_are_refused(engine):
    with pytest.raises(NotFound):
        engine.submit("nope", None)
    with pytest.raises(NotFound):
        engine.get("missing")


def test_queues_per_device_run_side_by_side():
    engine = JobEngine()
    started = {}
    barrier = threading.Barrier(2, timeout=5)

    def runner(ctx, req):
        started[req] = time.monotonic()
        barrier.wait()  # both must be running at once, or this times out
        return req

    engine.register_kind("gpu0", runner, queue="cuda:0")
    engine.register_kind("cpu", runner, queue="cpu")
    try:
        a, b = engine.submit("gpu0", "a"), engine.submit("cpu", "b")
        assert a.wait(10).state == JobState.DONE and b.wait(10).state == JobState.DONE
    finally:
        engine.shutdown()

"""The job engine's second wave: streams read by several readers, kinds with their own
validation and queue, exclusive kinds that take the device, metrics and logs."""
import threading
import time

import pytest

from modules.errors import InvalidRequest
from modules.jobs import JobEngine, JobKind, JobState

DEADLINE_S = 20


@pytest.fixture
def engine():
    e = JobEngine()
    yield e
    e.shutdown()


def _read_all(job, out: list):
    cursor, deadline = 0, time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        pieces, cursor, ended = job.read_stream(cursor, timeout=1.0)
        out.extend(pieces)
        if ended:
            return
    raise TimeoutError("the stream never ended")


def test_a_stream_read_by_two_readers_gives_both_the_complete_sequence(engine):
    def talk(ctx, n):
        for i in range(n):
            ctx.emit(f"tok{i}")
            if i % 50 == 0:
                time.sleep(0.005)  # readers fall behind and catch up
        return n

    engine.register_kind("talk", talk)
    job = engine.submit("talk", 500)
    first, second = [], []
    readers = [threading.Thread(target=_read_all, args=(job, out)) for out in (first, second)]
    readers[0].start()
    time.sleep(0.02)  # the second reader starts late: it still gets every piece from the start
    readers[1].start()
    for r in readers:
        r.join(DEADLINE_S)
    expected = [f"tok{i}" for i in range(500)]
    assert first == expected
    assert second == expected
    assert job.state == JobState.DONE


def test_a_stream_read_after_the_job_ended_still_has_every_piece(engine):
    engine.register_kind("talk", lambda ctx, n: [ctx.emit(i) for i in range(n)] and n)
    job = engine.run("talk", 7, timeout=DEADLINE_S)
    pieces, cursor, ended = job.read_stream(0)
    assert pieces == list(range(7)) and cursor == 7 and ended
    assert job.read_stream(cursor) == ([], 7, True)


def test_a_kind_validates_at_submit_and_nothing_is_queued(engine):
    ran = []

    def validate(req):
        if req.get("n", 0) < 1:
            raise InvalidRequest("must be at least 1", "n")

    engine.add_kind(JobKind("count", lambda ctx, req: ran.append(req), validate=validate))
    with pytest.raises(InvalidRequest) as err:
        engine.submit("count", {"n": 0})
    assert err.value.field == "n"
    assert engine.pending() == 0
    assert engine.run("count", {"n": 2}, timeout=DEADLINE_S).state == JobState.DONE
    assert ran == [{"n": 2}]


def test_kinds_on_different_queues_run_side_by_side(engine):
    started = {"a": threading.Event(), "b": threading.Event()}

    def runner(name):
        def run(ctx, req):
            started[name].set()
            other = "b" if name == "a" else "a"
            return started[other].wait(DEADLINE_S)  # True only if the other runs at the same time
        return run

    engine.add_kind(JobKind("a", runner("a"), queue="images"))
    engine.add_kind(JobKind("b", runner("b"), queue="chat"))
    ja, jb = engine.submit("a", None), engine.submit("b", None)
    assert ja.wait(DEADLINE_S).result is True
    assert jb.wait(DEADLINE_S).result is True


def test_an_exclusive_kind_waits_for_running_jobs_and_holds_new_ones_back(engine):
    timeline = []
    release_first = threading.Event()

    def ordinary(ctx, name):
        timeline.append(("start", name))
        if name == "first":
            release_first.wait(DEADLINE_S)
        timeline.append(("end", name))

    def training(ctx, req):
        timeline.append(("start", "train"))
        time.sleep(0.2)
        timeline.append(("end", "train"))

    engine.add_kind(JobKind("gen", ordinary, queue="images"))
    engine.add_kind(JobKind("chat", ordinary, queue="chat"))
    engine.add_kind(JobKind("train", training, queue="training", exclusive=True))
    first = engine.submit("gen", "first")
    deadline = time.monotonic() + DEADLINE_S
    while ("start", "first") not in timeline and time.monotonic() < deadline:
        time.sleep(0.01)
    train = engine.submit("train", None)
    time.sleep(0.3)
    later = engine.submit("chat", "later")  # submitted while training waits: must not start before it
    time.sleep(0.3)
    assert ("start", "train") not in timeline, "training started while a generation ran"
    assert ("start", "later") not in timeline, "a new job started while training waited for the device"
    release_first.set()
    for job in (first, train, later):
        assert job.wait(DEADLINE_S).state == JobState.DONE
    assert timeline.index(("end", "first")) < timeline.index(("start", "train"))
    assert timeline.index(("end", "train")) < timeline.index(("start", "later"))


def test_an_exclusive_job_interrupted_while_waiting_is_cancelled(engine):
    hold = threading.Event()
    engine.add_kind(JobKind("gen", lambda ctx, req: hold.wait(DEADLINE_S), queue="images"))
    engine.add_kind(JobKind("train", lambda ctx, req: "trained", queue="training", exclusive=True))
    gen = engine.submit("gen", None)
    deadline = time.monotonic() + DEADLINE_S
    while gen.state != JobState.RUNNING and time.monotonic() < deadline:
        time.sleep(0.01)
    train = engine.submit("train", None)
    time.sleep(0.3)
    assert train.state == JobState.QUEUED  # waiting for the device
    engine.interrupt(train.id)
    assert train.wait(DEADLINE_S).state == JobState.CANCELLED
    hold.set()
    assert gen.wait(DEADLINE_S).state == JobState.DONE


def test_metrics_are_kept_as_series_and_logs_in_order(engine):
    def train(ctx, req):
        for step in range(1, 6):
            ctx.metric("loss", 1.0 / step, step)
            ctx.metric("lr", 1e-4, step)
            ctx.log(f"step {step}")
        return "ok"

    engine.register_kind("train", train, queue="training")
    job = engine.run("train", None, timeout=DEADLINE_S)
    assert job.metrics["loss"] == [(s, 1.0 / s) for s in range(1, 6)]
    assert [v for _, v in job.metrics["lr"]] == [1e-4] * 5
    assert list(job.logs) == [f"step {s}" for s in range(1, 6)]


def test_an_unknown_kind_names_the_known_ones(engine):
    engine.register_kind("known", lambda ctx, req: None)
    with pytest.raises(Exception) as err:
        engine.submit("nope", None)
    assert "known" in str(err.value) and err.value.field == "kind"


def test_an_exclusive_kinds_prepare_step_runs_other_jobs_before_it_takes_the_device(engine):
    """DreamBooth's shape: the training's first step waits on a generation job; inside the exclusive
    hold that job would wait for the training, and the training for it."""
    order = []

    def prepare(ctx, req):
        drawn = engine.submit("draw", {"what": "class image"}).wait(DEADLINE_S)
        order.append(("prepare", drawn.result))
        ctx.progress(1, 1, text="class images made")

    def train(ctx, req):
        order.append(("train", ctx.job.progress.text))
        return "trained"

    engine.add_kind(JobKind("draw", lambda ctx, req: req.upper(), queue="images", parse=lambda d: d["what"]))
    engine.add_kind(JobKind("train", train, queue="training", exclusive=True, prepare=prepare))
    job = engine.submit("train", {}).wait(DEADLINE_S)
    assert job.state == JobState.DONE and job.result == "trained"
    assert order == [("prepare", "CLASS IMAGE"), ("train", "class images made")]


def test_a_job_stopped_or_failing_in_its_prepare_step_never_runs(engine):
    ran = []

    def stop_there(ctx, req):
        ctx.job.interrupt_requested = True
        return {"outcome": "stopped"}

    def fail_there(ctx, req):
        raise InvalidRequest("no class prompt", "class_prompt")

    engine.add_kind(JobKind("stopped", lambda ctx, req: ran.append(req), exclusive=True, prepare=stop_there))
    engine.add_kind(JobKind("failed", lambda ctx, req: ran.append(req), exclusive=True, prepare=fail_there))
    stopped = engine.submit("stopped", 1).wait(DEADLINE_S)
    failed = engine.submit("failed", 2).wait(DEADLINE_S)
    assert stopped.state == JobState.INTERRUPTED and stopped.result == {"outcome": "stopped"}
    assert failed.state == JobState.FAILED and failed.error_field == "class_prompt"
    assert ran == []

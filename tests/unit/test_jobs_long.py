"""Long jobs through the engine: work in a child process (progress, metrics, interrupt, crashes
that fail the job and leave the engine serving) and records that survive a restart."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from modules.jobs import JobEngine, JobKind, JobState
from modules.jobs.store import DIED_WITH_SERVER, JobStore

REPO = Path(__file__).resolve().parents[2]
DEADLINE_S = 60


def child_kind(target: str, **options):
    def run(ctx, request):
        return ctx.run_child(f"tests.jobs_child_targets:{target}", request, cwd=REPO, **options)
    return run


@pytest.fixture
def engine(tmp_path):
    e = JobEngine(store=JobStore(tmp_path / "jobs"))
    e.register_kind("echo", lambda ctx, req: req)  # an ordinary kind: the engine must keep serving it
    yield e
    e.shutdown()


def _wait_for(predicate, what: str):
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise TimeoutError(what)


def test_a_process_backed_job_reports_progress_metrics_logs_and_its_stream(engine, tmp_path):
    engine.add_kind(JobKind("train", child_kind("report"), queue="training", persist=True))
    job = engine.run("train", {"folder": str(tmp_path)}, timeout=DEADLINE_S)
    assert job.state == JobState.DONE, job.error
    assert job.result["echo"] == {"folder": str(tmp_path)}
    assert (job.progress.step, job.progress.total, job.progress.text) == (3, 3, "step 3")
    assert job.metrics["loss"] == [(1, 1.0), (2, 0.5), (3, 1.0 / 3)]
    assert job.stream == [{"token": 1}, {"token": 2}, {"token": 3}, "last piece"]
    assert "starting" in job.logs and "finished" in job.logs
    assert job.files == [str(tmp_path / "sample.png")]
    assert job.result["argv0"] != sys.argv[0], "the work ran in this process, not a child"


def test_interrupting_a_process_backed_job_stops_it_cleanly_with_its_checkpoint(engine, tmp_path):
    engine.add_kind(JobKind("train", child_kind("until_interrupted"), queue="training", persist=True))
    job = engine.submit("train", {"folder": str(tmp_path)})
    _wait_for(lambda: job.progress.step >= 3, "the child never reported progress")
    engine.interrupt(job.id)
    assert job.wait(DEADLINE_S).state == JobState.INTERRUPTED
    assert Path(job.result["checkpoint"]).read_text() == f"step {job.result['stopped_at']}\n"


@pytest.mark.parametrize("target, request_body, words", [
    ("exit_status", {"status": 3}, "exited with status 3"),
    ("allocate", {}, "memory limit of 300 MB"),
    ("kill_self", {}, "SIGKILL"),
])
def test_a_child_that_crashes_fails_the_job_with_the_reason_and_the_engine_serves_on(engine, target,
                                                                                       request_body, words):
    engine.add_kind(JobKind("train", child_kind(target, memory_limit_mb=300), queue="training", persist=True))
    job = engine.run("train", request_body, timeout=DEADLINE_S)
    assert job.state == JobState.FAILED
    assert words in job.error
    assert engine.run("echo", "still here", timeout=DEADLINE_S).result == "still here"
    (record,) = [r for r in engine.listing("train") if r["id"] == job.id]
    assert record["state"] == "failed" and words in record["error"]


def test_a_finished_long_job_is_listed_after_a_restart_with_its_metrics(tmp_path):
    folder = tmp_path / "jobs"
    first = JobEngine(store=JobStore(folder))
    first.add_kind(JobKind("train", child_kind("report"), queue="training", persist=True))
    first.add_kind(JobKind("quick", lambda ctx, req: req))  # not persisted: gone after a restart
    job = first.run("train", {"folder": str(tmp_path)}, timeout=DEADLINE_S)
    first.run("quick", 1, timeout=DEADLINE_S)
    first.shutdown()
    second = JobEngine(store=JobStore(folder))
    rows = second.listing()
    assert [r["id"] for r in rows] == [job.id]
    assert rows[0]["state"] == "done" and rows[0]["metrics"]["loss"][0] == [1, 1.0]
    assert rows[0]["files"] == [str(tmp_path / "sample.png")]


SERVER_SCRIPT = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from modules.jobs import JobEngine, JobKind
    from modules.jobs.store import JobStore

    def train(ctx, req):
        for step in range(1, 1_000_000):
            ctx.progress(step, 1_000_000, text="training")
            ctx.metric("loss", 1.0 / step, step)
            time.sleep(0.01)

    engine = JobEngine(store=JobStore(Path(sys.argv[1])))
    engine.add_kind(JobKind("train", train, queue="training", persist=True))
    job = engine.submit("train", {"steps": 10})
    print(job.id, flush=True)
    time.sleep(600)
""")


def test_a_job_running_when_the_server_is_killed_is_listed_as_failed_with_that_reason(tmp_path):
    folder = tmp_path / "jobs"
    proc = subprocess.Popen([sys.executable, "-c", SERVER_SCRIPT, str(folder)], cwd=REPO,
                            stdout=subprocess.PIPE, text=True)
    try:
        job_id = proc.stdout.readline().strip()
        record = folder / f"{job_id}.json"
        _wait_for(lambda: record.exists() and '"running"' in record.read_text(), "no running record was saved")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(DEADLINE_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(DEADLINE_S)
        proc.stdout.close()
    rows = JobEngine(store=JobStore(folder)).listing()
    assert [(r["id"], r["state"], r["error"]) for r in rows] == [(job_id, "failed", DIED_WITH_SERVER)]

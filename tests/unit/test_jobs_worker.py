"""Persistent workers (modules/jobs/worker.py): state kept between calls, a person's error returned as it
was raised, a bug, a crash and a missed deadline reported with the reason, and the process always gone
after stop — the studio's process never hurt."""
from __future__ import annotations

import sys
from pathlib import Path

import psutil
import pytest

from modules.errors import AtelierError
from modules.jobs.child_failures import ChildFailed
from modules.jobs.worker import ChildWorker

TARGETS = Path(__file__).resolve().parents[1] / "jobs_worker_targets.py"


@pytest.fixture
def worker():
    w = ChildWorker("tests.jobs_worker_targets:Counter", start_timeout_s=60).start()
    yield w
    w.stop()


def test_state_lives_between_calls_and_errors_come_back_without_ending_it(worker):
    first, second = worker.call("add", n=2), worker.call("add", n=3)
    assert second["total"] == 5 and first["pid"] == second["pid"] == worker.pid
    with pytest.raises(AtelierError) as refused:
        worker.call("refuse", field="options.conf")
    assert refused.value.field == "options.conf" and "not like that" in refused.value.message
    assert not isinstance(refused.value, ChildFailed)
    with pytest.raises(ChildFailed, match="RuntimeError: a bug in the worker"):
        worker.call("fail")
    with pytest.raises(ChildFailed, match="no method '_private'"):
        worker.call("_private")
    assert worker.alive and worker.call("add", n=1)["total"] == 6, "the same process, its state intact"


def test_a_crash_is_named_with_its_last_lines_and_a_new_start_works(worker):
    pid = worker.pid
    with pytest.raises(ChildFailed) as crashed:
        worker.call("crash")
    assert "killed by SIGKILL" in crashed.value.message and "about to crash" in crashed.value.message
    assert not worker.alive and not psutil.pid_exists(pid)
    worker.start()
    assert worker.pid != pid and worker.call("add", n=4)["total"] == 4, "a fresh process, fresh state"


def test_a_missed_deadline_kills_the_worker_and_says_which_call(worker):
    pid = worker.pid
    with pytest.raises(ChildFailed, match="did not answer hang in time"):
        worker.call("hang", seconds=60, timeout_s=0.5)
    assert not worker.alive and not psutil.pid_exists(pid)
    with pytest.raises(ChildFailed, match="not running"):
        worker.call("add", n=1)


def test_stop_ends_the_process_and_removes_its_private_folder(worker):
    pid, private = worker.pid, worker.private_dir
    assert private.is_dir() and (private.stat().st_mode & 0o777) == 0o700
    worker.stop()
    assert not psutil.pid_exists(pid) and not private.exists() and not worker.alive
    worker.stop()  # twice is fine


def test_a_file_target_under_another_python_and_a_factory_that_fails():
    w = ChildWorker(f"{TARGETS}:Counter", python=Path(sys.executable).resolve()).start()
    try:
        assert w.call("add", n=7)["total"] == 7
    finally:
        w.stop()
    with pytest.raises(ChildFailed, match="ValueError: cannot build the worker"):
        ChildWorker("tests.jobs_worker_targets:Broken").start()
    with pytest.raises(ChildFailed, match="could not start"):
        ChildWorker("tests.jobs_worker_targets:Counter", python="/nonexistent/python").start()

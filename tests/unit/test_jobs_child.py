"""Process-backed runners: events relayed in order, failures contained and named, Stop honoured or enforced."""
from __future__ import annotations

import os
import stat
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from modules.errors import AtelierError
from modules.jobs.child import run_in_child
from modules.jobs.child_failures import ChildFailed

REPO = Path(__file__).resolve().parents[2]
TARGETS = "tests.jobs_child_targets"
ACCELERATE = Path(sys.executable).with_name("accelerate")


class RecordingContext:
    """Stands in for the engine's job context: records every call, in order, and can be interrupted."""

    def __init__(self):
        self.events: list[tuple] = []
        self._stop = threading.Event()

    @property
    def interrupted(self) -> bool:
        return self._stop.is_set()

    def stop(self) -> None:
        self._stop.set()

    def progress(self, step, total, text=None):
        self.events.append(("progress", step, total, text))

    def metric(self, name, value, step):
        self.events.append(("metric", name, value, step))

    def log(self, line):
        self.events.append(("log", line))

    def emit(self, piece):
        self.events.append(("emit", piece))

    def preview_path(self, path):
        self.events.append(("preview", path))

    def of(self, kind: str) -> list[tuple]:
        return [e for e in list(self.events) if e[0] == kind]

    def logs(self) -> list[str]:
        return [e[1] for e in self.of("log")]

    def wait_for(self, kind: str, timeout: float = 20) -> tuple:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if found := self.of(kind):
                return found[0]
            time.sleep(0.01)
        raise AssertionError(f"no {kind!r} event within {timeout} s: {self.events[-10:]}")


def within(seconds: float, fn, *args, **kwargs):
    """Run fn on a thread and fail the test past the deadline: a hung relay fails, never hangs the suite."""
    box: dict = {}

    def work():
        try:
            box["value"] = fn(*args, **kwargs)
        except BaseException as exc:  # handed to the test thread below
            box["error"] = exc

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        pytest.fail(f"did not finish within {seconds} s")
    if "error" in box:
        raise box["error"]
    return box["value"]


def child(ctx, name: str, request: dict | None = None, deadline: float = 30, **options):
    return within(deadline, run_in_child, ctx, f"{TARGETS}:{name}", request or {}, cwd=REPO, **options)


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def group_members(pgid: int) -> list[int]:
    members = []
    for proc in psutil.process_iter():
        try:
            if os.getpgid(proc.pid) == pgid and proc.status() != psutil.STATUS_ZOMBIE:
                members.append(proc.pid)
        except (ProcessLookupError, psutil.Error):
            continue
    return members


def test_events_are_relayed_in_order_and_the_result_returned(tmp_path):
    ctx = RecordingContext()
    result = child(ctx, "report", {"folder": str(tmp_path), "n": [1, 2]})
    assert result["echo"] == {"folder": str(tmp_path), "n": [1, 2]}
    # The target's own events, in the order it made them (stdout lines come on another channel).
    relayed = [e for e in ctx.events if e[0] != "log" or e[1] in ("starting", "finished")]
    expected = [("log", "starting")]
    for step in range(1, 4):
        expected += [("progress", step, 3, f"step {step}"), ("metric", "loss", 1.0 / step, step), ("emit", {"token": step})]
    expected += [("preview", str(tmp_path / "sample.png")), ("emit", "last piece"), ("log", "finished")]
    assert relayed == expected
    assert Path(ctx.of("preview")[0][1]).read_bytes() == b"not really a png"


def test_an_atelier_error_keeps_its_message_field_and_status():
    with pytest.raises(AtelierError) as caught:
        child(RecordingContext(), "raise_atelier")
    err = caught.value
    assert (err.message, err.field, err.status) == ("rank must be at least 1", "rank", 422)
    assert not isinstance(err, ChildFailed)


def test_another_exception_is_named_and_its_traceback_logged():
    ctx = RecordingContext()
    with pytest.raises(ChildFailed) as caught:
        child(ctx, "raise_value")
    assert caught.value.message == "ValueError: the dataset has no images"
    assert caught.value.status == 500
    logs = ctx.logs()
    assert "about to fail" in logs
    assert any("raise_value" in line for line in logs)  # the traceback's frame line
    assert logs[-1] == "ValueError: the dataset has no images"


def test_a_value_that_is_not_json_fails_plainly():
    with pytest.raises(ChildFailed, match="TypeError: Object of type object is not JSON serializable"):
        child(RecordingContext(), "not_json")


def test_an_exit_without_a_result_names_the_status_and_the_last_lines():
    with pytest.raises(ChildFailed) as caught:
        child(RecordingContext(), "exit_status", {"status": 3})
    message = caught.value.message
    assert message.startswith("the child process exited with status 3 without returning a result")
    assert "exiting without a result" in message


def test_a_kill_by_signal_is_named_and_sigkill_blamed_on_memory():
    with pytest.raises(ChildFailed) as caught:
        child(RecordingContext(), "kill_self")
    assert "killed by SIGKILL" in caught.value.message
    assert "memory" in caught.value.message


def test_allocating_past_the_memory_limit_fails_naming_the_limit():
    with pytest.raises(ChildFailed) as caught:
        child(RecordingContext(), "allocate", memory_limit_mb=300)
    message = caught.value.message
    assert "exceeded its memory limit of 300 MB" in message, message
    assert "MemoryError" in message


def test_stop_lets_the_target_save_a_checkpoint_and_return(tmp_path):
    ctx = RecordingContext()
    started = time.monotonic()
    box = {}
    runner = threading.Thread(target=lambda: box.update(result=child(ctx, "until_interrupted", {"folder": str(tmp_path)})))
    runner.start()
    ctx.wait_for("progress")
    ctx.stop()
    stopped = time.monotonic()
    runner.join(30)
    assert not runner.is_alive()
    result = box["result"]
    assert time.monotonic() - stopped < 5  # well inside the 10 s grace: it returned, nobody killed it
    assert Path(result["checkpoint"]).read_text() == f"step {result['stopped_at']}\n"
    assert result["stopped_at"] >= 1
    assert time.monotonic() - started < 30


def test_a_child_that_ignores_stop_is_killed_with_its_whole_group():
    ctx = RecordingContext()
    box = {}

    def run():
        try:
            child(ctx, "ignore_stop", stop_grace_s=0.5, deadline=30)
        except ChildFailed as exc:
            box["error"] = exc

    runner = threading.Thread(target=run)
    runner.start()
    pids = ctx.wait_for("emit")[1]
    assert alive(pids["pid"]) and alive(pids["helper"])
    ctx.stop()
    runner.join(30)
    assert not runner.is_alive()
    message = box["error"].message
    assert "did not stop within 0.5 s of the stop request and was killed (SIGKILL)" in message
    assert "SIGTERM" in " ".join(ctx.logs())  # tried politely first
    deadline = time.monotonic() + 5
    while group_members(pids["pid"]) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert group_members(pids["pid"]) == []
    assert not alive(pids["pid"]) and not alive(pids["helper"])


def test_a_chatty_child_does_not_hang():
    ctx = RecordingContext()
    started = time.monotonic()
    assert child(ctx, "chatty", {"lines": 100_000}, deadline=60) == 100_000
    logs = ctx.logs()
    assert len(logs) == 100_000
    assert logs[0] == "line 0 of a very chatty child" and logs[-1] == "line 99999 of a very chatty child"
    print(f"100k lines relayed in {time.monotonic() - started:.2f} s")


def test_a_launcher_prefix_runs_the_child(tmp_path):
    wrapper = tmp_path / "wrap.sh"
    wrapper.write_text(f'#!/bin/sh\nexport ATELIER_TEST_WRAPPED=yes\nexec "{sys.executable}" -X utf8 "$@"\n')
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    ctx = RecordingContext()
    result = child(ctx, "report", {"folder": str(tmp_path)}, launcher=[str(wrapper)])
    assert result["wrapped"] == "yes"
    assert result["argv0"].endswith("child_main.py")
    assert len(ctx.of("progress")) == 3


def test_a_launcher_that_cannot_start_fails_plainly():
    with pytest.raises(ChildFailed, match="could not start the child process '/nonexistent/launcher'"):
        child(RecordingContext(), "report", launcher=["/nonexistent/launcher"])


accelerate_only = pytest.mark.skipif(not ACCELERATE.exists(), reason="accelerate is not installed in this venv")
ACCELERATE_LAUNCH = [str(ACCELERATE), "launch", "--num_processes", "1", "--cpu", "--num_machines", "1",
                     "--mixed_precision", "no", "--dynamo_backend", "no"]


@accelerate_only
def test_under_accelerate_launch_events_and_result_come_back(tmp_path):
    ctx = RecordingContext()
    result = child(ctx, "report", {"folder": str(tmp_path)}, launcher=ACCELERATE_LAUNCH, deadline=120)
    assert result["echo"] == {"folder": str(tmp_path)}
    assert [e[1] for e in ctx.of("progress")] == [1, 2, 3]
    assert ctx.of("emit")[-1] == ("emit", "last piece")


@accelerate_only
def test_under_accelerate_launch_the_childs_own_exit_status_is_reported():
    with pytest.raises(ChildFailed) as caught:
        child(RecordingContext(), "exit_status", {"status": 3}, launcher=ACCELERATE_LAUNCH, deadline=120)
    message = caught.value.message
    assert message.startswith("the child process exited with status 3 (reported by the launcher")
    assert "exiting without a result" in message  # the child's own last line, not the launcher's traceback


def test_a_stop_before_the_child_connects_reaches_it(tmp_path):
    ctx = RecordingContext()
    ctx.stop()
    result = child(ctx, "until_interrupted", {"folder": str(tmp_path)}, deadline=20)
    assert Path(result["checkpoint"]).exists()


def test_a_child_that_returns_but_does_not_exit_still_gives_its_result():
    started = time.monotonic()
    assert child(RecordingContext(), "returns_but_lingers", stop_grace_s=0.5, deadline=20) == "done"
    assert time.monotonic() - started < 10


def test_the_child_context_stops_when_told_or_when_the_parent_is_gone():
    import socket

    from modules.jobs import child_protocol
    from modules.jobs.child_context import ChildContext

    for tell in (True, False):
        parent, child_end = socket.socketpair()
        ctx = ChildContext(child_end)
        assert not ctx.interrupted
        if tell:
            parent.sendall(child_protocol.encode(child_protocol.STOP))
        else:
            parent.close()  # the server died
        deadline = time.monotonic() + 5
        while not ctx.interrupted and time.monotonic() < deadline:
            time.sleep(0.01)
        assert ctx.interrupted
        ctx.close()
        parent.close()
    # Ranks other than 0 are not connected: they report nothing and are never interrupted by the parent.
    silent = ChildContext.from_environ({child_protocol.ENV_SOCKET: "/nonexistent.sock", "RANK": "1", "LOCAL_RANK": "1"})
    assert not silent.connected
    silent.progress(1, 2)


def test_failure_messages_read_a_launchers_report_of_its_child():
    from modules.jobs.child_failures import from_exit

    accelerate_tail = ["killing myself", "Traceback (most recent call last):", '  File "launch.py", line 999',
                       "subprocess.CalledProcessError: Command '[...]' died with <Signals.SIGKILL: 9>."]
    message = from_exit(1, accelerate_tail, 512, via_launcher=True).message
    assert message.startswith("the child process was killed by SIGKILL (reported by the launcher, which exited with "
                              "status 1), probably for exceeding its memory limit of 512 MB")
    assert message.endswith("its last log lines:\nkilling myself")
    torchrun_tail = ["Signal 11 (SIGSEGV) received by PID 1234", "std::bad_alloc"]
    assert "killed by SIGSEGV" in from_exit(1, torchrun_tail, None, via_launcher=True).message
    assert "probably ran out of memory" in from_exit(1, torchrun_tail, None, via_launcher=True).message
    # Without a launcher, its own status is the child's: no guessing from the log.
    plain = from_exit(1, accelerate_tail, None, via_launcher=False).message
    assert plain.startswith("the child process exited with status 1 without returning a result")
    assert from_exit(-15, [], None, via_launcher=False).message == (
        "the child process was killed by SIGTERM; it wrote nothing to its log")

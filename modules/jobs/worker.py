"""A persistent child process that answers calls: work that keeps state between jobs (a loaded model)
outside the studio's process, under any Python (an extension's own environment too).

    worker = ChildWorker("/abs/worker.py:Model", python="/env/bin/python", log=log.info)
    worker.start()
    worker.call("load", path="…")      # → the method's JSON value; AtelierError / ChildFailed otherwise
    worker.stop()

Same wire and same judgement of failures as run_in_child (child.py): a Unix socket in a private
folder, the process in a session of its own (a stop reaches everything it started), its output as
log lines, a crash or an out-of-memory kill reported with the reason and the last lines it wrote,
and the studio never taken down. Calls run one at a time, each with a deadline; a worker that
misses one is killed. `private_dir` (0700) is where a caller puts files for the worker to read.
"""
from __future__ import annotations

import collections
import itertools
import logging
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from modules.jobs import child_failures as failures
from modules.jobs import child_protocol as protocol
from modules.jobs.child import child_env, has_exited, kill_group, relay_lines, short_temp_dir

log = logging.getLogger("atelier.jobs.worker")

WORKER_MAIN = Path(__file__).resolve().with_name("worker_main.py")
_POLL_S = 0.05
_TAIL_LINES = 40


class ChildWorker:
    def __init__(self, target: str, *, python: str | os.PathLike | None = None,
                 env: Mapping[str, str] | None = None, cwd: str | os.PathLike | None = None,
                 memory_limit_mb: int | None = None, log_line: Callable[[str], None] | None = None,
                 start_timeout_s: float = 120.0):
        if ":" not in target:
            raise ValueError(f"target must be 'package.module:factory' or '/path/file.py:factory', not {target!r}")
        self.target = target
        self.python = str(python or sys.executable)
        self.env, self.cwd, self.memory_limit_mb = dict(env or {}), cwd, memory_limit_mb
        self.start_timeout_s = start_timeout_s
        self._log_line = log_line or log.info
        self.tail: collections.deque[str] = collections.deque(maxlen=_TAIL_LINES)
        self.private_dir: Path | None = None
        self._proc: subprocess.Popen | None = None
        self._conn: socket.socket | None = None
        self._replies: queue.Queue[dict | None] = queue.Queue()
        self._threads: list[threading.Thread] = []
        self._ids = itertools.count(1)
        self._lock = threading.Lock()  # one call at a time, and start / stop never during one

    # -- life ------------------------------------------------------------------
    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._conn is not None and not has_exited(self._proc.pid)

    def start(self) -> "ChildWorker":
        with self._lock:
            if self.alive:
                return self
            self._close()
            self.tail.clear()
            self.private_dir = Path(tempfile.mkdtemp(prefix="atelier-worker-", dir=short_temp_dir()))
            socket_path = str(self.private_dir / "events.sock")
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
                server.bind(socket_path)
                server.listen(1)
                command = [self.python, str(WORKER_MAIN), self.target]
                try:
                    self._proc = subprocess.Popen(
                        command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                        env=child_env(self.env, socket_path, None, self.memory_limit_mb), cwd=self.cwd,
                        start_new_session=True)
                except OSError as exc:
                    self._close()
                    raise failures.could_not_start(self.python, exc) from None
                self._spawn(self._relay_output)
                try:
                    self._conn = self._accept(server)
                except BaseException:
                    self._close()
                    raise
            self._spawn(self._read_replies)
            hello = self._next_message(time.monotonic() + self.start_timeout_s, "start")
            if hello.get("type") != "hello":
                self._close()
                raise failures.ChildFailed(f"the worker {self.target} sent {hello.get('type')!r} before hello")
            log.info("worker %s started (pid %s, %s)", self.target, self._proc.pid, self.python)
            return self

    def stop(self, grace_s: float = 5.0) -> None:
        """Ask it to end; SIGTERM, then SIGKILL of its whole group when it does not within `grace_s`."""
        with self._lock:
            if self._proc is None:
                return
            self._send(protocol.STOP)
            deadline = time.monotonic() + grace_s
            while not has_exited(self._proc.pid) and time.monotonic() < deadline:
                time.sleep(_POLL_S)
            if not has_exited(self._proc.pid):
                kill_group(self._proc.pid, signal.SIGTERM)
                deadline = time.monotonic() + grace_s
                while not has_exited(self._proc.pid) and time.monotonic() < deadline:
                    time.sleep(_POLL_S)
            self._close()

    # -- calls ------------------------------------------------------------------
    def call(self, method: str, timeout_s: float = 300.0, **args) -> Any:
        """`method(**args)` in the worker → its JSON value. A person's error (AtelierError) comes back as it was
        raised; a crash, a kill or a missed deadline raise ChildFailed with the reason, and the worker is gone."""
        with self._lock:
            if not self.alive:
                raise failures.ChildFailed(f"the worker {self.target} is not running (start it first)")
            call_id = next(self._ids)
            self._send({"type": "call", "id": call_id, "method": method, "args": args})
            deadline = time.monotonic() + timeout_s
            while True:
                message = self._next_message(deadline, method)
                if message.get("id") != call_id:
                    continue  # the answer to a call whose caller gave up; never this one's
                if message["type"] == "reply":
                    return message.get("value")
                if message["type"] == "error":
                    self._log_traceback(message)
                    raise failures.from_error(message, self.memory_limit_mb)

    def _next_message(self, deadline: float, what: str) -> dict:
        """The next reply, error or hello; a worker that ended or missed the deadline is cleaned up and reported."""
        while True:
            ended = self._proc is None or has_exited(self._proc.pid)
            if ended:
                for thread in self._threads:
                    thread.join(1.0)  # what it sent before it ended is read by now
            try:
                message = self._replies.get(timeout=0 if ended else _POLL_S)
            except queue.Empty:
                message = None
            if message is not None:
                if message.get("type") == "error" and message.get("id") is None:  # it could not build its object
                    self._log_traceback(message)
                    self._close()
                    raise failures.from_error(message, self.memory_limit_mb)
                return message
            if ended:
                returncode = self._proc.wait() if self._proc is not None else -signal.SIGKILL
                self._close()
                raise failures.from_exit(returncode, list(self.tail), self.memory_limit_mb, via_launcher=False)
            if time.monotonic() > deadline:
                self._close()
                raise failures.ChildFailed(f"the worker {self.target} did not answer {what} in time and was "
                                           f"stopped{failures.quote_tail(self.tail)}")

    # -- plumbing ----------------------------------------------------------------
    def _spawn(self, fn) -> None:
        thread = threading.Thread(target=fn, name="atelier-worker-io", daemon=True)
        thread.start()
        self._threads.append(thread)

    def _accept(self, server: socket.socket) -> socket.socket:
        server.settimeout(_POLL_S)
        deadline = time.monotonic() + self.start_timeout_s
        while True:
            try:
                conn, _ = server.accept()
                conn.settimeout(None)
                return conn
            except (socket.timeout, BlockingIOError):
                pass
            if has_exited(self._proc.pid):
                raise failures.from_exit(self._proc.wait(), list(self.tail), self.memory_limit_mb, via_launcher=False)
            if time.monotonic() > deadline:
                raise failures.ChildFailed(f"the worker {self.target} did not connect within "
                                           f"{self.start_timeout_s:g} s{failures.quote_tail(self.tail)}")

    def _read_replies(self) -> None:
        conn = self._conn
        try:
            for line in conn.makefile("rb"):
                message = protocol.decode(line)
                if message is not None:
                    self._replies.put(message)
        except (OSError, ValueError):  # closed under us by stop
            pass

    def _relay_output(self) -> None:
        relay_lines(self._proc.stdout, self._output_line)

    def _output_line(self, line: str) -> None:
        self.tail.append(line)
        try:
            self._log_line(line)
        except Exception:
            log.exception("could not log a line of the worker %s", self.target)

    def _log_traceback(self, event: dict) -> None:
        if not event.get("atelier"):  # logged, not kept in the tail: a later crash quotes what it printed
            for line in str(event.get("traceback") or "").rstrip().splitlines()[-20:]:
                self._log_line(line)

    def _send(self, message: dict) -> None:
        if self._conn is None:
            return
        try:
            self._conn.sendall(protocol.encode(message))
        except OSError:
            pass  # it is gone; the next read says how

    def _close(self) -> None:
        """Whatever is left of its group goes, the wire closes, the private folder is removed."""
        if self._proc is not None:
            kill_group(self._proc.pid, signal.SIGKILL)
            self._proc.wait()
        if self._conn is not None:
            try:
                self._conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._conn.close()
        for thread in self._threads:
            thread.join(5.0)
        if self._proc is not None and self._proc.stdout is not None:
            self._proc.stdout.close()
        if self.private_dir is not None:
            shutil.rmtree(self.private_dir, ignore_errors=True)
        self._proc, self._conn, self._threads, self.private_dir = None, None, [], None
        self._replies = queue.Queue()


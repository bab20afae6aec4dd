"""Process-backed runners: a job whose work runs in a child process (training, under accelerate).

A crash, an out-of-memory or a hard kill in the child fails the job with the reason and never
takes the server down. The child is `<launcher…> modules/jobs/child_main.py package.module:function`,
in a session (process group) of its own, so that a stop reaches every process a launcher started.
Events come back over a Unix socket (child_protocol.py); the child's stdout and stderr become log lines.
"""
from __future__ import annotations

import collections
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any, Protocol

from modules.jobs import child_failures as failures
from modules.jobs import child_protocol as protocol

log = logging.getLogger("atelier.jobs")

CHILD_MAIN = Path(__file__).resolve().with_name("child_main.py")
PROJECT_ROOT = CHILD_MAIN.parents[2]

_POLL_S = 0.05
_TERM_GRACE_S = 5.0  # at most, between SIGTERM and SIGKILL, once the stop grace has passed
_JOIN_S = 5.0  # for the relay threads to drain what the child wrote before it ended
_TAIL_LINES = 40
_MAX_LINE_BYTES = 8192  # a line without an end (a progress bar) is cut, never buffered whole


class ParentContext(Protocol):
    """The part of the engine's job context a child's events are relayed to."""

    @property
    def interrupted(self) -> bool: ...
    def progress(self, step: int, total: int, text: str | None = None) -> None: ...
    def metric(self, name: str, value: float, step: int) -> None: ...
    def log(self, line: str) -> None: ...
    def emit(self, piece: Any) -> None: ...
    def preview_path(self, path: str) -> None: ...


def run_in_child(ctx: ParentContext, target: str, request: dict, *, launcher: list[str] | None = None,
                 memory_limit_mb: int | None = None, stop_grace_s: float = 10.0,
                 env: Mapping[str, str] | None = None, cwd: str | os.PathLike | None = None) -> Any:
    """Run `function(child_ctx, request)` of `target` ("package.module:function") in a child process.

    Returns the function's (JSON) return value, also after an interrupt it honoured; raises
    AtelierError (ChildFailed for the machine's failures) with the reason otherwise.
    """
    if ":" not in target:
        raise ValueError(f"target must be 'package.module:function', not {target!r}")
    # Private (0700) folder: only this user can reach the socket or read the request.
    with tempfile.TemporaryDirectory(prefix="atelier-child-", dir=short_temp_dir()) as private:
        request_file = Path(private) / "request.json"
        request_file.write_text(json.dumps(request), encoding="utf-8")
        socket_path = str(Path(private) / "events.sock")
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
            server.bind(socket_path)
            server.listen(4)
            command = [*(launcher or [sys.executable]), str(CHILD_MAIN), target]
            environ = child_env(env, socket_path, request_file, memory_limit_mb)
            run = _ChildRun(ctx, stop_grace_s, memory_limit_mb, via_launcher=launcher is not None)
            return run.run(command, environ, cwd, server)


def short_temp_dir() -> str | None:
    # A Unix socket's path must fit in ~108 bytes; a long TMPDIR would not leave room.
    return None if len(tempfile.gettempdir()) < 64 else "/tmp"


def child_env(env: Mapping[str, str] | None, socket_path: str, request_file: Path | None,
              memory_limit_mb: int | None) -> dict[str, str]:
    """The environment of a child (a job's or a worker's): the project importable, the socket, the limits."""
    out = {**os.environ, **(env or {})}
    # The project root first, so child_main and the target import under any launcher and working folder.
    out["PYTHONPATH"] = os.pathsep.join(p for p in (str(PROJECT_ROOT), out.get("PYTHONPATH")) if p)
    # Unbuffered, so the last lines before a crash reach the log.
    out.setdefault("PYTHONUNBUFFERED", "1")
    out[protocol.ENV_SOCKET] = socket_path
    out.pop(protocol.ENV_REQUEST, None)
    if request_file is not None:
        out[protocol.ENV_REQUEST] = str(request_file)
    out.pop(protocol.ENV_MEMORY_MB, None)
    if memory_limit_mb:
        out[protocol.ENV_MEMORY_MB] = str(int(memory_limit_mb))
    return out


class _ChildRun:
    """One child process: started, watched, stopped, its events and output relayed, its end judged."""

    def __init__(self, ctx: ParentContext, stop_grace_s: float, memory_limit_mb: int | None, via_launcher: bool):
        self.ctx = ctx
        self.stop_grace_s = stop_grace_s
        self.memory_limit_mb = memory_limit_mb
        self.via_launcher = via_launcher
        self.tail: collections.deque[str] = collections.deque(maxlen=_TAIL_LINES)
        self.result: dict | None = None
        self.error: dict | None = None
        # Two threads report through ctx (events, output); one at a time, and the tail kept with them.
        self._ctx_lock = threading.RLock()
        self._conn: socket.socket | None = None
        self._conn_lock = threading.Lock()
        self._stop_requested = False
        self._exited = threading.Event()

    def run(self, command: list[str], env: dict[str, str], cwd, server: socket.socket) -> Any:
        try:
            proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, env=env, cwd=cwd, start_new_session=True)
        except OSError as exc:
            raise failures.could_not_start(command[0], exc) from None
        threads = [
            threading.Thread(target=self._relay_output, args=(proc.stdout,), name="atelier-child-output", daemon=True),
            threading.Thread(target=self._relay_events, args=(server,), name="atelier-child-events", daemon=True),
        ]
        for thread in threads:
            thread.start()
        forced = None
        try:
            forced = self._supervise(proc)
        finally:
            # Whatever is left of the group goes too: a launcher's orphans, a helper that outlived the target.
            kill_group(proc.pid, signal.SIGKILL)
            proc.wait()
            self._exited.set()
            for thread in threads:
                thread.join(_JOIN_S)
            self._close_conn()
        return self._outcome(proc.returncode, forced)

    # -- watching -------------------------------------------------------
    def _supervise(self, proc: subprocess.Popen) -> str | None:
        """Wait for the child's end, stopping it on interrupt; returns the signal it was forced with, if any."""
        stop_deadline = result_deadline = term_deadline = None
        forced: str | None = None
        while not has_exited(proc.pid):
            now = time.monotonic()
            if stop_deadline is None and self.ctx.interrupted:
                self._request_stop()
                stop_deadline = now + self.stop_grace_s
                self._log(f"stop requested: waiting up to {self.stop_grace_s:g} s for the child process to return")
            if result_deadline is None and self.result is not None:
                result_deadline = now + self.stop_grace_s  # it returned: it has that long to exit
            if forced is None and any(d is not None and now >= d for d in (stop_deadline, result_deadline)):
                self._log("the child process did not end in time: sending SIGTERM")
                kill_group(proc.pid, signal.SIGTERM)
                forced, term_deadline = "SIGTERM", now + min(_TERM_GRACE_S, self.stop_grace_s)
            elif forced == "SIGTERM" and term_deadline is not None and now >= term_deadline:
                self._log("the child process ignored SIGTERM: sending SIGKILL")
                kill_group(proc.pid, signal.SIGKILL)
                forced = "SIGKILL"
            time.sleep(_POLL_S)
        return forced

    def _outcome(self, returncode: int, forced: str | None) -> Any:
        if self.error is not None:
            if not self.error.get("atelier"):
                for line in str(self.error.get("traceback") or "").rstrip().splitlines()[-20:]:
                    self._log(line)
            raise failures.from_error(self.error, self.memory_limit_mb)
        if self.result is not None:
            if returncode != 0:
                self._log(f"the child process exited with status {returncode} after returning its result")
            return self.result.get("value")
        if forced is not None:
            raise failures.forced_stop(self.stop_grace_s, forced)
        raise failures.from_exit(returncode, list(self.tail), self.memory_limit_mb, self.via_launcher)

    # -- the event channel ------------------------------------------------
    def _relay_events(self, server: socket.socket) -> None:
        conn = self._accept(server)
        if conn is None:
            return
        try:
            for line in conn.makefile("rb"):
                message = protocol.decode(line)
                if message is None:
                    self._log("(an unreadable message from the child process was skipped)")
                else:
                    self._dispatch(message)
        except (OSError, ValueError):  # closed under us at the end
            pass

    def _accept(self, server: socket.socket) -> socket.socket | None:
        server.settimeout(_POLL_S)
        while True:
            # Read before accepting: a connection made before the child ended is in the backlog by now.
            exited = self._exited.is_set()
            try:
                conn, _ = server.accept()
            except (socket.timeout, BlockingIOError):
                if exited:
                    return None
                continue
            except OSError:
                return None
            conn.settimeout(None)
            with self._conn_lock:
                self._conn = conn
                if self._stop_requested:
                    self._send_stop()
            return conn

    def _dispatch(self, message: dict) -> None:
        kind = message["type"]
        with self._ctx_lock:
            try:
                if kind == "progress":
                    self.ctx.progress(int(message["step"]), int(message["total"]), text=message.get("text"))
                elif kind == "metric":
                    self.ctx.metric(str(message["name"]), float(message["value"]), int(message["step"]))
                elif kind == "log":
                    self._log(str(message["line"]))
                elif kind == "emit":
                    self.ctx.emit(message.get("piece"))
                elif kind == "preview":
                    self.ctx.preview_path(str(message["path"]))
                elif kind == "result":
                    self.result = message
                elif kind == "error":
                    self.error = message
                # "hello" and kinds a newer child may send: nothing to relay.
            except Exception:  # a malformed event or a failing context must not stop the relay (the child would block)
                log.exception("could not relay a %r event from a child process", kind)

    def _request_stop(self) -> None:
        with self._conn_lock:
            self._stop_requested = True
            self._send_stop()

    def _send_stop(self) -> None:
        if self._conn is not None:
            try:
                self._conn.sendall(protocol.encode(protocol.STOP))
            except OSError:
                pass  # it is gone already; the exit status tells the rest

    def _close_conn(self) -> None:
        with self._conn_lock:
            if self._conn is not None:
                try:
                    self._conn.shutdown(socket.SHUT_RDWR)  # wakes the events thread if it still reads
                except OSError:
                    pass
                self._conn.close()

    # -- output -------------------------------------------------------------
    def _relay_output(self, stream: IO[bytes]) -> None:
        relay_lines(stream, self._log)

    def _log(self, line: str) -> None:
        with self._ctx_lock:
            self.tail.append(line)
            try:
                self.ctx.log(line)
            except Exception:
                log.exception("could not relay a log line from a child process")


def relay_lines(stream: IO[bytes], sink) -> None:
    """Every line a child prints goes to `sink`; read always, so a chatty child never blocks on the pipe."""
    try:
        for raw in iter(lambda: stream.readline(_MAX_LINE_BYTES), b""):
            for piece in raw.split(b"\r"):  # a progress bar redraws with \r: each redraw is a line
                line = piece.decode("utf-8", "replace").rstrip("\n")
                if line.strip():
                    sink(line)
    except (OSError, ValueError):
        pass


def has_exited(pid: int) -> bool:
    # WNOWAIT leaves the child a zombie, so its id (the group's id) cannot be reused before the group is killed.
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def kill_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass

"""What a target running in the child process sees: the job context's methods, sent to the parent.

A class of its own (not in child_main.py) because child_main runs as `__main__`: a target that
imports ChildContext for its type hints must get the same class the entry point builds.
"""
from __future__ import annotations

import os
import socket
import threading
import traceback
from collections.abc import Mapping
from typing import Any

from modules.errors import AtelierError
from modules.jobs import child_protocol as protocol


class ChildContext:
    """progress / metric / log / emit / preview_path relayed to the parent; `interrupted` set by it.

    Only rank 0 of a multi-process launch is connected; on the other ranks every method is a
    no-op and `interrupted` stays False, so a distributed target broadcasts rank 0's decision.
    """

    def __init__(self, channel: socket.socket | None):
        self._channel = channel
        self._send_lock = threading.Lock()  # a target may report from several threads
        self._stop = threading.Event()
        if channel is not None:
            threading.Thread(target=self._listen, name="atelier-child-stop", daemon=True).start()

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> "ChildContext":
        path = environ.get(protocol.ENV_SOCKET)
        if not path or not protocol.is_rank_zero(environ):
            return cls(None)
        channel = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        channel.connect(path)
        ctx = cls(channel)
        ctx._send({"type": "hello", "pid": os.getpid()})
        return ctx

    @property
    def connected(self) -> bool:
        return self._channel is not None

    # -- the job context ------------------------------------------------
    @property
    def interrupted(self) -> bool:
        return self._stop.is_set()

    def progress(self, step: int, total: int, text: str | None = None) -> None:
        self._send({"type": "progress", "step": int(step), "total": int(total), "text": text})

    def metric(self, name: str, value: float, step: int) -> None:
        self._send({"type": "metric", "name": str(name), "value": float(value), "step": int(step)})

    def log(self, line: str) -> None:
        self._send({"type": "log", "line": str(line)})

    def emit(self, piece: Any) -> None:
        self._send({"type": "emit", "piece": piece})

    def preview_path(self, path: str | os.PathLike) -> None:
        # Absolute: the parent may run in another working folder.
        self._send({"type": "preview", "path": os.path.abspath(path)})

    # -- used by child_main ---------------------------------------------
    def send_result(self, value: Any) -> None:
        self._send({"type": "result", "value": value})

    def send_error(self, exc: BaseException) -> None:
        self._send(error_event(exc))

    def close(self) -> None:
        if self._channel is not None:
            try:
                self._channel.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._channel.close()

    # -- the wire -------------------------------------------------------
    def _send(self, message: dict) -> None:
        if self._channel is None:
            return
        data = protocol.encode(message)  # encode first: a value that is not JSON fails here, whole
        with self._send_lock:
            self._channel.sendall(data)

    def _listen(self) -> None:
        reader = self._channel.makefile("rb")
        try:
            for line in reader:
                message = protocol.decode(line)
                if message == protocol.STOP:
                    self._stop.set()
        except (OSError, ValueError):
            pass
        # The parent is gone (the server stopped or crashed): stop as if asked, rather than train on unwatched.
        self._stop.set()


def error_event(exc: BaseException) -> dict:
    """An exception as the "error" message (child_protocol.py): what the parent needs to judge and report it."""
    is_atelier = isinstance(exc, AtelierError)
    message = exc.message if is_atelier else str(exc)
    try:
        tb = "".join(traceback.format_exception(exc))
    except MemoryError:
        tb = ""
    return {
        "type": "error",
        "error": type(exc).__name__,
        "message": message,
        "field": exc.field if is_atelier else None,
        "status": int(exc.status) if is_atelier else 500,
        "atelier": is_atelier,
        # torch's OutOfMemoryError (CUDA) is a RuntimeError, named so; importing torch here to check would be wrong.
        "memory": isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError",
        "traceback": tb,
    }

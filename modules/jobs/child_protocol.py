"""The wire between a job and its child process: environment names and JSON-line messages.

The parent listens on a Unix domain socket in a private temporary folder and passes its path in
the environment, because launchers such as `accelerate launch` start the work in a grandchild and
close inherited file descriptors, but pass the environment on. One message is one JSON object on
one line, with a "type":

child → parent (only rank 0 connects and sends):
    {"type": "hello", "pid": 123}
    {"type": "progress", "step": 3, "total": 10, "text": "epoch 1"}     (text may be null)
    {"type": "metric", "name": "loss", "value": 0.25, "step": 3}
    {"type": "log", "line": "saved checkpoint-3"}
    {"type": "emit", "piece": <any JSON value>}
    {"type": "preview", "path": "/abs/path/sample-3.png"}
    {"type": "result", "value": <the target's return value>}
    {"type": "error", "error": "ValueError", "message": "…", "field": null, "status": 400,
     "atelier": false, "memory": false, "traceback": "Traceback (most recent call last): …"}
parent → child:
    {"type": "stop"}        the user pressed Stop: save a checkpoint and return

A persistent worker (worker.py, worker_main.py) answers calls on the same wire until "stop":
parent → worker:  {"type": "call", "id": 7, "method": "predict", "args": {…}}
worker → parent:  {"type": "hello", "pid": 123} once, then per call {"type": "reply", "id": 7, "value": …}
                  or an "error" message as above with "id": 7 ("id": null: the worker could not start)
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

ENV_SOCKET = "ATELIER_CHILD_SOCKET"  # path of the parent's Unix socket
ENV_REQUEST = "ATELIER_CHILD_REQUEST"  # path of the request, a JSON file every rank reads
ENV_MEMORY_MB = "ATELIER_CHILD_MEMORY_LIMIT_MB"  # RLIMIT_AS for the process that runs the target

STOP = {"type": "stop"}


def encode(message: Mapping[str, Any]) -> bytes:
    # NaN stays allowed: both ends are Python's json, and a NaN loss is news the parent must get.
    return json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n"


def decode(line: bytes) -> dict | None:
    """One message, or None when the line is not a JSON object with a type."""
    try:
        message = json.loads(line)
    except ValueError:
        return None
    return message if isinstance(message, dict) and isinstance(message.get("type"), str) else None


def is_rank_zero(environ: Mapping[str, str]) -> bool:
    """Under a multi-process launcher only the first process reports; a plain child is rank 0."""
    return all(environ.get(name, "0") in ("", "0") for name in ("RANK", "LOCAL_RANK"))

"""Targets that tests/unit/test_jobs_child.py runs in a child process (`tests.jobs_child_targets:name`).

Stdlib only, so the child starts in a blink; each does one thing a real job (training) could do.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from modules.errors import InvalidRequest


def report(ctx, request):
    """Every kind of event, in a known order, then a result."""
    ctx.log("starting")
    for step in range(1, 4):
        ctx.progress(step, 3, text=f"step {step}")
        ctx.metric("loss", 1.0 / step, step)
        ctx.emit({"token": step})
    sample = Path(request["folder"]) / "sample.png"
    sample.write_bytes(b"not really a png")
    ctx.preview_path(str(sample))
    ctx.emit("last piece")
    ctx.log("finished")
    return {"echo": request, "wrapped": os.environ.get("ATELIER_TEST_WRAPPED"), "argv0": sys.argv[0]}


def raise_atelier(ctx, request):
    raise InvalidRequest("rank must be at least 1", "rank")


def raise_value(ctx, request):
    ctx.log("about to fail")
    raise ValueError("the dataset has no images")


def exit_status(ctx, request):
    print("exiting without a result", flush=True)
    os._exit(request["status"])


def kill_self(ctx, request):
    print("killing myself", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(10)


def allocate(ctx, request):
    """Grow until the memory limit stops it."""
    chunks = []
    while True:
        chunks.append(bytearray(10 << 20))
        if len(chunks) > 400:  # 4 GB: the limit was not applied
            return "allocated 4 GB"


def not_json(ctx, request):
    return {"value": object()}


def until_interrupted(ctx, request):
    """A training loop: step until Stop, then save a checkpoint and return."""
    step = 0
    while not ctx.interrupted:
        step += 1
        ctx.progress(step, 1_000_000)
        time.sleep(0.02)
    checkpoint = Path(request["folder"]) / f"checkpoint-{step}.txt"
    checkpoint.write_text(f"step {step}\n")
    return {"stopped_at": step, "checkpoint": str(checkpoint)}


def ignore_stop(ctx, request):
    """Deaf to Stop and to SIGTERM, with a grandchild of its own (which inherits the ignored SIGTERM)."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    helper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    ctx.emit({"pid": os.getpid(), "helper": helper.pid})
    while True:
        time.sleep(0.05)


def chatty(ctx, request):
    for i in range(request["lines"]):
        print(f"line {i} of a very chatty child")
    return request["lines"]


def returns_but_lingers(ctx, request):
    """Returns, but a non-daemon thread would keep the process alive for ten minutes."""
    import threading

    threading.Thread(target=time.sleep, args=(600,)).start()
    return "done"

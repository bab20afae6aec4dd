"""A persistent worker's entry: `<python> path/to/worker_main.py target` (see worker.py).

In order: apply the memory limit, connect to the parent, build the worker object (`target` names a
class or a factory taking no arguments), say hello, then answer each "call" with a
"reply" (the method's JSON return value) or an "error", one at a time, until "stop" or until
the parent is gone. Any Python may run it (an extension's own environment too): it imports
only the standard library and modules.jobs.
"""
from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

if __name__ == "__main__":
    # As in child_main.py: the project root on sys.path, not modules/jobs/.
    sys.path[0] = str(Path(__file__).resolve().parents[2])

from modules.jobs import child_protocol as protocol  # noqa: E402 (needs the path set above)
from modules.jobs.child_context import error_event  # noqa: E402
from modules.jobs.child_main import limit_memory, resolve  # noqa: E402


def serve(target: str, channel: socket.socket) -> int:
    def send(message: dict) -> None:
        channel.sendall(protocol.encode(message))

    try:
        worker = resolve(target)()
    except BaseException as exc:  # the parent reports it as the worker's failure to start
        send({**error_event(exc), "id": None})
        return 1
    send({"type": "hello", "pid": os.getpid()})
    for line in channel.makefile("rb"):
        message = protocol.decode(line)
        if message == protocol.STOP:
            break
        if message is None or message["type"] != "call":  # unreadable, or a kind a newer parent sends
            continue
        call_id, method = message.get("id"), str(message.get("method", ""))
        try:
            if method.startswith("_") or not callable(getattr(worker, method, None)):
                raise AttributeError(f"the worker {target} has no method {method!r}")
            value = getattr(worker, method)(**(message.get("args") or {}))
            reply = protocol.encode({"type": "reply", "id": call_id, "value": value})  # not JSON: fails here, whole
        except Exception as exc:
            reply = protocol.encode({**error_event(exc), "id": call_id})
        channel.sendall(reply)
    return 0


def main(argv: list[str]) -> int:
    if len(argv) != 2 or ":" not in argv[1]:
        print(f"usage: {argv[0]} package.module:factory", file=sys.stderr)
        return 2
    if os.environ.get(protocol.ENV_MEMORY_MB):
        limit_memory(int(os.environ[protocol.ENV_MEMORY_MB]))
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as channel:
        channel.connect(os.environ[protocol.ENV_SOCKET])
        return serve(argv[1], channel)


if __name__ == "__main__":
    sys.exit(main(sys.argv))

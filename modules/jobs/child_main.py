"""The child process's entry: `<launcher…> path/to/child_main.py package.module:function`.

Run as a file rather than with -m, because `accelerate launch` wants a script path. In order:
apply the memory limit, read the request, connect to the parent (rank 0 only), import the
target, call `function(ctx, request)`, send back its return value or its error.
"""
from __future__ import annotations

import importlib
import importlib.util
import json
import os
import sys
import traceback
from pathlib import Path
from typing import Any, Callable

if __name__ == "__main__":
    # Run as a file, Python puts modules/jobs/ first on sys.path, where store.py or engine.py could
    # shadow a library's module of that name; the project root belongs there instead.
    sys.path[0] = str(Path(__file__).resolve().parents[2])

from modules.jobs import child_protocol as protocol  # noqa: E402 (needs the path set above)
from modules.jobs.child_context import ChildContext  # noqa: E402

# Freed when the target runs out of memory, so that the report of it can still be built and sent.
_CUSHION_BYTES = 4 << 20


def limit_memory(megabytes: int) -> None:
    """RLIMIT_AS: past it, allocations fail (MemoryError) instead of the machine swapping or OOM-killing."""
    import resource

    limit = megabytes << 20
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    # Hard as well as soft, so the target cannot lift it again.
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def resolve(target: str) -> Callable[..., Any]:
    """"package.module:name", or "/path/to/file.py:name" (an extension's file, imported without
    putting its folder on sys.path, where its module names could shadow a library's)."""
    module_name, _, attribute = target.rpartition(":")
    obj: Any
    if module_name.endswith(".py"):
        spec = importlib.util.spec_from_file_location(f"atelier_child_{Path(module_name).stem}", module_name)
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot import {module_name}")
        obj = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = obj  # dataclasses and pickling look their module up here
        spec.loader.exec_module(obj)
    else:
        obj = importlib.import_module(module_name)
    for part in attribute.split("."):
        obj = getattr(obj, part)
    return obj


def report(ctx: ChildContext, exc: BaseException) -> None:
    if ctx.connected:
        try:
            ctx.send_error(exc)
            return
        except Exception:  # the channel broke: stderr still reaches the parent's log
            pass
    traceback.print_exception(exc, file=sys.stderr)


def main(argv: list[str]) -> int:
    if len(argv) != 2 or ":" not in argv[1]:
        print(f"usage: {argv[0]} package.module:function", file=sys.stderr)
        return 2
    environ = os.environ
    if environ.get(protocol.ENV_MEMORY_MB):
        limit_memory(int(environ[protocol.ENV_MEMORY_MB]))
    with open(environ[protocol.ENV_REQUEST], encoding="utf-8") as f:
        request = json.load(f)
    ctx = ChildContext.from_environ(environ)
    cushion = bytearray(_CUSHION_BYTES)
    try:
        ctx.send_result(resolve(argv[1])(ctx, request))
        return 0
    except SystemExit:  # the target chose its exit status; the parent reports it as such
        raise
    except BaseException as exc:
        del cushion
        report(ctx, exc)
        return 1
    finally:
        ctx.close()


if __name__ == "__main__":
    sys.exit(main(sys.argv))

"""How a child process's end becomes the job's error: one plain sentence a person can act on."""
from __future__ import annotations

import re
import signal
from collections.abc import Sequence

from modules.errors import AtelierError

SHOWN_LINES = 8  # log lines quoted in a message; the whole log is in the job's log

# What allocators and runtimes print when memory runs out at the C level, where no MemoryError is raised.
_MEMORY_HINT = re.compile(r"MemoryError|Cannot allocate memory|std::bad_alloc|out of memory", re.IGNORECASE)
# A launcher (accelerate's simple launcher; any Python one using subprocess's check) words its child's end so.
_LAUNCHED_STATUS = re.compile(r"returned non-zero exit status (\d+)")
_LAUNCHED_SIGNAL = re.compile(r"died with <Signals\.(SIG[A-Z0-9]+): \d+>|\((SIG[A-Z0-9]+)\) received")


class ChildFailed(AtelierError):
    """The child process crashed, ran out of memory or had to be killed: the machine's fault, not the request's."""

    status = 500


def signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def could_not_start(command: str, exc: OSError) -> ChildFailed:
    return ChildFailed(f"could not start the child process {command!r}: {exc.strerror or exc}")


def from_error(event: dict, memory_limit_mb: int | None) -> AtelierError:
    """The child reported an exception of its target."""
    name, message = str(event.get("error") or "Exception"), str(event.get("message") or "")
    if event.get("atelier"):
        err = AtelierError(message, event.get("field"))
        err.status = int(event.get("status") or 400)  # same convention as Job.raise_for_error
        return err
    described = f"{name}: {message}" if message else name
    if event.get("memory"):
        if memory_limit_mb:
            return ChildFailed(f"the child process exceeded its memory limit of {memory_limit_mb} MB ({described})")
        return ChildFailed(f"the child process ran out of memory ({described})")
    return ChildFailed(described)


def from_exit(returncode: int, tail: Sequence[str], memory_limit_mb: int | None, via_launcher: bool) -> ChildFailed:
    """The child process ended without a result: name its exit status or signal, quote its last lines."""
    status = returncode if returncode >= 0 else None
    sig = signal_name(-returncode) if returncode < 0 else None
    note = ""
    if via_launcher and returncode > 0:
        # The launcher exits 1 whatever happened to the process it started; its log says what did.
        launched_status, launched_signal = _launched_end(tail)
        if launched_signal or launched_status is not None:
            status, sig = launched_status, launched_signal
            note = f" (reported by the launcher, which exited with status {returncode})"
            tail = _before_launcher_traceback(tail)  # the child's own last lines say more than the launcher's
    memory_hint = any(_MEMORY_HINT.search(line) for line in tail)
    if sig:
        text = f"the child process was killed by {sig}{note}"
        if sig == "SIGKILL":
            text += (f", probably for exceeding its memory limit of {memory_limit_mb} MB" if memory_limit_mb
                     else ", probably for using too much memory (the system's out-of-memory killer)")
        elif memory_hint:
            text += _memory_clause(memory_limit_mb)
    else:
        text = f"the child process exited with status {status}{note} without returning a result"
        if memory_hint:
            text += _memory_clause(memory_limit_mb)
    return ChildFailed(text + quote_tail(tail))


def forced_stop(grace_s: float, sig: str) -> ChildFailed:
    return ChildFailed(f"the child process did not stop within {grace_s:g} s of the stop request and was "
                       f"killed ({sig}); the work since its last checkpoint is lost")


def _memory_clause(memory_limit_mb: int | None) -> str:
    if memory_limit_mb:
        return f"; it probably exceeded its memory limit of {memory_limit_mb} MB"
    return "; it probably ran out of memory"


def _launched_end(tail: Sequence[str]) -> tuple[int | None, str | None]:
    for line in reversed(tail):
        if match := _LAUNCHED_SIGNAL.search(line):
            return None, match.group(1) or match.group(2)
        if match := _LAUNCHED_STATUS.search(line):
            return int(match.group(1)), None
    return None, None


def _before_launcher_traceback(tail: Sequence[str]) -> Sequence[str]:
    starts = [i for i, line in enumerate(tail) if line.startswith("Traceback (most recent call last)")]
    return tail[:starts[-1]] if starts else tail


def quote_tail(tail: Sequence[str]) -> str:
    lines = [line for line in tail if line.strip()][-SHOWN_LINES:]
    if not lines:
        return "; it wrote nothing to its log"
    return "; its last log lines:\n" + "\n".join(lines)

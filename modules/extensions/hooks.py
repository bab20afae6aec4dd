"""Named hooks with ordered dispatch (extension priority, then name).

A hook that raises (or returns the wrong type, or invalid parameters) is reported
through the failure handler and skipped; the operation it was part of goes on with
the value it had before that hook.

Hooks are called by the code doing the work — the job worker thread for generation
and chat — never in Gradio's event loop, so a slow hook delays its own job only.
"""
from __future__ import annotations

import logging
import threading
import time
import traceback
from dataclasses import dataclass
from typing import Any, Callable

log = logging.getLogger("atelier.hooks")

HOOK_NAMES = (
    "before_generate",  # (request) -> request or None: may change parameters
    "after_generate",  # (result) -> result or None: may post-process images before they are saved
    "on_image_saved",  # (saved GeneratedImage, path set) -> None
    "before_chat",  # (ChatRequest) -> ChatRequest or None: may change the messages or sampling
    "after_chat",  # (ChatResult) -> ChatResult or None: may change the text before it is saved and returned
    "chat_stream",  # (ChatStreamPiece) -> None: each piece of a reply as it is generated
)

SLOW_HOOK_SECONDS = 2.0  # a hook slower than this is named in the log

FailureHandler = Callable[[str, str, str], None]  # (owner, hook name, traceback text)


@dataclass
class _Registered:
    owner: str
    priority: int
    fn: Callable


class HookRegistry:
    def __init__(self, on_failure: FailureHandler | None = None):
        self._hooks: dict[str, list[_Registered]] = {name: [] for name in HOOK_NAMES}
        self._lock = threading.Lock()
        self._on_failure = on_failure

    def set_failure_handler(self, on_failure: FailureHandler | None) -> None:
        self._on_failure = on_failure

    def add(self, name: str, fn: Callable, owner: str = "builtin", priority: int = 100) -> None:
        if name not in self._hooks:
            raise ValueError(f"unknown hook {name!r}; hooks: {', '.join(HOOK_NAMES)}")
        if not callable(fn):
            raise TypeError(f"hook {name} of {owner}: {fn!r} is not callable")
        with self._lock:
            self._hooks[name].append(_Registered(owner, priority, fn))
            self._hooks[name].sort(key=lambda r: (r.priority, r.owner))

    def remove_owner(self, owner: str) -> None:
        with self._lock:
            for name in self._hooks:
                self._hooks[name] = [r for r in self._hooks[name] if r.owner != owner]

    def handlers(self, name: str) -> list[_Registered]:
        with self._lock:
            return list(self._hooks[name])

    def owners(self, name: str) -> list[str]:
        return [r.owner for r in self.handlers(name)]

    def filter(self, name: str, value: Any, skip_owners: frozenset[str] = frozenset(),
               validate: Callable[[Any, Any], Any] | None = None) -> Any:
        """Pass `value` through each handler in order; a handler returning None keeps it.

        `validate(old, new)` checks a handler's return value and may normalise it; if it
        raises, that handler counts as failed and `old` goes on.
        """
        for reg in self.handlers(name):
            if reg.owner in skip_owners:
                continue
            started = time.monotonic()
            try:
                out = reg.fn(value)
                if out is not None and validate is not None:
                    out = validate(value, out)
            except Exception:
                self._report(reg, name)
                continue
            finally:
                took = time.monotonic() - started
                if took > SLOW_HOOK_SECONDS:
                    log.warning("hook %s of %s took %.1f s", name, reg.owner, took)
            if out is not None:
                value = out
        return value

    def notify(self, name: str, payload: Any) -> None:
        """Call every handler; return values are ignored."""
        for reg in self.handlers(name):
            try:
                reg.fn(payload)
            except Exception:
                self._report(reg, name)

    # -- the typed entry points the task code calls ---------------------
    def before_generate(self, request):
        """Handlers may return a changed request; it is validated again as the same type."""
        return self.filter("before_generate", request, validate=_same_request_type)

    def after_generate(self, result):
        """Handlers may change `result.images` (pixels, infotext) before they are saved."""
        return self.filter("after_generate", result, validate=_same_type)

    def image_saved(self, image) -> None:
        self.notify("on_image_saved", image)

    def before_chat(self, request):
        """Handlers may return a changed request; it is validated again as the same type."""
        return self.filter("before_chat", request, validate=_same_request_type)

    def after_chat(self, reply):
        """Handlers may change `reply.text` (the saved and returned text; the stream was already sent)."""
        return self.filter("after_chat", reply, validate=_same_type)

    def chat_stream(self, piece) -> None:
        self.notify("chat_stream", piece)

    def _report(self, reg: _Registered, name: str) -> None:
        text = traceback.format_exc()
        log.error("hook %s of %s raised; skipped:\n%s", name, reg.owner, text)
        if self._on_failure:
            try:
                self._on_failure(reg.owner, name, text)
            except Exception:  # reporting must never break the operation
                log.exception("the hook failure handler raised")


def _same_type(old, new):
    if not isinstance(new, type(old)):
        raise TypeError(f"the hook returned {type(new).__name__}; expected {type(old).__name__} or None")
    return new


def _same_request_type(old, new):
    """A changed pydantic request is validated again, so a hook cannot smuggle in steps=10**6."""
    _same_type(old, new)
    validate = getattr(type(old), "model_validate", None)
    if validate is None:
        return new
    return validate({name: getattr(new, name) for name in type(new).model_fields})

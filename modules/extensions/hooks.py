"""Named hooks with ordered dispatch (extension priority, then name).

A hook that raises is reported and skipped; the operation it was part of goes on.
"""
from __future__ import annotations

import logging
import threading
import traceback
from dataclasses import dataclass
from typing import Any, Callable

log = logging.getLogger("atelier.hooks")

HOOK_NAMES = (
    "before_generate",  # (request) -> request or None: may change parameters
    "after_generate",  # (result) -> result or None: may post-process images before they are saved
    "on_image_saved",  # (saved image info) -> None
    "before_chat",  # (chat request) -> request or None
    "after_chat",  # (chat reply) -> reply or None
)


@dataclass
class _Registered:
    owner: str
    priority: int
    fn: Callable


class HookRegistry:
    def __init__(self, on_failure: Callable[[str, str, str], None] | None = None):
        self._hooks: dict[str, list[_Registered]] = {name: [] for name in HOOK_NAMES}
        self._lock = threading.Lock()
        self._on_failure = on_failure  # (owner, hook name, traceback text)

    def add(self, name: str, fn: Callable, owner: str = "builtin", priority: int = 100) -> None:
        if name not in self._hooks:
            raise ValueError(f"unknown hook {name!r}; hooks: {', '.join(HOOK_NAMES)}")
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

    def filter(self, name: str, value: Any, skip_owners: frozenset[str] = frozenset()) -> Any:
        """Pass `value` through each handler in order; a handler returning None keeps it."""
        for reg in self.handlers(name):
            if reg.owner in skip_owners:
                continue
            try:
                out = reg.fn(value)
            except Exception:
                self._report(reg, name)
                continue
            if out is not None:
                value = out
        return value

    def notify(self, name: str, payload: Any) -> None:
        self.filter(name, payload)

    def _report(self, reg: _Registered, name: str) -> None:
        text = traceback.format_exc()
        log.error("hook %s of %s raised; skipped:\n%s", name, reg.owner, text)
        if self._on_failure:
            self._on_failure(reg.owner, name, text)

"""The list of UI tabs. Built-in tabs and extension tabs register the same way.

A tab is a title and a `build(studio)` callable that creates Gradio components inside
an open `gr.Tab` and returns them by name. modules/ stores the callable; only webui/
calls it, so modules/ never imports gradio.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class TabSpec:
    title: str
    build: Callable
    owner: str = "builtin"
    order: int = 100
    elem_id: str = ""


class TabRegistry:
    def __init__(self):
        self._tabs: list[TabSpec] = []
        self._lock = threading.Lock()

    def add(self, spec: TabSpec) -> None:
        with self._lock:
            self._tabs = [t for t in self._tabs if not (t.owner == spec.owner and t.title == spec.title)]
            self._tabs.append(spec)

    def remove_owner(self, owner: str) -> None:
        with self._lock:
            self._tabs = [t for t in self._tabs if t.owner != owner]

    def list(self) -> list[TabSpec]:
        with self._lock:
            return sorted(self._tabs, key=lambda t: (t.order, t.title))

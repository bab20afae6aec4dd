"""Small owner-aware registries the Studio holds for things extensions add: REST routes
under /ext/<name>/ and vision tasks. Each entry carries its owner so disabling an
extension removes exactly what it added.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Callable

HTTP_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


@dataclass(frozen=True)
class RouteSpec:
    owner: str  # the extension name: the route answers at /ext/<owner><path>
    path: str  # starts with "/", e.g. "/hello" or "/items/{item_id}"
    methods: tuple[str, ...]
    endpoint: Callable  # a plain FastAPI-style endpoint (typed parameters, pydantic bodies)
    summary: str = ""


class RouteRegistry:
    """Routes by owner; `version` changes on every add/remove so the web layer can rebuild."""

    def __init__(self):
        self._routes: list[RouteSpec] = []
        self._lock = threading.Lock()
        self.version = 0

    def add(self, spec: RouteSpec) -> None:
        with self._lock:
            self._routes = [r for r in self._routes
                            if not (r.owner == spec.owner and r.path == spec.path and set(r.methods) & set(spec.methods))]
            self._routes.append(spec)
            self.version += 1

    def remove_owner(self, owner: str) -> None:
        with self._lock:
            self._routes = [r for r in self._routes if r.owner != owner]
            self.version += 1

    def list(self, owner: str | None = None) -> list[RouteSpec]:
        with self._lock:
            return [r for r in self._routes if owner is None or r.owner == owner]

    def owners(self) -> list[str]:
        return sorted({r.owner for r in self.list()})


@dataclass(frozen=True)
class VisionTaskSpec:
    """A vision task (caption, detect, segment, …) the vision tab lists and runs.

    `run(image, options: dict) -> dict | str` is called on the job worker with a PIL image.
    """

    name: str
    run: Callable
    title: str = ""
    description: str = ""
    model_kind: str | None = None  # the models folder its weights come from, if any
    owner: str = "builtin"
    options: dict = field(default_factory=dict)  # default options shown in the UI
    check: Callable | None = None  # check(options) at submit: refuses bad options (naming the field) before the queue


class VisionTaskRegistry:
    def __init__(self):
        self._tasks: dict[str, VisionTaskSpec] = {}
        self._lock = threading.Lock()

    def add(self, spec: VisionTaskSpec) -> None:
        with self._lock:
            existing = self._tasks.get(spec.name)
            if existing is not None and existing.owner != spec.owner:
                raise ValueError(f"vision task {spec.name!r} already belongs to {existing.owner}")
            self._tasks[spec.name] = spec

    def remove_owner(self, owner: str) -> None:
        with self._lock:
            self._tasks = {k: v for k, v in self._tasks.items() if v.owner != owner}

    def get(self, name: str) -> VisionTaskSpec | None:
        with self._lock:
            return self._tasks.get(name)

    def list(self) -> list[VisionTaskSpec]:
        with self._lock:
            return sorted(self._tasks.values(), key=lambda t: t.name)

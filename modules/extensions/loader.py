"""Discover, load and isolate extensions.

An extension folder holds extension.toml and an entry module exposing `setup(api)`.
Loading imports the entry module as a package of its own (relative imports work)
and calls setup with a fresh API object. Anything that goes wrong — a bad manifest,
an import error, setup raising, missing requirements — marks that extension failed
with its traceback and leaves every other extension and the studio running.
"""
from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import logging
import sys
import threading
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from modules.errors import AtelierError, NotFound
from modules.extensions.api import API_VERSIONS
from modules.extensions.environment import ExtensionEnvironment
from modules.extensions.manifest import MANIFEST, Manifest, check_name, read_manifest
from modules.extensions.registries import RouteRegistry
from modules.paths import DataPaths

if TYPE_CHECKING:
    from modules.studio import Studio

log = logging.getLogger("atelier.extensions")

REPO_EXTENSIONS = Path(__file__).resolve().parents[2] / "extensions"
SHIPPED = ("yolo",)  # shipped beside the example-* folders (tracked in the repo, not removable)


@dataclass
class ExtensionRecord:
    name: str
    folder: Path
    source: str  # "shipped" (the repo's examples) or "installed" (the data dir)
    manifest: Manifest | None = None
    status: str = "disabled"  # enabled | disabled | failed (not loaded) | error (loaded; a hook raised)
    error: str | None = None  # the traceback or message behind failed / error
    api: object | None = None  # the ExtensionAPIv1 while loaded
    failures: int = 0
    note: str = ""  # e.g. "restart to see its tab"
    in_ui: bool = False  # its tabs were built into the page that is being served
    package: str = ""
    environment: ExtensionEnvironment | None = None  # its own Python environment, when the studio's cannot host it
    environment_reason: str = ""  # why the studio's Python cannot (the extension's check)

    @property
    def loaded(self) -> bool:
        return self.api is not None


@dataclass
class _Found:
    name: str
    folder: Path
    source: str


def discover(folders: list[tuple[Path, str]]) -> list[_Found]:
    """Extension folders in the given roots; the first root holding a name wins."""
    seen: dict[str, _Found] = {}
    for root, source in folders:
        if not root.is_dir():
            continue
        for child in sorted(root.iterdir()):
            if not child.is_dir() or child.name.startswith(".") or not (child / MANIFEST).is_file():
                continue
            if child.name in seen:
                if seen[child.name].folder.resolve() != child.resolve():
                    log.warning("extension %s in %s is shadowed by %s", child.name, root, seen[child.name].folder)
                continue
            seen[child.name] = _Found(child.name, child, source)
    return list(seen.values())


def missing_requirements(requirements: tuple[str, ...]) -> list[str]:
    """Requirements the running Python does not satisfy (names and versions, no network)."""
    from importlib.metadata import PackageNotFoundError, version

    from packaging.requirements import InvalidRequirement, Requirement

    missing = []
    for text in requirements:
        try:
            req = Requirement(text)
            have = version(req.name)
        except (InvalidRequirement, PackageNotFoundError):
            missing.append(text)
            continue
        if req.specifier and not req.specifier.contains(have, prereleases=True):
            missing.append(text)
    return missing


class ExtensionLoader:
    """The extensions the studio knows, and loading/unloading them one at a time."""

    def __init__(self, studio: "Studio", repo_dir: Path = REPO_EXTENSIONS):
        self.studio = studio
        self.repo_dir = Path(repo_dir)
        self.user_dir = studio.paths.extensions  # installs go here (git-ignored)
        self.routes = RouteRegistry()
        self.records: dict[str, ExtensionRecord] = {}
        self.render_error = None  # set by the web UI: (message, traceback) -> shows it inside a tab
        self.tab_built = None  # set by the web UI: (owner) -> called inside each extension tab as it is built
        self._job_kind_owner: dict[str, str] = {}
        self._lock = threading.RLock()

    # -- discovery ------------------------------------------------------
    def roots(self) -> list[tuple[Path, str]]:
        roots = [(self.user_dir, "installed")]
        if self.repo_dir.resolve() != self.user_dir.resolve():
            roots.append((self.repo_dir, "shipped"))
        return roots

    def _source_of(self, folder: Path) -> str:
        if folder.parent.resolve() == self.repo_dir.resolve() and (folder.name.startswith("example-")
                                                                    or folder.name in SHIPPED):
            return "shipped"
        return "installed"

    def scan(self) -> None:
        """Refresh the records from disk; loaded extensions keep their state."""
        with self._lock:
            found = {f.name: f for f in discover(self.roots())}
            for name in list(self.records):
                if name not in found and not self.records[name].loaded:
                    del self.records[name]
            for name, f in found.items():
                if name not in self.records:
                    self.records[name] = ExtensionRecord(name, f.folder, self._source_of(f.folder))

    def disabled_names(self) -> set[str]:
        return set(self.studio.settings.get().extensions_disabled)

    def is_off(self, name: str, manifest: Manifest | None) -> bool:
        """Disabled by the user, or off by default (enabled_by_default = false) and never enabled."""
        if name in self.disabled_names():
            return True
        return manifest is not None and not manifest.enabled_by_default and \
            name not in self.studio.settings.get().extensions_enabled

    def load_enabled(self) -> None:
        """At start: load every enabled extension in (priority, name) order. Cheap: no ML imports."""
        self.scan()
        manifests = {}
        for rec in self.records.values():
            try:
                manifests[rec.name] = read_manifest(rec.folder)
            except AtelierError:
                manifests[rec.name] = None
        order = sorted(self.records, key=lambda n: (manifests[n].priority if manifests[n] else 100, n))
        for name in order:
            if self.is_off(name, manifests[name]):
                self.records[name].status = "disabled"
            else:
                self.load(name)

    def get(self, name: str) -> ExtensionRecord:
        check_name(name, "name")
        rec = self.records.get(name)
        if rec is None:
            self.scan()
            rec = self.records.get(name)
        if rec is None:
            raise NotFound(f"no extension named {name!r}; installed: {', '.join(sorted(self.records)) or 'none'}", "name")
        return rec

    # -- load / unload --------------------------------------------------
    def load(self, name: str) -> ExtensionRecord:
        with self._lock:
            rec = self.get(name)
            if rec.loaded:
                return rec
            rec.error, rec.failures = None, 0
            try:
                rec.manifest = read_manifest(rec.folder)
            except AtelierError as exc:
                return self._fail(rec, f"{MANIFEST}: {exc}")
            m = rec.manifest
            api_cls = API_VERSIONS.get(m.api_version)
            if api_cls is None:
                return self._fail(rec, f"targets extension API {m.api_version!r}; this Atelier offers "
                                       f"{', '.join(sorted(API_VERSIONS))}. Update the extension or Atelier.")
            note = f" {m.requirements_note}" if m.requirements_note else ""
            try:
                env, why = self.environment_for(rec, m)
                ready = env is None or env.ready()
            except AtelierError as exc:
                return self._fail(rec, f"{MANIFEST}: {exc}")
            except Exception:  # the extension's own check raised
                return self._fail(rec, traceback.format_exc())
            rec.environment, rec.environment_reason = env, why
            if not ready:
                return self._fail(rec, f"runs in a Python environment of its own because {why} That environment "
                                       f"is not built yet (or is outdated): enable it with 'install requirements' "
                                       f"(POST /atelier/extensions/{m.name}/enable {{\"confirm_requirements\": true}}) "
                                       f"to build {env.folder} from the exact pins of {m.environment}.{note}")
            missing = [] if env is not None else missing_requirements(m.requirements)
            if missing:
                return self._fail(rec, f"needs Python packages that are not installed: {', '.join(missing)}.{note} "
                                       "Install them from the Extensions tab (enable or update with 'install "
                                       "requirements').")
            api = api_cls(self.studio, m.name, m.priority, rec.folder, self.data_dir_of(m.name), self.report_failure,
                          python=env.python if env is not None else None)
            try:
                module = self._import(rec, m)
                setup = getattr(module, "setup", None)
                if not callable(setup):
                    raise AttributeError(f"{m.entry} has no setup(api) function")
                setup(api)
            except BaseException as exc:  # SystemExit from a broken extension too; never the studio's problem
                if isinstance(exc, KeyboardInterrupt):
                    raise
                api._unregister()  # roll back whatever setup registered before it raised
                self._forget_modules(rec)
                return self._fail(rec, traceback.format_exc())
            rec.api, rec.status = api, "enabled"
            log.info("extension %s %s loaded", m.name, m.version)
            return rec

    def unload(self, name: str) -> ExtensionRecord:
        with self._lock:
            rec = self.get(name)
            if rec.api is not None:
                rec.api._unregister()
                rec.api = None
            self._forget_modules(rec)
            return rec

    def data_dir_of(self, name: str) -> Path:
        return self.studio.paths.root / "extensions-data" / name

    def environment_for(self, rec: ExtensionRecord, m: Manifest) -> tuple[ExtensionEnvironment | None, str]:
        """Where its requirements live: (None, "") for the studio's own Python; else its own environment, and why
        (the extension's environment_check, which reads package metadata and must import nothing heavy)."""
        if not m.environment:
            return None, ""
        why = "it always runs in its own."
        if m.environment_check:
            module_name, _, function = m.environment_check.partition(":")
            module = importlib.import_module(f"{self._package(rec, m)}.{module_name}")
            answer = getattr(module, function)()
            if answer is None:
                return None, ""
            why = str(answer)
        return ExtensionEnvironment(self.environment_folder(m.name), rec.folder / m.environment), why

    def environment_folder(self, name: str) -> Path:
        """<--extension-envs>/<name>, else <data-dir>/extensions-data/<name>/env."""
        shared = self.studio.options.extension_envs
        return Path(shared).resolve() / name if shared else self.data_dir_of(name) / "env"

    def _package(self, rec: ExtensionRecord, m: Manifest) -> str:
        # The folder becomes a package of its own, so `from . import util` works inside it.
        package = "atelier_ext_" + m.name.replace("-", "_")
        if rec.package == package and package in sys.modules:
            return package
        rec.package = package
        self._forget_modules(rec)  # never reuse a module object left by an earlier load
        spec = importlib.machinery.ModuleSpec(package, None, is_package=True)
        pkg = importlib.util.module_from_spec(spec)
        pkg.__path__ = [str(rec.folder)]
        sys.modules[package] = pkg
        importlib.invalidate_caches()  # an update (git pull) may have changed the files
        return package

    def _import(self, rec: ExtensionRecord, m: Manifest):
        self._forget_modules(rec)  # a fresh package: never reuse a module object left by an earlier load
        return importlib.import_module(f"{self._package(rec, m)}.{Path(m.entry).stem}")

    @staticmethod
    def _forget_modules(rec: ExtensionRecord) -> None:
        if not rec.package:
            return
        for key in [k for k in sys.modules if k == rec.package or k.startswith(rec.package + ".")]:
            del sys.modules[key]

    def _fail(self, rec: ExtensionRecord, text: str) -> ExtensionRecord:
        rec.status, rec.error, rec.api = "failed", text, None
        log.error("extension %s failed to load; the studio goes on without it:\n%s", rec.name, text)
        return rec

    # -- isolation at run time --------------------------------------------
    def report_failure(self, owner: str, where: str, text: str) -> None:
        """A hook, tab or job of `owner` raised: mark it erroring; it stays loaded."""
        rec = self.records.get(owner)
        if rec is None:
            return
        rec.failures += 1
        rec.error = f"{where} raised (failure {rec.failures}):\n{text}"
        if rec.status == "enabled":
            rec.status = "error"
        log.error("extension %s: %s raised; skipped:\n%s", owner, where, text)

    # -- shared registrations the API needs --------------------------------
    def claim_job_kind(self, kind: str, owner: str) -> None:
        with self._lock:
            holder = self._job_kind_owner.get(kind)
            if holder not in (None, owner) or (holder is None and kind in self.studio.jobs.kinds()):
                raise ValueError(f"job kind {kind!r} exists already ({holder or 'built in'})")
            self._job_kind_owner[kind] = owner

    def set_model_kind(self, kind: str, folder: Path | None) -> None:
        """Add (or with None remove) a model kind; DataPaths is immutable, so swap it."""
        with self._lock:
            paths = self.studio.paths
            extra = dict(paths.extra_kinds)
            if folder is None:
                extra.pop(kind, None)
            else:
                extra[kind] = Path(folder)
            new = DataPaths(paths.root, dict(paths.overrides), extra)
            self.studio.paths = new
            self.studio.registry.paths = new
        if folder is not None:
            self.studio.registry.refresh(kind)

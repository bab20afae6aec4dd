"""Managing extensions: list, enable/disable, install (git URL, local folder or zip),
update (git pull), remove, settings sections.

Install, update and remove run code from elsewhere on this machine, so they are
refused when the studio is reachable by others (--listen/--share) unless
--enable-insecure-extension-access is given, as in AUTOMATIC1111.
"""
from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from modules.errors import AtelierError, InvalidRequest
from modules.extensions.loader import SHIPPED, ExtensionLoader, ExtensionRecord, missing_requirements
from modules.extensions.manifest import MANIFEST, read_manifest
from modules.paths import resolve_inside

log = logging.getLogger("atelier.extensions")

GIT_TIMEOUT = 300
PIP_TIMEOUT = 900
_URL_PREFIXES = ("https://", "http://", "git@", "ssh://", "git://", "file://")


class ExtensionAccessRefused(AtelierError):
    status = 403


class ExtensionManager(ExtensionLoader):
    ui_built = False  # set by mark_ui_built(): from then on new tabs need a restart

    def mark_ui_built(self) -> None:
        """The web layer built its Blocks: tabs of extensions loaded now are on the page."""
        self.ui_built = True
        for rec in self.records.values():
            rec.in_ui = rec.loaded

    def _tab_note(self, rec: ExtensionRecord) -> str:
        has_tabs = any(t.owner == rec.name for t in self.studio.tabs.list())
        if not (self.ui_built and has_tabs):
            return ""
        return "its tabs come back when the page is reloaded" if rec.in_ui else "restart the studio to see its tabs"

    # -- what the tab and the API show ------------------------------------
    def list(self) -> list[dict]:
        self.scan()
        return [self.describe(name) for name in sorted(self.records)]

    def describe(self, name: str) -> dict:
        rec = self.get(name)
        m = rec.manifest
        if m is None:
            try:
                m = rec.manifest = read_manifest(rec.folder)
            except AtelierError:
                m = None
        disabled = self.is_off(name, m)
        status = "disabled" if disabled and not rec.loaded else rec.status
        return {
            "name": name,
            "version": m.version if m else "?",
            "description": m.description if m else "",
            "api_version": m.api_version if m else "?",
            "priority": m.priority if m else None,
            "requirements": list(m.requirements) if m else [],
            "requirements_note": m.requirements_note if m else "",
            "status": status,
            "enabled": not disabled,
            "error": rec.error,
            "source": rec.source,
            "folder": str(rec.folder),
            "git": _git_info(rec.folder),
            "tabs": [t.title for t in self.studio.tabs.list() if t.owner == name],
            "routes": [f"/ext/{name}{r.path}" for r in self.routes.list(name)],
            "has_settings": bool(rec.api is not None and rec.api._settings_model is not None),
            # Its own Python environment (folder, ready, pins) and why, once a load has judged it; else null.
            "environment": ({**rec.environment.describe(), "reason": rec.environment_reason}
                            if rec.environment is not None else None),
            "note": rec.note,
        }

    # -- enable / disable (no restart; tabs follow on the next UI build) ----
    def enable(self, name: str, confirm_requirements: bool = False) -> dict:
        """Load it again (no restart). With `confirm_requirements`, its missing pip requirements are
        installed first (a shipped extension that is off by default installs them this way)."""
        rec = self.get(name)
        if confirm_requirements:
            self.check_access("enable with requirements")
            self._provide(rec, read_manifest(rec.folder), True)
        self._set_disabled(name, False)
        self.load(name)
        rec.note = self._tab_note(rec)
        return self.describe(name)

    def disable(self, name: str) -> dict:
        rec = self.get(name)
        self._set_disabled(name, True)
        self.unload(name)
        rec.status, rec.error = "disabled", None
        rec.note = "its tabs leave the page when the page is reloaded" if rec.in_ui else ""
        return self.describe(name)

    def _set_disabled(self, name: str, disabled: bool) -> None:
        settings = self.studio.settings.get()
        current = [n for n in settings.extensions_disabled if n != name]
        chosen = [n for n in settings.extensions_enabled if n != name]
        if disabled:
            current.append(name)
        else:
            chosen.append(name)  # remembered for extensions that are off by default
        self.studio.settings.update({"extensions_disabled": sorted(current), "extensions_enabled": sorted(chosen)})

    # -- settings sections --------------------------------------------------
    def settings_model(self, name: str):
        rec = self.get(name)
        return rec.api._settings_model if rec.api is not None else None

    def get_settings(self, name: str) -> dict:
        rec = self.get(name)
        if rec.api is None or rec.api._settings_model is None:
            raise InvalidRequest(f"the extension {name} has no settings section (or is not loaded)", "name")
        return rec.api.settings.model_dump(mode="json")

    def save_settings(self, name: str, values: dict) -> dict:
        rec = self.get(name)
        if rec.api is None or rec.api._settings_model is None:
            raise InvalidRequest(f"the extension {name} has no settings section (or is not loaded)", "name")
        return rec.api.save_settings(values).model_dump(mode="json")

    # -- install / update / remove ---------------------------------------------
    def check_access(self, action: str) -> None:
        opts = self.studio.options
        if opts.exposed and not opts.enable_insecure_extension_access:
            raise ExtensionAccessRefused(
                f"{action} is refused while the studio listens beyond localhost (--listen/--share); "
                "restart with --enable-insecure-extension-access to allow it", "source" if action == "install" else "name")

    def install(self, source: str, confirm_requirements: bool = False) -> dict:
        """Install from a git URL, a local git repo or folder, or a .zip; then load it."""
        self.check_access("install")
        if not isinstance(source, str) or not source.strip():
            raise InvalidRequest("give a git URL, a local folder or a .zip file", "source")
        source = source.strip()
        if len(source) > 2048 or "\x00" in source:
            raise InvalidRequest("is too long or holds a NUL byte; give a git URL, a local folder or a .zip file", "source")
        self.user_dir.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".install-", dir=self.user_dir))
        try:
            base = Path(source.rstrip("/\\")).name.removesuffix(".git").removesuffix(".zip")[:100] or "extension"
            root = self._fetch(source, tmp / base)
            manifest = read_manifest(root, check_folder_name=False)
            if manifest.name.startswith("example-") or manifest.name in SHIPPED:
                raise InvalidRequest(f"{manifest.name!r}: names starting with 'example-' and the names "
                                     f"{', '.join(SHIPPED)} are kept for the shipped extensions", "extension.toml name")
            self.scan()
            if manifest.name in self.records:
                raise InvalidRequest(f"{manifest.name} is installed already; update or remove it", "source")
            if not manifest.environment:  # an environment is judged and built where the extension will live
                self._requirements(manifest.requirements, confirm_requirements)
            target = resolve_inside(self.user_dir, manifest.name, field_name="extension.toml name", must_exist=False)
            os.replace(root, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        self.scan()
        self._set_disabled(manifest.name, False)
        if manifest.environment and confirm_requirements:
            self._provide(self.get(manifest.name), manifest, True)
        rec = self.load(manifest.name)
        rec.note = self._tab_note(rec)
        return self.describe(manifest.name)

    def update(self, name: str, confirm_requirements: bool = False) -> dict:
        self.check_access("update")
        rec = self._installed(name)
        if not (rec.folder / ".git").exists():
            raise InvalidRequest(f"{name} was not installed from git; remove it and install it again", "name")
        _run(["git", "-C", str(rec.folder), "pull", "--ff-only"], GIT_TIMEOUT, "git pull")
        manifest = read_manifest(rec.folder)
        self._provide(rec, manifest, confirm_requirements)
        if name not in self.disabled_names():
            self.unload(name)
            self.load(name)
        return self.describe(name)

    def remove(self, name: str) -> dict:
        self.check_access("remove")
        rec = self._installed(name)
        folder = resolve_inside(self.user_dir, name, field_name="name")
        self.unload(name)
        shutil.rmtree(folder)
        with self._lock:
            self.records.pop(name, None)
            self._job_kind_owner = {k: v for k, v in self._job_kind_owner.items() if v != name}
        self._set_disabled(name, False)
        return {"name": name, "removed": True}

    def _installed(self, name: str) -> ExtensionRecord:
        rec = self.get(name)
        if rec.source == "shipped":
            raise InvalidRequest(f"{name} ships with Atelier; disable it instead", "name")
        return rec

    def _provide(self, rec: ExtensionRecord, manifest, confirmed: bool) -> None:
        """Its requirements where they belong: the studio's Python, or the extension's own environment (built
        only when confirmed; minutes, gigabytes)."""
        env, why = self.environment_for(rec, manifest)
        if env is None:
            self._requirements(manifest.requirements, confirmed)
            return
        if env.ready():
            return
        if not confirmed:
            raise InvalidRequest(f"{rec.name} runs in a Python environment of its own because {why} Confirm to "
                                 f"build it in {env.folder} from the exact pins of {manifest.environment}",
                                 "confirm_requirements")
        log.info("building the Python environment of %s in %s", rec.name, env.folder)
        env.build(log=log.info)

    def _requirements(self, requirements: tuple[str, ...], confirmed: bool) -> None:
        missing = missing_requirements(requirements)
        if not missing:
            return
        if not confirmed:
            raise InvalidRequest(
                f"this extension needs Python packages: {', '.join(missing)}. Confirm to install them with "
                f"{sys.executable} -m pip install", "confirm_requirements")
        with tempfile.TemporaryDirectory() as tmp:
            _run(pip_install_command(missing, Path(tmp)), PIP_TIMEOUT, "pip install")

    def _fetch(self, source: str, dest: Path) -> Path:
        """Put the extension's files in `dest`; returns the folder holding extension.toml."""
        local = Path(source).expanduser()
        if source.startswith(_URL_PREFIXES) or (local.is_dir() and (local / ".git").exists()):
            _run(["git", "clone", "--", source, str(dest)], GIT_TIMEOUT, "git clone")
            return dest
        if local.is_dir():
            if not (local / MANIFEST).is_file():
                raise InvalidRequest(f"{local} has no {MANIFEST}", "source")
            shutil.copytree(local, dest, symlinks=False, ignore=shutil.ignore_patterns("__pycache__"))
            return dest
        if local.is_file() and local.suffix.lower() == ".zip":
            return _extract_zip(local, dest)
        raise InvalidRequest(f"{source!r} is not a git URL, an existing folder or a .zip file", "source")



KEEP_PINNED = ("torch",)  # the studio's own build (e.g. +cpu); an extension's requirements never replace it


def pip_install_command(requirements: list[str], tmp: Path) -> list[str]:
    """pip install with the studio's torch pinned as it is installed. Measured: `pip install ultralytics`
    beside torch 2.13.0+cpu replaced it with the newest CUDA torch (its newest torchvision wants that)."""
    from importlib.metadata import PackageNotFoundError, version

    pins = []
    for name in KEEP_PINNED:
        try:
            pins.append(f"{name}=={version(name)}")
        except PackageNotFoundError:
            continue
    constraints = tmp / "keep-pinned.txt"
    constraints.write_text("\n".join(pins) + "\n", encoding="utf-8")
    # The studio's own interpreter, so the packages land where the studio imports from.
    return [sys.executable, "-m", "pip", "install", "--constraint", str(constraints), *requirements]


def _run(cmd: list[str], timeout: int, what: str) -> str:
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0"}  # never wait for a password prompt
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        raise AtelierError(f"{what} took longer than {timeout} s and was stopped", "source") from None
    except FileNotFoundError:
        raise AtelierError(f"{what}: {cmd[0]} is not installed", "source") from None
    if done.returncode != 0:
        raise InvalidRequest(f"{what} failed: {(done.stderr or done.stdout).strip()[-1500:]}", "source")
    return done.stdout


def _extract_zip(path: Path, dest: Path) -> Path:
    """Extract refusing members that would land outside `dest` (zip-slip) or are links."""
    dest.mkdir(parents=True)
    try:
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                target = resolve_inside(dest, info.filename, field_name="source", must_exist=False)
                if (info.external_attr >> 16) & 0o170000 == 0o120000:
                    raise InvalidRequest(f"{info.filename} in the zip is a symbolic link", "source")
                if info.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                else:
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with zf.open(info) as src, open(target, "wb") as out:
                        shutil.copyfileobj(src, out)
    except zipfile.BadZipFile:
        raise InvalidRequest(f"{path.name} is not a readable zip file", "source") from None
    if (dest / MANIFEST).is_file():
        return dest
    children = [c for c in dest.iterdir() if c.is_dir()]
    if len(children) == 1 and (children[0] / MANIFEST).is_file():  # zip of a folder
        return children[0]
    raise InvalidRequest(f"the zip has no {MANIFEST} at its top or in its single folder", "source")


def _git_info(folder: Path) -> dict | None:
    if not (folder / ".git").exists():
        return None
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True, timeout=10).stdout.strip()

    try:
        url = git("config", "--get", "remote.origin.url")
        commit, date = (git("log", "-1", "--format=%H %ct").split() + ["", ""])[:2]
        branch = git("rev-parse", "--abbrev-ref", "HEAD")
    except (OSError, subprocess.TimeoutExpired):
        return None
    return {"remote": url, "commit": commit[:8], "commit_hash": commit, "commit_date": int(date or 0), "branch": branch}

"""An extension's own Python environment: a virtual environment built from the extension's lock file
(exact pins) when the studio's Python cannot host its requirements — e.g. YOLO beside a CPU-only torch,
whose torchvision PyPI does not have. The studio's own packages (its torch) are never touched.

The environment is `<data-dir>/extensions-data/<name>/env` (or `<--extension-envs>/<name>`, one folder
for several data dirs — the tests' cache): made with the studio's interpreter
(`python -m venv`, so the same Python version), filled by its own pip from the lock file, and marked
ready by a stamp written last (the lock's sha256 and the Python version): a half-built or outdated
environment has no matching stamp, is never used, and is built again from scratch. Building is
only ever done after the user confirmed it (enable with "install requirements").
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from modules import atomic
from modules.errors import AtelierError, InvalidRequest

STAMP = ".atelier-environment.json"
BUILD_TIMEOUT_S = 1800  # measured: 1-5 min here from a local index for YOLO's ~6 GB; downloads take longer
_FIELD = "extension.toml environment"


class EnvironmentBuildFailed(AtelierError):
    status = 500


def read_lock(path: Path) -> list[str]:
    """The lock file's requirements: one exact pin per line (`name==version`, an optional environment
    marker after `;`), comments and blank lines skipped. Anything else — pip options, URLs, ranges —
    is refused, so the file can only ever name the releases it pins."""
    from packaging.requirements import InvalidRequirement, Requirement

    if not path.is_file():
        raise InvalidRequest(f"{path.name} is missing from the extension's folder", _FIELD)
    pins = []
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        try:
            req = Requirement(line)
        except InvalidRequirement as exc:
            raise InvalidRequest(f"{path.name} line {number}: {exc}", _FIELD) from None
        specs = list(req.specifier)
        if req.url or len(specs) != 1 or specs[0].operator != "==" or "*" in specs[0].version:
            raise InvalidRequest(f"{path.name} line {number}: {line!r} is not an exact pin (name==version)", _FIELD)
        pins.append(str(req))
    if not pins:
        raise InvalidRequest(f"{path.name} pins no packages", _FIELD)
    return pins


@dataclass(frozen=True)
class ExtensionEnvironment:
    folder: Path  # the virtual environment
    lock: Path  # the extension's lock file

    @property
    def python(self) -> Path:
        return self.folder / ("Scripts/python.exe" if os.name == "nt" else "bin/python")

    def wanted(self) -> dict:
        pins = read_lock(self.lock)
        digest = hashlib.sha256("\n".join(pins).encode("utf-8")).hexdigest()
        return {"lock_sha256": digest, "python": platform.python_version(), "platform": sys.platform}

    def ready(self) -> bool:
        try:
            stamp = json.loads((self.folder / STAMP).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False
        return self.python.exists() and {k: stamp.get(k) for k in ("lock_sha256", "python", "platform")} == self.wanted()

    def describe(self) -> dict:
        out = {"folder": str(self.folder), "lock": self.lock.name, "python": str(self.python)}
        try:
            return {**out, "ready": self.ready(), "pins": len(read_lock(self.lock))}
        except InvalidRequest as exc:  # the lock file changed under a loaded extension
            return {**out, "ready": False, "pins": 0, "problem": exc.message}

    def build(self, log=print, timeout_s: float = BUILD_TIMEOUT_S) -> dict:
        """Make it ready (nothing to do when it is); one build at a time per folder, even across processes."""
        pins = read_lock(self.lock)
        self.folder.parent.mkdir(parents=True, exist_ok=True)
        with open(self.folder.parent / f".{self.folder.name}.lock", "w") as guard:
            fcntl.flock(guard, fcntl.LOCK_EX)  # a second studio (or test session) waits, then finds it ready
            if self.ready():
                return {"built": False, "seconds": 0.0}
            started = time.monotonic()
            if self.folder.exists():
                log(f"removing the incomplete or outdated environment {self.folder}")
                shutil.rmtree(self.folder)
            log(f"creating {self.folder} with {sys.executable} -m venv")
            _run([sys.executable, "-m", "venv", str(self.folder)], timeout_s, "python -m venv")
            log(f"installing {len(pins)} pinned packages from {self.lock.name} (this takes a while)")
            _run([str(self.python), "-m", "pip", "install", "--disable-pip-version-check", "--no-input", *pins],
                 timeout_s, "pip install")
            seconds = round(time.monotonic() - started, 1)
            atomic.write_json(self.folder / STAMP, {**self.wanted(), "seconds": seconds})
            log(f"environment ready in {seconds} s")
            return {"built": True, "seconds": seconds}


def _run(cmd: list[str], timeout_s: float, what: str) -> None:
    env = {**os.environ, "PYTHONNOUSERSITE": "1"}
    env.pop("PYTHONPATH", None)  # the studio's paths have no place in the new environment's install
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, env=env)
    except subprocess.TimeoutExpired:
        raise EnvironmentBuildFailed(f"{what} took longer than {timeout_s:g} s and was stopped",
                                     "confirm_requirements") from None
    if done.returncode != 0:
        raise EnvironmentBuildFailed(f"{what} failed: {(done.stderr or done.stdout).strip()[-1500:]}",
                                     "confirm_requirements")

"""extension.toml: what an extension declares about itself, read with the stdlib tomllib.

    name = "example-border"        # folder name; [a-z0-9][a-z0-9_-]*, used in /ext/<name>/
    version = "1.0.0"
    description = "Draws a border"
    api_version = "1"              # the extension API it targets
    priority = 100                 # lower runs first in every hook (then by name)
    entry = "main.py"              # module exposing setup(api); default main.py
    requirements = ["rich==13.7.1"]  # optional pip requirements, installed after confirmation
    requirements_note = "…"        # optional: shown with a missing-requirements message (what else to install)
    enabled_by_default = true      # false: listed but off until the user enables it (a shipped extension
                                   # whose requirements are not in requirements.txt)
    environment = "environment.txt"  # optional: a lock file (exact pins) for a Python environment of its own,
                                   # built on enable when the studio's Python cannot host `requirements`
    environment_check = "compat:problem"  # optional: module:function of the extension answering None when the
                                   # studio's Python can host `requirements` (else why not); without it the
                                   # environment is always used
"""
from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from modules.errors import InvalidRequest

MANIFEST = "extension.toml"
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
# A pip requirement, never an option: a name, optional extras, an optional version spec.
REQUIREMENT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(\[[A-Za-z0-9,._-]+\])?\s*([<>=!~]=?\s*[A-Za-z0-9.*+!_-]+\s*,?\s*)*$")


CHECK_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*:[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class Manifest:
    name: str
    version: str = "0.0.0"
    description: str = ""
    api_version: str = "1"
    priority: int = 100
    entry: str = "main.py"
    requirements: tuple[str, ...] = field(default_factory=tuple)
    requirements_note: str = ""
    enabled_by_default: bool = True
    environment: str = ""
    environment_check: str = ""


def check_name(name: str, field_name: str = "name") -> str:
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise InvalidRequest(
            f"{name!r} is not a valid extension name: use lower-case letters, digits, '-' and '_' (at most 63)", field_name)
    return name


def read_manifest(folder: Path, check_folder_name: bool = True) -> Manifest:
    """Parse and check `folder/extension.toml`; every refusal names the key and the fix.

    The name must equal the folder name once installed (`check_folder_name`); a fresh
    clone in a temporary folder is read without that check.
    """
    folder = Path(folder)
    path = folder / MANIFEST
    if not path.is_file():
        raise InvalidRequest(f"{folder.name}/ has no {MANIFEST}; an extension needs one (see docs/extensions.md)", MANIFEST)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InvalidRequest(f"{MANIFEST} is not valid TOML: {exc}", MANIFEST) from None
    data = data.get("extension", data)  # a top-level [extension] table is accepted too
    if not isinstance(data, dict):
        raise InvalidRequest("the [extension] table is malformed", MANIFEST)
    name = check_name(data.get("name", folder.name), "extension.toml name")
    if check_folder_name and name != folder.name:
        raise InvalidRequest(f"name {name!r} differs from the folder name {folder.name!r}; rename one of them",
                             "extension.toml name")
    priority = data.get("priority", 100)
    if not isinstance(priority, int) or isinstance(priority, bool):
        raise InvalidRequest("must be an integer (lower runs first)", "extension.toml priority")
    entry = str(data.get("entry", "main.py"))
    if "/" in entry or "\\" in entry or not entry.endswith(".py") or entry.startswith("."):
        raise InvalidRequest(f"{entry!r} must be a .py file name at the top of the extension folder", "extension.toml entry")
    requirements = data.get("requirements", [])
    if not isinstance(requirements, list) or not all(isinstance(r, str) for r in requirements):
        raise InvalidRequest("must be a list of strings like \"rich==13.7.1\"", "extension.toml requirements")
    for req in requirements:
        if not REQUIREMENT_RE.match(req.strip()):
            raise InvalidRequest(f"{req!r} is not a plain pip requirement (name and version only)",
                                 "extension.toml requirements")
    enabled_by_default = data.get("enabled_by_default", True)
    if not isinstance(enabled_by_default, bool):
        raise InvalidRequest("must be true or false", "extension.toml enabled_by_default")
    environment = str(data.get("environment", "")).strip()
    if environment and ("/" in environment or "\\" in environment or environment.startswith(".")):
        raise InvalidRequest(f"{environment!r} must be a file name in the extension folder (a lock file of "
                             "exact pins)", "extension.toml environment")
    check = str(data.get("environment_check", "")).strip()
    if check and not (environment and CHECK_RE.match(check)):
        raise InvalidRequest(f"{check!r} must be module:function of the extension (e.g. \"compat:problem\"), "
                             "beside an environment", "extension.toml environment_check")
    return Manifest(
        name=name,
        version=str(data.get("version", "0.0.0")),
        description=str(data.get("description", "")),
        api_version=str(data.get("api_version", "1")),
        priority=priority,
        entry=entry,
        requirements=tuple(r.strip() for r in requirements),
        requirements_note=str(data.get("requirements_note", "")).strip(),
        enabled_by_default=enabled_by_default,
        environment=environment,
        environment_check=check,
    )

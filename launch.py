#!/usr/bin/env python3
"""Bootstrap only: make or use a virtual environment, install requirements when they
changed, then start the studio (`python -m webui …`) or run the tests (`--test`).

    python3 launch.py            # serve the UI at http://127.0.0.1:7860
    python3 launch.py --test     # the whole test suite; exit status is pytest's
    python3 launch.py --install-only   # make the venv and install, then stop (notebooks, Dockerfile)
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
REQUIREMENTS = ROOT / "requirements.txt"
# Packages installed without their declared dependencies (each file line says why); their real ones are in
# requirements.txt.
REQUIREMENTS_NO_DEPS = ROOT / "requirements-nodeps.txt"
STAMP_NAME = ".atelier-requirements.sha256"


def in_virtualenv() -> bool:
    return sys.prefix != getattr(sys, "base_prefix", sys.prefix)


def venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def ensure_venv(argv: list[str]) -> None:
    """Re-run this script inside ./venv unless we already run in a virtual environment."""
    if in_virtualenv():
        return
    venv = ROOT / "venv"
    python = venv_python(venv)
    if not python.exists():
        print(f"Creating a virtual environment in {venv} …", flush=True)
        subprocess.check_call([sys.executable, "-m", "venv", str(venv)])
    os.execv(str(python), [str(python), str(Path(__file__).resolve()), *argv])


def requirements_hash() -> str:
    return hashlib.sha256(REQUIREMENTS.read_bytes() + REQUIREMENTS_NO_DEPS.read_bytes()).hexdigest()


def install_requirements() -> None:
    """pip install when requirements.txt changed since the last install in this environment."""
    stamp = Path(sys.prefix) / STAMP_NAME
    wanted = requirements_hash()
    if stamp.exists() and stamp.read_text().strip() == wanted:
        return
    print("Installing requirements (first run, or requirements.txt changed) …", flush=True)
    pip = [sys.executable, "-m", "pip", "install", "--disable-pip-version-check"]
    # torch first, pinned exactly, so no other package can pull a different (CUDA) build.
    torch_pin = next((line.strip() for line in REQUIREMENTS.read_text().splitlines() if line.startswith("torch==")), None)
    if torch_pin:
        subprocess.check_call(pip + [torch_pin])
    subprocess.check_call(pip + ["-r", str(REQUIREMENTS)])
    subprocess.check_call(pip + ["--no-deps", "-r", str(REQUIREMENTS_NO_DEPS)])
    stamp.write_text(wanted + "\n")


def missing_requirements() -> tuple[list[str], list[str]]:
    """(pins not installed, pins installed at another version) in this environment, from both requirements files."""
    from importlib.metadata import PackageNotFoundError, version

    missing, other = [], []
    lines = REQUIREMENTS.read_text().splitlines() + REQUIREMENTS_NO_DEPS.read_text().splitlines()
    for line in lines:
        name, sep, wanted = line.split("#")[0].strip().partition("==")
        if not sep:
            continue
        try:
            have = version(name)
        except PackageNotFoundError:
            missing.append(line.strip())
            continue
        if have.split("+")[0] != wanted.strip():
            other.append(f"{name} {have} (wanted {wanted.strip()})")
    return missing, other


def main(argv: list[str]) -> int:
    ensure_venv(argv)
    skip_install = "--skip-install" in argv
    test = "--test" in argv
    rest = [a for a in argv if a not in ("--skip-install", "--test", "--install-only")]
    if not skip_install:
        install_requirements()
    else:
        missing, other = missing_requirements()
        if missing:
            print(f"--skip-install, but {sys.prefix} lacks {len(missing)} of requirements.txt: {', '.join(missing[:8])}"
                  f"{' …' if len(missing) > 8 else ''}. Run `python3 launch.py` once without --skip-install "
                  "(it installs them), or `pip install -r requirements.txt` in this environment.", file=sys.stderr)
            return 2
        if other:
            print(f"warning: installed versions differ from requirements.txt: {', '.join(other[:8])}", file=sys.stderr)
    if "--install-only" in argv:
        print(f"Installed into {sys.prefix}", flush=True)
        return 0
    env = dict(os.environ)
    env.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    env.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    if test:
        env["HF_HUB_OFFLINE"] = "1"
        cmd = [sys.executable, "-m", "pytest", str(ROOT / "tests"), *rest]
    else:
        cmd = [sys.executable, "-m", "webui", *rest]
    os.chdir(ROOT)
    # Replace this process, so signals (Ctrl+C, SIGTERM from a host) reach the server and
    # the exit status is pytest's or the server's own.
    os.execve(sys.executable, cmd, env)
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

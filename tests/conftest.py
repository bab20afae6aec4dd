"""Shared fixtures: the demo model is built once per session; servers are real processes."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


@pytest.fixture(scope="session")
def demo_checkpoint(tmp_path_factory) -> Path:
    """A tiny SD1.x diffusers folder, built once, copied into each data dir that needs it.

    The demo language models (Gemma 2, Gemma 3, PaliGemma) are built once beside it, in
    `<parent>/LLM` and `<parent>/VLM`, and copied too: a studio on a data dir without them
    would build them at every start."""
    from modules.models.demo import DEMO_NAME, save_demo_checkpoint
    from modules.models.demo_lm import DEMOS, save_demo

    root = tmp_path_factory.mktemp("demo")
    for kind, name, builder in DEMOS:
        save_demo(builder, root / _LM_FOLDERS[kind] / name)
    return save_demo_checkpoint(root / DEMO_NAME)


_LM_FOLDERS = {"llm": "LLM", "vlm": "VLM"}


def make_data_dir(root: Path, demo_checkpoint: Path) -> Path:
    ckpt_dir = root / "models" / "Stable-diffusion"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    if not (ckpt_dir / demo_checkpoint.name).exists():
        shutil.copytree(demo_checkpoint, ckpt_dir / demo_checkpoint.name)
    for folder in _LM_FOLDERS.values():
        built = demo_checkpoint.parent / folder
        if built.is_dir() and not (root / "models" / folder).exists():
            shutil.copytree(built, root / "models" / folder)
    return root


@pytest.fixture
def data_dir(tmp_path, demo_checkpoint) -> Path:
    return make_data_dir(tmp_path / "data", demo_checkpoint)


@pytest.fixture
def studio(data_dir):
    """A loaded Studio on the CPU over a fresh data dir holding the demo model."""
    from modules.studio import Studio, StudioOptions

    s = Studio(StudioOptions(data_dir=data_dir, device="cpu"))
    s.load()
    assert s.load_error is None, s.load_error
    yield s
    s.shutdown()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LiveServer:
    """`python -m webui` in a subprocess on a free port, as a user would start it."""

    def __init__(self, data_dir: Path, *flags: str, env: dict | None = None):
        self.data_dir = data_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = data_dir / "server.log"
        cmd = [sys.executable, "-m", "webui", "--data-dir", str(data_dir), "--port", str(self.port), "--device", "cpu", *flags]
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(cmd, cwd=REPO, stdout=self._log, stderr=subprocess.STDOUT,
                                     env={**os.environ, **(env or {})})

    def wait_ready(self, timeout: float = 120, auth: tuple[str, str] | None = None) -> "LiveServer":
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log()}")
            try:
                r = httpx.get(self.url + "/atelier/health", auth=auth, timeout=2)
                if r.status_code == 200 and r.json().get("ready"):
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        raise TimeoutError(f"server not ready in {timeout}s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()


def start_live_server(data_dir: Path, *flags: str, env: dict | None = None,
                      auth: tuple[str, str] | None = None) -> LiveServer:
    """Start a LiveServer and wait until it is ready; a server that never gets ready is stopped."""
    server = LiveServer(data_dir, *flags, env=env)
    try:
        return server.wait_ready(auth=auth)
    except Exception:
        server.stop()
        raise


@pytest.fixture(scope="module")
def live_server(tmp_path_factory, demo_checkpoint):
    """One server per test module (start-up is seconds; tests in a module share it)."""
    data = make_data_dir(tmp_path_factory.mktemp("server-data"), demo_checkpoint)
    server = LiveServer(data).wait_ready()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def demo_language_models(demo_checkpoint) -> dict[str, Path]:
    """The tiny Gemma 2, Gemma 3 and PaliGemma folders (random weights), built once: name -> folder.
    Shared by the session: copy one before changing it."""
    from modules.models.demo_lm import DEMOS

    return {name: demo_checkpoint.parent / _LM_FOLDERS[kind] / name for kind, name, _builder in DEMOS}

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
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings

REPO = Path(__file__).resolve().parent.parent
SECOND = "second-model"  # the second checkpoint's name (second_checkpoint, two_model_server)
STYLE_LORA = "style"  # a kohya LoRA for the demo architecture, on the two-model server
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

# Every hypothesis test is derandomized: the same examples on every run and every machine, so a
# failure seen once is seen again, and no example database is written into the tree. A test sets its
# own max_examples (per route, enough to mean something); hypothesis' default applies otherwise.
hypothesis_settings.register_profile(
    "atelier", derandomize=True, database=None, deadline=None, print_blob=True,
    suppress_health_check=list(HealthCheck))
hypothesis_settings.load_profile("atelier")


def pytest_configure(config):
    # pytest.ini gives every test a timeout (pytest-timeout): a hang fails one test, not the run.
    if not config.pluginmanager.hasplugin("timeout"):
        message = ("pytest-timeout is not installed, so a hanging test would hang the whole run; "
                   "pip install -r requirements.txt (python3 launch.py --test does)")
        if os.environ.get("CI", "").lower() == "true":
            raise pytest.UsageError(message)
        config.issue_config_time_warning(pytest.PytestConfigWarning(message), stacklevel=2)


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


@pytest.fixture(scope="session")
def demo_gfpgan(tmp_path_factory) -> Path:
    """The random-weight GFPGANv1.4-layout restorer (~174 MB fp16), built once: link it into a data dir
    with `link_model`."""
    from tests.fixtures_models import save_demo_gfpgan

    return save_demo_gfpgan(tmp_path_factory.mktemp("gfpgan") / "GFPGANv1.4.safetensors")


def link_model(source: Path, folder: Path) -> Path:
    """A big session model placed in a data dir's model folder: a hard link where the disk allows, else a copy."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / source.name
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)
    return target


@pytest.fixture(scope="session")
def second_checkpoint(tmp_path_factory) -> Path:
    """Another tiny SD1.x folder with other random weights (seed 1): a second checkpoint to switch to."""
    from modules.models.demo import save_demo_checkpoint

    return save_demo_checkpoint(tmp_path_factory.mktemp("demo2") / SECOND, seed=1)


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
    """`python -m webui` in a subprocess on a free port, as a user would start it.

    `launcher` replaces `-m webui` (e.g. `-c CODE` that sets something up and then runs webui).
    """

    def __init__(self, data_dir: Path, *flags: str, env: dict | None = None, launcher: tuple[str, ...] = ("-m", "webui")):
        self.data_dir = data_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = data_dir / "server.log"
        cmd = [sys.executable, *launcher, "--data-dir", str(data_dir), "--port", str(self.port), "--device", "cpu", *flags]
        self._log = open(self.log_path, "ab")
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
                      auth: tuple[str, str] | None = None, launcher: tuple[str, ...] = ("-m", "webui")) -> LiveServer:
    """Start a LiveServer and wait until it is ready; a server that never gets ready is stopped."""
    server = LiveServer(data_dir, *flags, env=env, launcher=launcher)
    try:
        return server.wait_ready(auth=auth)
    except BaseException:
        server.stop()
        raise


# -- servers shared by the whole session, one per flag set -------------------------------------
# Start-up costs seconds; read-mostly tests share these. A test that changes a setting puts it back.
@pytest.fixture(scope="session")
def plain_server(tmp_path_factory, demo_checkpoint):
    """`python -m webui` with no flags over the demo model: the API, browser and reliability tests' server."""
    data = make_data_dir(tmp_path_factory.mktemp("plain-server"), demo_checkpoint)
    server = start_live_server(data)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def demo_language_models(demo_checkpoint) -> dict[str, Path]:
    """The tiny Gemma 2, Gemma 3 and PaliGemma folders (random weights), built once: name -> folder.
    Shared by the session: copy one before changing it."""
    from modules.models.demo_lm import DEMOS

    return {name: demo_checkpoint.parent / _LM_FOLDERS[kind] / name for kind, name, _builder in DEMOS}


@pytest.fixture(scope="session")
def two_model_server(tmp_path_factory, demo_checkpoint, second_checkpoint):
    """No flags, two checkpoints (the demo and SECOND) and one LoRA (STYLE_LORA): for switching tests."""
    from tests.fixtures_models import save_demo_lora

    data = make_data_dir(tmp_path_factory.mktemp("two-models"), demo_checkpoint)
    shutil.copytree(second_checkpoint, data / "models" / "Stable-diffusion" / second_checkpoint.name)
    save_demo_lora(data / "models" / "Lora" / f"{STYLE_LORA}.safetensors", seed=2)
    server = start_live_server(data)
    yield server
    server.stop()


def wait_until(predicate, timeout: float, what: str, interval: float = 0.005):
    """Poll `predicate` until it returns a true value (returned) or `timeout` seconds pass (AssertionError)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)

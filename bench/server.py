"""A real studio server in a subprocess, as a user starts it; RSS readings on its PID."""
from __future__ import annotations

import base64
import io
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def server_env() -> dict:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_DISABLE_TELEMETRY": "1"}


class Server:
    """`python -m webui` (or any command line that ends in the studio's flags) on a free port."""

    def __init__(self, data_dir: Path, device: str, launcher: list[str] | None = None, *flags: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = Path(data_dir) / "server.log"
        cmd = (launcher or [sys.executable, "-m", "webui"]) + [
            "--data-dir", str(data_dir), "--port", str(self.port), "--device", device, *flags]
        self._log = open(self.log_path, "wb")
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(cmd, cwd=REPO, stdout=self._log, stderr=subprocess.STDOUT, env=server_env())

    def log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise RuntimeError(f"the server exited with {self.proc.returncode}:\n{self.log_tail()}")

    def wait_http_200(self, path: str = "/", timeout: float = 180) -> float:
        """Seconds from the start of the process to the first HTTP 200 on `path`."""
        import httpx

        deadline = time.perf_counter() + timeout
        with httpx.Client(timeout=2) as client:
            while time.perf_counter() < deadline:
                self.check_alive()
                try:
                    if client.get(self.url + path).status_code == 200:
                        return time.perf_counter() - self.started
                except httpx.HTTPError:
                    pass
                time.sleep(0.02)
        raise TimeoutError(f"no HTTP 200 on {path} within {timeout}s:\n{self.log_tail()}")

    def wait_ready(self, timeout: float = 180) -> None:
        import httpx

        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            self.check_alive()
            try:
                r = httpx.get(self.url + "/atelier/health", timeout=2)
                if r.status_code == 200 and r.json().get("ready"):
                    if r.json().get("load_error"):
                        raise RuntimeError(f"the studio loaded with an error: {r.json()['load_error']}")
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise TimeoutError(f"the studio was not ready within {timeout}s:\n{self.log_tail()}")

    def rss(self) -> int:
        return psutil.Process(self.server_pid()).memory_info().rss

    def server_pid(self) -> int:
        """The process that serves: launch.py runs `python -m webui` as its child."""
        try:
            children = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.Error:
            return self.proc.pid
        return children[-1].pid if children else self.proc.pid

    def stop(self) -> None:
        # launch.py does not pass SIGTERM on to its child, so stop the whole tree, children first.
        try:
            family = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.Error:
            family = []
        for child in reversed(family):
            try:
                child.terminate()
            except psutil.Error:
                pass
        psutil.wait_procs(family, timeout=15)
        for child in family:
            try:
                child.kill()
            except psutil.Error:
                pass
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()


def txt2img_body(seed: int = 1, steps: int = 5, side: int = 64, **extra) -> dict:
    return {"prompt": "a red fox in the snow", "steps": steps, "width": side, "height": side, "seed": seed,
            "sampler_name": "Euler a", **extra}


def png_ok(b64: str) -> bool:
    """The answer holds a whole PNG that decodes."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(base64.b64decode(b64))) as im:
            im.load()
            return im.format == "PNG"
    except Exception:
        return False


class RssSampler:
    """Samples a process's RSS in a thread (20 Hz) and keeps the peak."""

    def __init__(self, pid: int, interval: float = 0.05):
        self._proc = psutil.Process(pid)
        self._interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, self._proc.memory_info().rss)
            except psutil.Error:
                return
            self._stop.wait(self._interval)

    def __enter__(self) -> "RssSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

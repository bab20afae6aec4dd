"""launch.py: flags reach the server, unknown ones are a usage error, SIGTERM stops the server."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.conftest import free_port

REPO = Path(__file__).resolve().parents[2]


def test_unknown_flag_is_a_usage_error():
    out = subprocess.run([sys.executable, "launch.py", "--skip-install", "--no-such-flag"], cwd=REPO,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert "unrecognized arguments: --no-such-flag" in out.stderr and "usage:" in out.stderr


def test_launch_serves_the_ui_and_sigterm_stops_it(tmp_path):
    port = free_port()
    log_path = tmp_path / "launch.log"
    with open(log_path, "wb") as log:  # a file, not a pipe nobody reads: a chatty server cannot block on it
        proc = subprocess.Popen([sys.executable, "launch.py", "--skip-install", "--data-dir", str(tmp_path / "data"),
                                 "--port", str(port), "--no-demo"], cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            assert proc.poll() is None, f"launch.py exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}"
            try:
                if httpx.get(f"http://127.0.0.1:{port}/", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.25)
        else:
            raise AssertionError(f"the UI did not answer:\n{log_path.read_text()[-3000:]}")
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(30)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"SIGTERM did not stop the server:\n{log_path.read_text()[-3000:]}") from None
        # uvicorn shuts down cleanly on SIGTERM, then the studio's own shutdown runs and it exits 128 + 15, as a
        # shell reports a program ended by SIGTERM; a crash on the way out would be 1, a hang the timeout above.
        assert code == 128 + signal.SIGTERM, f"exit status {code} after SIGTERM:\n{log_path.read_text()[-3000:]}"
        assert "Atelier stopped." in log_path.read_text()
        # The launcher is the server (exec), so nothing is left listening on the port.
        try:
            httpx.get(f"http://127.0.0.1:{port}/", timeout=2)
            raise AssertionError("a server is still answering after SIGTERM")
        except httpx.HTTPError:
            pass
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)


def test_skip_install_in_an_environment_without_the_requirements_says_what_is_missing(tmp_path):
    """A user's own activated venv, a CI runner: --skip-install names what is missing instead of a bare crash."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp_path / "bare")], check=True, timeout=120)
    out = subprocess.run([str(tmp_path / "bare" / "bin" / "python"), "launch.py", "--skip-install", "--no-demo"],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, out.stderr
    assert "lacks" in out.stderr and "torch==" in out.stderr and "without --skip-install" in out.stderr

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
    proc = subprocess.Popen([sys.executable, "launch.py", "--skip-install", "--data-dir", str(tmp_path),
                             "--port", str(port), "--no-demo"], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.25)
        else:
            raise AssertionError("the UI did not answer")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) is not None
        # The launcher is the server (exec), so nothing is left listening on the port.
        try:
            httpx.get(f"http://127.0.0.1:{port}/", timeout=2)
            raise AssertionError("a server is still answering after SIGTERM")
        except httpx.HTTPError:
            pass
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)

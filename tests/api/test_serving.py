"""Serving: flags, --share offline, --listen warnings, --root-path behind a reverse proxy. Each
server is a real `python -m webui` process. (Auth: test_auth.py.)"""
from __future__ import annotations

import subprocess
import sys
import time

import httpx
import psutil
import pytest
import webuiapi

from tests.api.conftest import png, start_server
from tests.conftest import REPO as REPO_ROOT

DEAD_PROXY = "http://127.0.0.1:9"  # makes the share-link request fail at once, as offline


def run_webui(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "webui", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("args, message", [
    (["--bogus"], "unrecognized arguments: --bogus"),
    (["--port", "notanumber"], "--port"),
    (["--api-auth", "nopassword"], "--api-auth"),
    (["--gradio-auth", "a:b,:c"], "--gradio-auth"),
    (["--root-path", "no-slash"], "--root-path"),
])
def test_bad_flags_are_usage_errors(args, message):
    done = run_webui(*args)
    assert done.returncode == 2, done.stderr
    assert "usage:" in done.stderr and message in done.stderr


# -- exposed: --listen --share (offline) --root-path ------------------------------
@pytest.fixture(scope="module")
def exposed_server(tmp_path_factory, demo_checkpoint):
    env = {k: DEAD_PROXY for k in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy")}
    env.update(NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost")
    s = start_server(tmp_path_factory, demo_checkpoint, "--listen", "--share", "--root-path", "/proxy",
                     "--insecure-no-auth", env=env)
    yield s
    s.stop()


def wait_for_log(server, text: str, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        log = server.log_path.read_text(errors="replace")
        if text in log:
            return log
        time.sleep(0.25)
    raise AssertionError(f"{text!r} not in the server log:\n{server.log()}")


def test_listen_binds_every_interface_and_warns_with_insecure_no_auth(exposed_server):
    log = wait_for_log(exposed_server, "no --api-auth")
    assert "--insecure-no-auth and no --gradio-auth" in log
    ports = [c.laddr for c in psutil.Process(exposed_server.proc.pid).net_connections() if c.status == "LISTEN"]
    assert ("0.0.0.0", exposed_server.port) in [(a.ip, a.port) for a in ports]


def test_share_offline_warns_and_the_local_server_keeps_serving(exposed_server):
    wait_for_log(exposed_server, "--share: no public link could be made")
    assert exposed_server.proc.poll() is None
    r = httpx.post(exposed_server.url + "/proxy/sdapi/v1/txt2img", json={"steps": 2, "width": 64, "height": 64}, timeout=60)
    assert r.status_code == 200 and png(r.json()["images"][0]).size == (64, 64)
    assert httpx.get(exposed_server.url + "/proxy/", timeout=30).status_code == 200


@pytest.mark.parametrize("prefix", ["/proxy", ""], ids=["proxy-keeps-prefix", "proxy-strips-prefix"])
def test_root_path_serves_ui_and_api_behind_a_reverse_proxy(exposed_server, prefix):
    base = exposed_server.url + prefix
    assert httpx.get(base + "/sdapi/v1/sd-models", timeout=30).status_code == 200
    api = webuiapi.WebUIApi(baseurl=base + "/sdapi/v1", steps=2)
    assert api.txt2img(prompt="behind a proxy", width=64, height=64, seed=9).info["all_seeds"] == [9]
    config = httpx.get(base + "/config", timeout=30).json()
    assert config["root"].endswith("/proxy"), "the UI builds its URLs with the public prefix"
    page = httpx.get(base + "/", timeout=30)
    assert page.status_code == 200 and "<html" in page.text.lower()
    docs = httpx.get(base + "/docs", timeout=30)
    assert docs.status_code == 200 and "/proxy/openapi.json" in docs.text
    assert httpx.get(base + "/openapi.json", timeout=30).json()["paths"]


def test_sigterm_stops_the_studio_through_its_shutdown(tmp_path, demo_checkpoint):
    """A host stopping the machine sends SIGTERM: the studio's shutdown runs (jobs interrupted) before it exits."""
    from tests.conftest import make_data_dir, start_live_server

    server = start_live_server(make_data_dir(tmp_path / "term-data", demo_checkpoint), "--no-demo")
    try:
        server.proc.terminate()
        assert server.proc.wait(30) == 128 + 15
        assert "Atelier stopped." in server.log_path.read_text()
    finally:
        server.stop()

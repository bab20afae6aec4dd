"""Serving: flags, auth on every API route and on the UI, --share offline, --listen warnings,
--root-path behind a reverse proxy. Each server is a real `python -m webui` process."""
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

API = ("api", "s3cret:with-colon")
UI = [("ui", "pass"), ("ui2", "pass2")]
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


# -- auth ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def auth_server(tmp_path_factory, demo_checkpoint):
    s = start_server(tmp_path_factory, demo_checkpoint, "--api-auth", ":".join(API),
                     "--gradio-auth", ",".join(":".join(p) for p in UI), auth=API)
    yield s
    s.stop()


def api_routes(server) -> list[tuple[str, str]]:
    spec = httpx.get(server.url + "/openapi.json", auth=API, timeout=30).json()
    routes = [(m.upper(), p) for p, ops in spec["paths"].items() for m in ops]
    assert len(routes) >= 25 and ("POST", "/sdapi/v1/txt2img") in routes
    return routes + [("GET", "/docs"), ("GET", "/openapi.json"), ("GET", "/redoc"), ("GET", "/sdapi/v1/no-such-route")]


def test_every_api_route_refuses_without_credentials_and_serves_with_them(auth_server):
    with httpx.Client(base_url=auth_server.url, timeout=60) as c:
        for method, path in api_routes(auth_server):
            # An invalid body: with the right credentials it gets as far as validation (422), no further.
            kw = {"content": b"not json"} if method == "POST" else {}
            for auth in (None, ("api", "wrong"), UI[0], ("", "")):
                r = c.request(method, path, auth=auth, **kw)
                assert r.status_code == 401, (method, path, auth, r.status_code)
                assert r.headers["www-authenticate"].startswith("Basic")
                if path.startswith("/v1/"):  # the OpenAI-compatible routes answer in OpenAI's error shape
                    assert r.json()["error"]["code"] == "invalid_api_key", (path, r.text)
                else:
                    assert r.json()["error"] == "Unauthorized", (path, r.text)
            r = c.request(method, path, auth=API, **kw)
            assert r.status_code not in (401, 403) and r.status_code < 500, (method, path, r.status_code, r.text[:200])
        for header in ("Basic %%%notbase64", "Bearer " + API[0], "Bearer wrong:pass", "Digest x", ""):
            assert c.get("/sdapi/v1/sd-models", headers={"authorization": header}).status_code == 401, header
        # OpenAI-style clients send only a key: "USER:PASS" as a Bearer token is accepted.
        assert c.get("/sdapi/v1/sd-models", headers={"authorization": "Bearer " + ":".join(API)}).status_code == 200


def test_webuiapi_client_with_credentials(auth_server):
    api = webuiapi.WebUIApi(baseurl=auth_server.url + "/sdapi/v1", username=API[0], password=API[1], steps=2)
    r = api.txt2img(prompt="locked", width=64, height=64, seed=4)
    assert r.image.size == (64, 64) and r.info["all_seeds"] == [4]
    anonymous = webuiapi.WebUIApi(baseurl=auth_server.url + "/sdapi/v1", steps=2)
    with pytest.raises(RuntimeError) as refused:
        anonymous.txt2img(prompt="x", width=64, height=64)
    assert refused.value.args[0] == 401


def test_ui_needs_a_login_and_each_listed_user_can_log_in(auth_server):
    for path in ("/config", "/gradio_api/info"):
        assert httpx.get(auth_server.url + path, timeout=30).status_code == 401
    for user, password in [("ui", "wrong"), API]:  # the API's credentials do not open the UI
        r = httpx.post(auth_server.url + "/login", data={"username": user, "password": password}, timeout=30)
        assert r.status_code >= 400
    login_page = httpx.get(auth_server.url + "/", timeout=30)
    assert login_page.status_code == 200 and '"auth_required"' in login_page.text
    assert "atelier-demo-sd15" not in login_page.text, "the login page must not describe the UI's contents"
    for user, password in UI:
        with httpx.Client(base_url=auth_server.url, timeout=30) as c:
            assert c.post("/login", data={"username": user, "password": password}).status_code == 200
            assert c.get("/config").status_code == 200 and c.get("/gradio_api/info").status_code == 200
            page = c.get("/")
            assert page.status_code == 200 and '"auth_required"' not in page.text


# -- exposed: --listen --share (offline) --root-path ------------------------------
@pytest.fixture(scope="module")
def exposed_server(tmp_path_factory, demo_checkpoint):
    env = {k: DEAD_PROXY for k in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy")}
    env.update(NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost")
    s = start_server(tmp_path_factory, demo_checkpoint, "--listen", "--share", "--root-path", "/proxy", env=env)
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


def test_listen_binds_every_interface_and_warns_without_auth(exposed_server):
    log = wait_for_log(exposed_server, "without --api-auth")
    assert "without --gradio-auth" in log
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

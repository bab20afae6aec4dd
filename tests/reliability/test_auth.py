"""With --gradio-auth and --api-auth, every UI and API route refuses without credentials and
serves with them."""
from __future__ import annotations

import httpx
import pytest

from tests.reliability.helpers import body, start

API = ("api", "s3cret-api")
UI = ("ui", "s3cret-ui")
NOT_CALLED = ("kill", "restart", "stop", "shutdown")


@pytest.fixture(scope="module")
def server(tmp_path_factory, demo_checkpoint):
    s = start(tmp_path_factory, demo_checkpoint, "--api-auth", ":".join(API), "--gradio-auth", ":".join(UI), auth=API)
    yield s
    s.stop()


def _api_routes(server) -> list[tuple[str, str]]:
    spec = httpx.get(server.url + "/openapi.json", auth=API, timeout=10).json()
    routes = []
    for path, methods in spec["paths"].items():
        if any(w in path for w in NOT_CALLED) or "{" in path:
            continue
        routes += [(m.upper(), path) for m in methods if m in ("get", "post", "put", "patch", "delete")]
    assert ("POST", "/sdapi/v1/txt2img") in routes
    return routes


def test_every_api_route_refuses_without_credentials(server):
    routes = _api_routes(server)
    for method, path in routes + [("GET", "/openapi.json"), ("GET", "/docs"), ("GET", "/sdapi/v1/no-such-route")]:
        for auth in (None, ("api", "wrong"), UI):
            r = httpx.request(method, server.url + path, auth=auth, json={} if method != "GET" else None, timeout=30)
            assert r.status_code == 401, f"{method} {path} with {auth}: {r.status_code}"


def test_api_serves_with_credentials(server):
    for method, path in _api_routes(server):
        if method == "GET":
            r = httpx.get(server.url + path, auth=API, timeout=30)
            assert r.status_code != 401 and r.status_code < 500, f"GET {path}: {r.status_code} {r.text[:200]}"
    r = httpx.post(server.url + "/sdapi/v1/txt2img", json=body(steps=2), auth=API, timeout=120)
    assert r.status_code == 200 and r.json()["images"], f"{r.status_code} {r.text[:300]}\n{server.log()[-1500:]}"


def test_ui_refuses_without_login_and_serves_after(server):
    with httpx.Client(base_url=server.url, timeout=30) as anon:
        assert anon.get("/config").status_code == 401
        for path in ("/gradio_api/info", "/gradio_api/queue/status", "/config?x=1"):
            assert anon.get(path).status_code in (401, 403), path
        # Files: a saved output, through Gradio's file route, and uploads.
        saved = httpx.post(server.url + "/sdapi/v1/txt2img", json=body(steps=1, save_images=True), auth=API, timeout=120)
        assert saved.status_code == 200
        png = next(server.data_dir.joinpath("outputs").rglob("*.png"))
        for path in (f"/gradio_api/file={png}", f"/file={png}"):
            assert anon.get(path).status_code in (401, 403, 404), path
        assert anon.post("/gradio_api/upload", files={"files": ("a.png", b"x")}).status_code in (401, 403)
        assert anon.post("/login", data={"username": UI[0], "password": "wrong"}).status_code in (400, 401)
        assert anon.get("/config").status_code == 401
        login_page = anon.get("/")
    with httpx.Client(base_url=server.url, timeout=30) as user:
        assert user.post("/login", data={"username": UI[0], "password": UI[1]}).status_code == 200
        config = user.get("/config")
        assert config.status_code == 200 and "components" in config.json()
        assert user.get("/gradio_api/info").status_code == 200
        assert "atelier-demo-sd15" in user.get("/").text or config.status_code == 200
    # The login page may load, but must not carry the app: Gradio embeds `window.gradio_api_info`
    # (every UI event with its parameters and their current values) in it unless events are private.
    for secret in ("atelier-demo-sd15", "outdir_txt2img_samples", "outdir txt2img samples"):
        assert secret not in login_page.text, f"the page shown before login reveals {secret!r} (window.gradio_api_info)"

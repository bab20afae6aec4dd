"""With --api-auth and --gradio-auth, every API route and every UI route refuses without
credentials and serves with them; the login page reveals nothing of the UI; Gradio's file and
upload routes are closed before login. One real `python -m webui` for the module."""
from __future__ import annotations

import httpx
import pytest
import webuiapi

from tests.api.conftest import start_server

API = ("api", "s3cret:with-colon")
UI = [("ui", "pass"), ("ui2", "pass2")]
SECRETS = ("atelier-demo-sd15", "outdir_txt2img_samples", "outdir txt2img samples")  # what the UI's config holds


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
    r = api.txt2img(prompt="locked", width=64, height=64, seed=4, save_images=True)
    assert r.image.size == (64, 64) and r.info["all_seeds"] == [4]
    anonymous = webuiapi.WebUIApi(baseurl=auth_server.url + "/sdapi/v1", steps=2)
    with pytest.raises(RuntimeError) as refused:
        anonymous.txt2img(prompt="x", width=64, height=64)
    assert refused.value.args[0] == 401


def test_ui_and_its_files_refuse_before_login_and_serve_after(auth_server):
    saved = httpx.post(auth_server.url + "/sdapi/v1/txt2img", auth=API, timeout=120,
                       json={"prompt": "x", "steps": 1, "width": 64, "height": 64, "save_images": True})
    assert saved.status_code == 200, saved.text[:300]
    png = next(auth_server.data_dir.joinpath("outputs").rglob("*.png"))
    with httpx.Client(base_url=auth_server.url, timeout=30) as anon:
        for path in ("/config", "/config?x=1", "/gradio_api/info", "/gradio_api/queue/status"):
            assert anon.get(path).status_code in (401, 403), path
        for path in (f"/gradio_api/file={png}", f"/file={png}"):  # a saved output, through Gradio's file route
            assert anon.get(path).status_code in (401, 403, 404), path
        assert anon.post("/gradio_api/upload", files={"files": ("a.png", b"x")}).status_code in (401, 403)
        for user, password in [("ui", "wrong"), API]:  # the API's credentials do not open the UI
            assert anon.post("/login", data={"username": user, "password": password}).status_code in (400, 401)
        assert anon.get("/config").status_code == 401
        login_page = anon.get("/")
    assert login_page.status_code == 200 and '"auth_required"' in login_page.text
    # The login page must not carry the app: Gradio embeds `window.gradio_api_info` (every UI event with
    # its parameters and their current values) in it unless it is blanked.
    for secret in SECRETS:
        assert secret not in login_page.text, f"the page shown before login reveals {secret!r}"
    for user, password in UI:  # each listed user logs in and then gets the whole UI
        with httpx.Client(base_url=auth_server.url, timeout=30) as c:
            assert c.post("/login", data={"username": user, "password": password}).status_code == 200
            config = c.get("/config")
            assert config.status_code == 200 and "components" in config.json()
            assert "atelier-demo-sd15" in config.text, "after login the UI config lists the checkpoint"
            assert c.get("/gradio_api/info").status_code == 200
            page = c.get("/")
            assert page.status_code == 200 and '"auth_required"' not in page.text
            assert c.get(f"/gradio_api/file={png}").status_code == 200, "a logged-in user sees saved outputs"

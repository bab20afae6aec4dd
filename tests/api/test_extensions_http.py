"""Extensions over HTTP on a live server: /ext/<name>/ routes, management endpoints,
tabs in the Gradio /config, a hook changing /sdapi/v1/txt2img output."""
from __future__ import annotations

import base64
import io

import httpx
import pytest

from tests.conftest import make_data_dir, start_live_server
from tests.unit.test_extensions_support import git_repo, mark_main, write_extension

PRELOADED = mark_main("LIVEMARK") + '''
    @api.get("/boom")
    def boom() -> dict:
        raise RuntimeError("BOOM in a route")

    @api.post("/echo")
    def echo(body: dict) -> dict:
        if "x" not in body:
            raise api.types.InvalidRequest("is required", "x")
        return {"x": body["x"]}
'''


@pytest.fixture(scope="module")
def server(tmp_path_factory, demo_checkpoint):
    data = make_data_dir(tmp_path_factory.mktemp("ext-server"), demo_checkpoint)
    write_extension(data / "extensions" / "live-ext", PRELOADED)
    write_extension(data / "extensions" / "broken-ext", "import no_such_module_anywhere\ndef setup(api): pass\n")
    srv = start_live_server(data)  # stopped again if it never gets ready
    yield srv
    srv.stop()


def png_b64(color=(0, 128, 0), size=(32, 32)) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def decode(b64: str):
    from PIL import Image

    return Image.open(io.BytesIO(base64.b64decode(b64.split(",")[-1]))).convert("RGB")


def txt2img(server) -> dict:
    r = httpx.post(server.url + "/sdapi/v1/txt2img", json={"prompt": "a boat", "seed": 3, "steps": 2, "width": 64,
                                                           "height": 64}, timeout=120)
    assert r.status_code == 200, r.text
    return r.json()


def test_extension_tabs_are_in_the_gradio_config(server):
    config = httpx.get(server.url + "/config", timeout=30).json()
    labels = {c.get("props", {}).get("label") for c in config["components"]}
    assert {"LIVEMARK tab", "Seed explorer", "Extensions"} <= labels


def test_ext_routes_answer_and_a_raising_route_is_contained(server):
    r = httpx.get(server.url + "/ext/live-ext/hello", params={"who": "Ada"}, timeout=10)
    assert r.status_code == 200 and r.json() == {"hello": "Ada", "from": "live-ext"}

    r = httpx.post(server.url + "/ext/live-ext/echo", json={}, timeout=10)
    assert r.status_code == 422 and r.json()["field"] == "x"

    r = httpx.get(server.url + "/ext/live-ext/boom", timeout=10)
    assert r.status_code == 500 and r.json()["error"] == "ExtensionFailed"
    info = httpx.get(server.url + "/atelier/extensions/live-ext", timeout=10).json()
    assert info["status"] == "error" and "BOOM in a route" in info["error"]
    assert httpx.get(server.url + "/ext/live-ext/hello", timeout=10).status_code == 200  # still serving

    assert httpx.get(server.url + "/ext/no-such-ext/x", timeout=10).status_code == 404
    assert httpx.get(server.url + "/ext/live-ext/not-a-route", timeout=10).status_code == 404


def test_border_example_route_and_typed_settings(server):
    r = httpx.post(server.url + "/atelier/extensions/example-border/settings",
                   json={"enabled": False, "width": 3, "color": "#0000ff"}, timeout=10)
    assert r.status_code == 200, r.text
    assert httpx.get(server.url + "/ext/example-border/settings", timeout=10).json()["width"] == 3
    r = httpx.post(server.url + "/ext/example-border/apply", json={"image": png_b64()}, timeout=10)
    img = decode(r.json()["image"])
    assert img.getpixel((0, 0)) == (0, 0, 255) and img.getpixel((16, 16)) == (0, 128, 0)
    r = httpx.post(server.url + "/ext/example-border/apply", json={"image": "not base64 png"}, timeout=10)
    assert r.status_code == 422 and r.json()["field"] == "image"
    r = httpx.post(server.url + "/atelier/extensions/example-border/settings",
                   json={"enabled": True, "width": 3, "color": "blue"}, timeout=10)
    assert r.status_code == 422 and r.json()["field"] == "color"


def test_listing_shows_failed_extension_and_hook_changes_generation_until_disabled(server):
    listing = {e["name"]: e for e in httpx.get(server.url + "/atelier/extensions", timeout=10).json()}
    assert listing["broken-ext"]["status"] == "failed" and "no_such_module_anywhere" in listing["broken-ext"]["error"]
    assert listing["example-seed-explorer"]["status"] == "enabled"

    out = txt2img(server)
    assert decode(out["images"][0]).getpixel((2, 2)) == (255, 0, 0)
    r = httpx.post(server.url + "/atelier/extensions/live-ext/disable", timeout=10)
    assert r.status_code == 200 and r.json()["status"] == "disabled"
    out = txt2img(server)
    assert decode(out["images"][0]).getpixel((2, 2)) != (255, 0, 0)
    assert httpx.get(server.url + "/ext/live-ext/hello", timeout=10).status_code == 404
    assert httpx.post(server.url + "/atelier/extensions/live-ext/enable", timeout=10).json()["status"] == "enabled"
    assert httpx.get(server.url + "/ext/live-ext/hello", timeout=10).status_code == 200


def test_install_from_local_git_repo_over_http_adds_routes_at_once(server, tmp_path):
    repo = git_repo(tmp_path / "http-ext", mark_main("HTTPMARK"), name="http-ext")
    r = httpx.post(server.url + "/atelier/extensions/install", json={"source": str(repo)}, timeout=60)
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "enabled" and "restart" in r.json()["note"]  # its tab needs a restart
    assert httpx.get(server.url + "/ext/http-ext/hello", timeout=10).json()["from"] == "http-ext"
    a1111 = {e["name"]: e for e in httpx.get(server.url + "/sdapi/v1/extensions", timeout=10).json()}
    assert a1111["http-ext"]["remote"] == str(repo) and len(a1111["http-ext"]["commit_hash"]) == 40
    assert a1111["http-ext"]["enabled"] and a1111["example-border"]["version"] == "1.0.0"

    r = httpx.post(server.url + "/atelier/extensions/install", json={"source": str(repo)}, timeout=60)
    assert r.status_code == 422 and "installed already" in r.json()["detail"]
    r = httpx.delete(server.url + "/atelier/extensions/http-ext", timeout=30)
    assert r.status_code == 200
    assert httpx.get(server.url + "/ext/http-ext/hello", timeout=10).status_code == 404

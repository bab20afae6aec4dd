"""Safe public links: `--share` (offline here: no link is made, the server is the same) with no auth flags
makes up a login for user `atelier`, prints it, keeps it in <data>/login.json (0600) and requires it on
the UI and the API; failed logins from one address lock that address out for a while. One real
`python -m webui --listen --share` for the module."""
from __future__ import annotations

import json
import stat
import time

import httpx
import pytest
import webuiapi

from tests.conftest import LiveServer, make_data_dir
from tests.unit.test_extensions_support import git_repo, mark_main


@pytest.fixture(scope="module")
def listening(tmp_path_factory, demo_checkpoint):
    data = make_data_dir(tmp_path_factory.mktemp("listen-data"), demo_checkpoint)
    dead_proxy = {k: "http://127.0.0.1:9" for k in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy")}
    server = LiveServer(data, "--listen", "--share", "--no-demo",
                        env={**dead_proxy, "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"})
    try:
        deadline = time.monotonic() + 120
        while not (data / "login.json").exists():
            assert time.monotonic() < deadline and server.proc.poll() is None, server.log()
            time.sleep(0.2)
        login = json.loads((data / "login.json").read_text())
        server.wait_ready(auth=(login["user"], login["password"]))
        yield server, (login["user"], login["password"])
    finally:
        server.stop()


def test_the_made_up_login_is_printed_kept_private_and_required_on_the_api(listening):
    server, login = listening
    assert login[0] == "atelier" and len(login[1]) >= 16
    assert stat.S_IMODE((server.data_dir / "login.json").stat().st_mode) == 0o600
    deadline = time.monotonic() + 60
    while login[1] not in server.log_path.read_text():  # after the (failed, offline) share link, last
        assert time.monotonic() < deadline, "the password is printed at start"
        time.sleep(0.2)
    log = server.log_path.read_text()
    assert log.index("no public link could be made") < log.index(login[1]), "the login comes after the link"
    with httpx.Client(base_url=server.url, timeout=60) as c:
        assert c.get("/sdapi/v1/sd-models").status_code == 401
        assert c.get("/v1/models").status_code == 401
        assert c.get("/sdapi/v1/sd-models", auth=login).status_code == 200
        bearer = {"authorization": f"Bearer {login[0]}:{login[1]}"}  # what an OpenAI client sends as its api_key
        assert c.get("/v1/models", headers=bearer).status_code == 200
    api = webuiapi.WebUIApi(baseurl=server.url + "/sdapi/v1", username=login[0], password=login[1], steps=2)
    assert api.txt2img(prompt="locked", width=64, height=64, seed=3).info["all_seeds"] == [3]


def test_the_ui_asks_for_the_login(listening):
    server, login = listening
    with httpx.Client(base_url=server.url, timeout=60) as c:
        assert '"auth_required":true' in c.get("/").text.replace(" ", "")
        assert c.get("/config").status_code == 401
        assert c.post("/login", data={"username": login[0], "password": "wrong"}).status_code == 400
        ok = c.post("/login", data={"username": login[0], "password": login[1]})
        assert ok.status_code == 200 and ok.json() == {"success": True}
        assert c.get("/config").status_code == 200  # the session cookie opens the UI


def test_extension_installs_stay_refused_when_listening_even_logged_in(listening, tmp_path):
    server, login = listening
    repo = git_repo(tmp_path / "nope-ext", mark_main("NOPE"), name="nope-ext")
    r = httpx.post(server.url + "/atelier/extensions/install", json={"source": str(repo)}, auth=login, timeout=30)
    assert r.status_code == 403 and "--enable-insecure-extension-access" in r.json()["detail"]
    assert not (server.data_dir / "extensions" / "nope-ext").exists()


def test_repeated_failures_lock_that_address_out_and_only_that_one(listening):
    server, login = listening
    attacker, neighbour = {"x-forwarded-for": "203.0.113.7"}, {"x-forwarded-for": "198.51.100.4"}
    with httpx.Client(base_url=server.url, timeout=60) as c:
        for attempt in range(5):
            assert c.get("/sdapi/v1/sd-models", auth=("atelier", f"guess{attempt}"), headers=attacker).status_code == 401
        locked = c.get("/sdapi/v1/sd-models", auth=login, headers=attacker)  # even the right password, for a while
        assert locked.status_code == 429 and int(locked.headers["retry-after"]) > 0
        assert locked.json()["field"] == "authorization" and "try again" in locked.json()["detail"]
        assert c.get("/sdapi/v1/sd-models", auth=login, headers=neighbour).status_code == 200
        ui_guesser = {"x-forwarded-for": "192.0.2.9"}  # the UI's login form counts too
        for attempt in range(5):
            r = c.post("/login", data={"username": "atelier", "password": f"guess{attempt}"}, headers=ui_guesser)
            assert r.status_code == 400
        assert c.post("/login", data={"username": login[0], "password": login[1]}, headers=ui_guesser).status_code == 429
    assert "failed logins from 203.0.113.7" in server.log_path.read_text()

"""Nothing lost: kill -9 the server in the middle of its atomic writes — a PNG being saved and
config.json being written — then start it again: no partial file anywhere, no stray
temporaries, config.json as it was before the interrupted write, and the studio serves.

Deterministic: the server runs with os.fsync slowed (a hook in the child process, armed by the
test), so the kill lands inside modules/atomic.py's write — after the bytes, before the rename —
every time, not by luck."""
from __future__ import annotations

import json
import os
import signal
import threading
from pathlib import Path

import httpx
from PIL import Image

from tests.conftest import LiveServer, make_data_dir, start_live_server, wait_until
from tests.reliability.helpers import all_pngs, body

# `python -c SLOW_FSYNC_WEBUI --data-dir …`: `python -m webui`, with os.fsync of a PNG or config.json
# write blocking (and reported) once the ARM file exists.
SLOW_FSYNC_WEBUI = """
import os, runpy, sys, time
arm, report = os.environ["ATELIER_TEST_FSYNC_ARM"], os.environ["ATELIER_TEST_FSYNC_REPORT"]
real_fsync = os.fsync

def slow_fsync(fd):
    if os.path.exists(arm):
        target = os.readlink(f"/proc/self/fd/{fd}")
        name = os.path.basename(target)
        if "config.json" in name or name.endswith(".png") or ".png." in name:
            with open(os.path.join(report, f"{time.monotonic_ns()}"), "w") as f:
                f.write(target)
            time.sleep(3600)  # the test kills the process meanwhile
    return real_fsync(fd)

os.fsync = slow_fsync
sys.argv = ["webui", *sys.argv[1:]]
runpy.run_module("webui", run_name="__main__", alter_sys=True)
"""


def _caught(report: Path) -> list[Path]:
    """The files whose write is blocked in fsync right now, in the order they got there."""
    return [Path(p.read_text()) for p in sorted(report.iterdir()) if p.read_text()]


def _final_name(written: Path) -> Path:
    """`.00012-5.png.k3j2.tmp` → `00012-5.png` (modules/atomic.py's temporary naming); a file written in place
    is its own final name."""
    if written.name.startswith(".") and written.name.endswith(".tmp"):
        return written.with_name(written.name[1:].rsplit(".", 2)[0])
    return written


def _post_in_background(url: str, path: str, payload: dict) -> threading.Thread:
    def go():
        try:
            httpx.post(url + path, json=payload, timeout=120)
        except httpx.HTTPError:
            pass  # the server is killed under it

    thread = threading.Thread(target=go, daemon=True)
    thread.start()
    return thread


def test_kill_inside_atomic_writes_loses_nothing(tmp_path_factory, demo_checkpoint):
    data = make_data_dir(tmp_path_factory.mktemp("kill9"), demo_checkpoint)
    arm, report = data / "ARM-SLOW-FSYNC", data / "fsync-report"
    report.mkdir()
    env = {"ATELIER_TEST_FSYNC_ARM": str(arm), "ATELIER_TEST_FSYNC_REPORT": str(report)}
    server = start_live_server(data, env=env, launcher=("-c", SLOW_FSYNC_WEBUI))
    try:
        # Before: a saved setting and a saved image, written normally.
        assert httpx.post(server.url + "/sdapi/v1/options", json={"CLIP_stop_at_last_layers": 2}, timeout=30).status_code == 200
        config_before = (data / "config.json").read_bytes()
        r = httpx.post(server.url + "/sdapi/v1/txt2img", json=body(seed=1, steps=1, save_images=True), timeout=120)
        assert r.status_code == 200, r.text[:300]
        saved_before = all_pngs(data / "outputs")
        assert len(saved_before) == 1

        arm.touch()
        # The PNG first: it is written on the job worker. (POST /options saves on the event loop, so while
        # that write hangs nothing else is served.)
        threads = [_post_in_background(server.url, "/sdapi/v1/txt2img", body(seed=2, steps=1, save_images=True))]
        png_tmp = wait_until(lambda: _caught(report), 60, "the PNG's write to reach fsync")[0]
        threads.append(_post_in_background(server.url, "/sdapi/v1/options", {"CLIP_stop_at_last_layers": 3}))
        config_tmp = wait_until(lambda: _caught(report)[1:], 60, "config.json's write to reach fsync")[0]
        os.kill(server.proc.pid, signal.SIGKILL)
        assert server.proc.wait(30) == -signal.SIGKILL
    finally:
        server.stop()
    for thread in threads:
        thread.join(30)

    # At the kill both writes were inside the atomic write: bytes in a temporary, the real file untouched.
    assert _final_name(config_tmp) == data / "config.json", config_tmp
    assert (data / "config.json").read_bytes() == config_before, "config.json changed although its write was killed"
    assert _final_name(png_tmp).parent.parent.parent == data / "outputs", png_tmp
    assert not _final_name(png_tmp).exists(), "a PNG whose write was killed must not appear"
    assert config_tmp != _final_name(config_tmp) and config_tmp.exists() and png_tmp.exists(), \
        "the kill should have left the temporaries of both writes"

    restarted = LiveServer(data)  # a plain server, no hook: a clean start over what the kill left
    try:
        restarted.wait_ready()
        assert not config_tmp.exists() and not png_tmp.exists(), "stale temporaries are cleaned at start"
        assert not list(data.rglob(".*.tmp"))
        assert (data / "config.json").read_bytes() == config_before
        assert httpx.get(restarted.url + "/sdapi/v1/options", timeout=30).json()["CLIP_stop_at_last_layers"] == 2
        assert all_pngs(data / "outputs") == saved_before
        for path in saved_before:
            with Image.open(path) as im:
                im.load()  # a partial PNG fails here
                assert "Seed: 1" in im.info.get("parameters", ""), f"{path.name} has no infotext"
        r = httpx.post(restarted.url + "/sdapi/v1/txt2img", json=body(seed=3, steps=2, save_images=True), timeout=120)
        assert r.status_code == 200, r.text[:300]
        assert len(all_pngs(data / "outputs")) == 2
        assert json.loads((data / "config.json").read_text())["CLIP_stop_at_last_layers"] == 2
    finally:
        restarted.stop()

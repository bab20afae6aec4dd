"""Nothing lost: kill -9 the server while it generates and saves; after a restart outputs/ holds
no partial PNG (every .png opens and carries its infotext), no stray temporaries, and
config.json is intact."""
from __future__ import annotations

import json
import os
import signal
import threading
import time

import httpx
from PIL import Image

from tests.conftest import LiveServer
from tests.reliability.helpers import all_pngs, body, start


def test_kill_during_generation_loses_nothing(tmp_path_factory, demo_checkpoint):
    server = start(tmp_path_factory, demo_checkpoint)
    data = server.data_dir
    try:
        assert httpx.post(server.url + "/sdapi/v1/options", json={"CLIP_stop_at_last_layers": 2}, timeout=10).status_code == 200
        config_before = json.loads((data / "config.json").read_text())

        # Many small saving requests at once, so the kill lands among writes, not only between them.
        stop = threading.Event()

        def flood(offset: int):
            i = 0
            while not stop.is_set():
                try:
                    httpx.post(server.url + "/sdapi/v1/txt2img", json=body(seed=offset + i, steps=1, save_images=True),
                               timeout=30)
                except httpx.HTTPError:
                    return
                i += 1

        threads = [threading.Thread(target=flood, args=(1000 * k,), daemon=True) for k in range(6)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 60
        while len(all_pngs(data / "outputs")) < 8:
            assert time.monotonic() < deadline, "no images were saved"
            time.sleep(0.05)
        os.kill(server.proc.pid, signal.SIGKILL)
        server.proc.wait(10)
        stop.set()
        for t in threads:
            t.join(10)
    finally:
        server.stop()

    # What a kill in the middle of an atomic write leaves behind, planted so the clean-up is always tested.
    day = next((data / "outputs").rglob("*.png")).parent
    stray = day / ".00099-1.png.abc123.tmp"
    stray.write_bytes(b"\x89PNG\r\n\x1a\n half a file")
    (data / ".config.json.xyz.tmp").write_text('{"half": ')

    restarted = LiveServer(data)
    try:
        restarted.wait_ready()
        assert not stray.exists(), "stale temporaries in outputs/ are cleaned at start"
        assert not (data / ".config.json.xyz.tmp").exists()
        pngs = all_pngs(data / "outputs")
        assert pngs
        for path in pngs:
            with Image.open(path) as im:
                im.load()  # a partial PNG fails here
                assert "Seed:" in im.info.get("parameters", ""), f"{path.name} has no infotext"
        assert json.loads((data / "config.json").read_text()) == config_before
        options = httpx.get(restarted.url + "/sdapi/v1/options", timeout=10).json()
        assert options["CLIP_stop_at_last_layers"] == 2
        r = httpx.post(restarted.url + "/sdapi/v1/txt2img", json=body(steps=2), timeout=120)
        assert r.status_code == 200
    finally:
        restarted.stop()

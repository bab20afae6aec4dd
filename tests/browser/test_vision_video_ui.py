"""Vision tab → Video: a person uploads a generated clip (a red square moving across 30 frames), runs
tracking with YOLO (ByteTrack) and the hand-weighted red-square detector (why: tests/unit/test_yolo_track.py),
sees one track in the table and the output video, which plays in the browser (H.264 MP4 from PyAV)."""
from __future__ import annotations

import httpx
import pytest

from tests.browser.helpers import choose, open_tab, set_number
from tests.conftest import make_data_dir, start_live_server
from tests.unit.test_yolo_extension import BUILD_S, ENVS, in_worker_python
from tests.video_support import rectangle_video, red_detector_code

TIMEOUT = 300


@pytest.fixture(scope="module")
def yolo_server(tmp_path_factory, demo_checkpoint):
    """A server with YOLO enabled (its environment from the clone's cache) and red.pt trusted."""
    data = make_data_dir(tmp_path_factory.mktemp("video-ui"), demo_checkpoint)
    server = start_live_server(data, "--extension-envs", str(ENVS))
    try:
        r = httpx.post(server.url + "/atelier/extensions/yolo/enable", json={"confirm_requirements": True},
                       timeout=BUILD_S)
        assert r.status_code == 200 and r.json()["status"] == "enabled", r.text[:800]
        in_worker_python(r.json()["environment"]["python"], red_detector_code(data / "models" / "yolo" / "red.pt"),
                         tmp_path_factory.mktemp("red"))
        for step, body in (("disable", None), ("enable", {"confirm_requirements": False})):  # rescan models/yolo
            assert httpx.post(f"{server.url}/atelier/extensions/yolo/{step}", json=body, timeout=TIMEOUT).status_code == 200
        listed = {f["name"]: f for f in httpx.get(server.url + "/ext/yolo/trust", timeout=60).json()["files"]}
        r = httpx.post(server.url + "/ext/yolo/trust", json={"name": "red.pt", "sha256": listed["red.pt"]["sha256"]},
                       timeout=60)
        assert r.status_code == 200, r.text[:500]
        yield server
    finally:
        server.stop()


@pytest.mark.timeout(BUILD_S + 600)
def test_upload_a_video_track_it_and_the_output_video_plays(browser, yolo_server, tmp_path):
    (tmp_path / "moving.mp4").write_bytes(rectangle_video(30, fps=10))
    context = browser.new_context(viewport={"width": 1400, "height": 1400})
    page = context.new_page()
    page.set_default_timeout(60_000)
    try:
        page.goto(yolo_server.url + "/")
        open_tab(page, "Vision")
        page.click("#vision_video_acc")
        page.wait_for_function("() => document.querySelector('#vision_video_model input').value === 'red.pt'")
        page.locator("#vision_video_input input[type=file]").set_input_files(str(tmp_path / "moving.mp4"))
        page.locator("#vision_video_input video").wait_for(state="attached")
        choose(page, "vision_video_tracker", "bytetrack")
        set_number(page, "vision_video_conf", 0.5)
        set_number(page, "vision_video_imgsz", 96)
        page.click("#vision_video_run")
        page.wait_for_function("() => document.querySelector('#vision_video_summary').innerText.includes('frames in')",
                               timeout=TIMEOUT * 1000)
        assert "30 frames" in page.locator("#vision_video_summary").inner_text()
        page.wait_for_function("() => document.querySelector('#vision_video_tracks').innerText.includes('rectangle')")
        table = page.locator("#vision_video_tracks").inner_text()
        assert table.count("rectangle") == 1, table  # one track, in every frame
        video = page.locator("#vision_video_output video")
        video.wait_for(state="attached")
        page.wait_for_function("() => { const v = document.querySelector('#vision_video_output video');"
                               " return v && v.readyState >= 2 && v.duration > 0; }", timeout=60_000)
        assert abs(video.evaluate("(v) => v.duration") - 3.0) < 0.2
        video.evaluate("(v) => { v.muted = true; return v.play(); }")
        page.wait_for_function("() => document.querySelector('#vision_video_output video').currentTime > 0.3",
                               timeout=30_000)
        assert video.evaluate("(v) => v.videoWidth") == 96, "the browser decoded the H.264 frames"
    finally:
        context.close()

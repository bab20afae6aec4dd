"""The YOLO export tab in a browser, on a server started with the YOLO extension enabled (its environment from
the clone's cache): a refusal shown naming the field, then an ONNX export of a trusted random-weight yolov8n
whose new model the page names and /atelier/v1/models lists."""
from __future__ import annotations

import json

import httpx
import pytest

from tests.api.test_yolo_http import make_models
from tests.browser.helpers import choose, open_tab, page_of, set_number
from tests.conftest import make_data_dir, start_live_server
from tests.unit.test_yolo_extension import BUILD_S, ENVS, enable_yolo, studio_with_envs


@pytest.fixture(scope="module")
def yolo_server(tmp_path_factory, demo_checkpoint):
    data = make_data_dir(tmp_path_factory.mktemp("yolo-export-ui"), demo_checkpoint)
    studio = studio_with_envs(data, ENVS)  # enabled once (built when the cache has none), remembered in config.json
    try:
        python = enable_yolo(studio)
    finally:
        studio.shutdown()
    make_models(str(python), data)
    server = start_live_server(data, "--extension-envs", str(ENVS))
    yield server
    server.stop()


@pytest.mark.timeout(BUILD_S + 600)
def test_export_a_trusted_pt_to_onnx_from_the_yolo_export_tab(browser, yolo_server):
    listed = {f["name"]: f for f in httpx.get(yolo_server.url + "/ext/yolo/trust", timeout=60).json()["files"]}
    r = httpx.post(yolo_server.url + "/ext/yolo/trust", json={"name": "yolov8n.pt",
                                                             "sha256": listed["yolov8n.pt"]["sha256"]}, timeout=60)
    assert r.status_code == 200, r.text
    with page_of(browser, yolo_server) as page:
        open_tab(page, "YOLO export")
        choose(page, "yolo_export_model", "yolov8n.pt")
        set_number(page, "yolo_export_imgsz", 320)
        page.get_by_role("radio", name="INT8").check()
        page.click("#yolo_export_go")
        status = page.locator("#yolo_export_status")
        status.get_by_text("Refused").wait_for(timeout=120_000)
        assert "data" in status.inner_text() and "datasets/" in status.inner_text(), status.inner_text()
        page.get_by_role("radio", name="FP32").check()
        page.click("#yolo_export_go")
        status.get_by_text("Exported").wait_for(timeout=300_000)
        assert "yolov8n.onnx" in status.inner_text() and "fp32" in status.inner_text(), status.inner_text()
    rows = httpx.get(yolo_server.url + "/atelier/v1/models", timeout=60).json()["models"]
    assert "yolov8n.onnx" in [m["name"] for m in rows if m["kind"] == "yolo"], json.dumps(rows)[:800]

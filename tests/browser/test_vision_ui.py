"""Vision tab: upload an image, run detect with the demo PaliGemma, see the overlay and the JSON."""
from __future__ import annotations

import json

from tests.browser.helpers import choose, open_tab


def test_upload_an_image_run_detect_and_see_the_overlay_and_the_json(page, tmp_path):
    from PIL import Image

    Image.new("RGB", (96, 64), (200, 40, 40)).save(tmp_path / "red.png")
    open_tab(page, "Vision")
    page.wait_for_function("() => document.querySelector('#vision_task input').value !== ''")
    choose(page, "vision_task", "Detect objects (detect)")
    page.wait_for_function("() => document.querySelector('#vision_model input').value.includes('paligemma')")
    page.locator("#vision_image input[type=file]").set_input_files(str(tmp_path / "red.png"))
    page.locator("#vision_image img").wait_for(state="visible")
    page.fill("#vision_objects textarea", "cat ; dog")
    page.click("#vision_run")
    page.locator("#vision_overlay img").wait_for(state="visible", timeout=120_000)
    page.wait_for_function("() => document.querySelector('#vision_json').innerText.includes('\"task\"')")
    shown = json.loads(page.locator("#vision_json .cm-content").inner_text())
    assert shown["task"] == "detect" and shown["model"] == "atelier-demo-paligemma"
    assert (shown["width"], shown["height"]) == (96, 64)
    assert shown["prompt"] == "detect cat ; dog"
    assert isinstance(shown["objects"], list) and isinstance(shown["invalid"], int)
    size = page.locator("#vision_overlay img").evaluate("(img) => [img.naturalWidth, img.naturalHeight]")
    assert size == [96, 64], "the overlay is drawn over the image at its own size"
    assert page.locator("#vision_download_json").is_visible()

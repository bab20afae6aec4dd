"""txt2img in a real browser: type a prompt, Generate, an image appears with its infotext."""
from __future__ import annotations

import os
import shutil

from PIL import Image

from tests.browser.helpers import small_run
from tests.conftest import wait_until


def test_generate_shows_image_and_infotext(page, live_server, tmp_path):
    outputs = live_server.data_dir / "outputs"
    before = set(outputs.rglob("*.png"))  # the server is shared: what this test makes is what is new
    page.fill("#txt2img_prompt textarea", "a lighthouse at dusk")
    small_run(page, "txt2img", steps=4, size=64)
    page.click("#txt2img_generate")
    page.wait_for_selector("#txt2img_gallery img", timeout=60_000)
    info = page.locator("#txt2img_info textarea")
    page.wait_for_function("() => document.querySelector('#txt2img_info textarea').value.includes('Steps: 4')")
    text = info.input_value()
    assert text.startswith("a lighthouse at dusk")
    assert "Size: 64x64" in text and "Seed: " in text
    # The button came back after the run, and this image is on disk under outputs/, with the infotext shown.
    page.wait_for_selector("#txt2img_generate", state="visible")
    new = wait_until(lambda: sorted(set(outputs.rglob("*.png")) - before), 10, "the new PNG under outputs/")
    assert len(new) == 1, new
    with Image.open(new[0]) as im:
        assert im.size == (64, 64) and im.info["parameters"] == text
    page.screenshot(path=str(tmp_path / "txt2img.png"), full_page=True)
    if os.environ.get("ATELIER_SHOT_DIR"):  # to look at the layout by eye
        shutil.copy(tmp_path / "txt2img.png", os.environ["ATELIER_SHOT_DIR"])

    # Send to img2img: the picture and its prompt arrive in the img2img tab, which opens.
    page.click("#txt2img_send_img2img")
    page.wait_for_selector("#img2img_image img", timeout=15_000)
    assert page.locator("#img2img_prompt textarea").input_value() == "a lighthouse at dusk"
    assert page.locator("#img2img_steps input[type=number]").input_value() == "4"

    # …and img2img runs on it, writing its own output.
    page.click("#img2img_generate")
    page.wait_for_function("() => document.querySelector('#img2img_info textarea').value.includes('Denoising strength')",
                           timeout=60_000)
    page.wait_for_selector("#img2img_gallery img")

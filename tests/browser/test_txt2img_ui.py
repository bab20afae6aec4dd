"""txt2img in a real browser: type a prompt, Generate, an image appears with its infotext."""
from __future__ import annotations

from tests.browser.helpers import small_run


def test_generate_shows_image_and_infotext(page, live_server, tmp_path):
    page.fill("#txt2img_prompt textarea", "a lighthouse at dusk")
    small_run(page, "txt2img", steps=4, size=64)
    page.click("#txt2img_generate")
    page.wait_for_selector("#txt2img_gallery img", timeout=60_000)
    info = page.locator("#txt2img_info textarea")
    page.wait_for_function("() => document.querySelector('#txt2img_info textarea').value.includes('Steps: 4')")
    text = info.input_value()
    assert text.startswith("a lighthouse at dusk")
    assert "Size: 64x64" in text and "Seed: " in text
    # The button came back after the run, and the image is on disk under outputs/.
    page.wait_for_selector("#txt2img_generate", state="visible")
    saved = list((live_server.data_dir / "outputs").rglob("*.png"))
    assert saved, "no PNG was written under outputs/"
    page.screenshot(path=str(tmp_path / "txt2img.png"), full_page=True)
    import shutil, os
    if os.environ.get("ATELIER_SHOT_DIR"):
        shutil.copy(tmp_path / "txt2img.png", os.environ["ATELIER_SHOT_DIR"])

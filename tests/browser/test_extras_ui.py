"""Extras tab: upload an image, pick an upscaler model, Generate, and see the 4x image (saved with its infotext)."""
from __future__ import annotations

from PIL import Image

from tests.browser.helpers import choose, open_tab, set_number
from tests.fixtures_models import save_demo_upscaler

MODEL = "browser-x4"


def test_extras_upscales_an_upload_with_a_model(page, live_server, tmp_path):
    model = save_demo_upscaler(live_server.data_dir / "models" / "ESRGAN" / f"{MODEL}.safetensors")
    try:
        Image.new("RGB", (24, 16), (200, 40, 40)).save(tmp_path / "small.png")
        open_tab(page, "Extras")  # opening the tab reads the upscaler folders again: the new model is listed
        page.locator("#extras_image input[type=file]").set_input_files(str(tmp_path / "small.png"))
        page.wait_for_selector("#extras_image img")
        set_number(page, "extras_upscaling_resize", 4)
        choose(page, "extras_upscaler_1", MODEL)
        page.click("#extras_generate")
        shown = page.locator("#extras_gallery img").first
        shown.wait_for(state="visible", timeout=60_000)
        page.wait_for_function("() => { const i = document.querySelector('#extras_gallery img');"
                               " return i && i.complete && i.naturalWidth > 0; }")
        assert shown.evaluate("i => [i.naturalWidth, i.naturalHeight]") == [96, 64]
        info = page.locator("#extras_info").inner_text()
        assert f"Postprocess upscaler: {MODEL}" in info and "Postprocess upscale by: 4" in info
        saved = sorted((live_server.data_dir / "outputs" / "extras-images").rglob("*.png"), key=lambda p: p.stat().st_mtime)
        with Image.open(saved[-1]) as im:
            assert im.size == (96, 64) and f"Postprocess upscaler: {MODEL}" in im.info["parameters"]
    finally:
        model.unlink()

"""Restore faces in a real browser: the txt2img checkbox (the infotext says "Face restoration: GFPGAN") and
Extras' GFPGAN section on an uploaded face; without a model the checkbox's refusal names the folder."""
from __future__ import annotations

from tests.browser.helpers import open_tab, small_run
from tests.conftest import link_model
from tests.fixtures_models import schematic_face


def test_restore_faces_checkbox_and_extras_gfpgan(page, live_server, demo_gfpgan, tmp_path):
    box = page.locator("#txt2img_restore_faces input[type=checkbox]")
    page.fill("#txt2img_prompt textarea", "a portrait")
    small_run(page, "txt2img", steps=2, size=64)
    box.check()
    page.click("#txt2img_generate")
    # Refused at submit (no model yet), in the error toast, naming where. Not any text on the page: the
    # checkbox's own info names models/GFPGAN too, and matching it would race the run that is still going.
    page.locator(".toast-body").get_by_text("models/GFPGAN").first.wait_for(timeout=180_000)
    page.locator("#txt2img_generate").wait_for(state="visible", timeout=60_000)  # the run's buttons are back

    model = link_model(demo_gfpgan, live_server.data_dir / "models" / "GFPGAN")
    try:
        page.click("#txt2img_generate")
        page.wait_for_function("() => document.querySelector('#txt2img_info textarea').value"
                               ".includes('Face restoration: GFPGAN')", timeout=120_000)
        box.uncheck()

        schematic_face(200).save(tmp_path / "face.png")
        open_tab(page, "Extras")
        page.locator("#extras_image input[type=file]").set_input_files(str(tmp_path / "face.png"))
        page.wait_for_selector("#extras_image img")
        page.locator("#extras_upscaler_1 input").click()
        page.get_by_role("option", name="None", exact=True).click()
        page.locator("#extras_gfpgan input[type=checkbox]").check()
        page.click("#extras_generate")
        page.get_by_text("GFPGAN visibility: 1").first.wait_for(timeout=120_000)
        shown = page.locator("#extras_gallery img").first
        page.wait_for_function("() => { const i = document.querySelector('#extras_gallery img');"
                               " return i && i.complete && i.naturalWidth > 0; }")
        assert shown.evaluate("i => [i.naturalWidth, i.naturalHeight]") == [200, 200]  # restored in its own size
    finally:
        model.unlink()

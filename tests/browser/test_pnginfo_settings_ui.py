"""PNG Info → Send to txt2img fills the fields; Settings → Apply writes config.json."""
from __future__ import annotations

import json

from tests.browser.helpers import open_tab, set_number

INFOTEXT = ("a castle on a hill, (golden hour:1.2)\nNegative prompt: blurry, lowres\n"
            "Steps: 7, Sampler: Euler, Schedule type: Karras, CFG scale: 5.5, Seed: 1234, Size: 96x64, "
            "Clip skip: 2, Model: atelier-demo-sd15")


def number_value(page, elem_id: str) -> float:
    return float(page.locator(f"#{elem_id} input[type=number]").first.input_value())


def test_png_info_send_to_txt2img(page, tmp_path):
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("parameters", INFOTEXT)
    Image.new("RGB", (96, 64), (10, 20, 30)).save(tmp_path / "made.png", pnginfo=info)

    open_tab(page, "PNG Info")
    page.locator("#pnginfo_image input[type=file]").set_input_files(str(tmp_path / "made.png"))
    page.wait_for_function("() => document.querySelector('#pnginfo_text textarea').value.includes('Steps: 7')")
    assert "Karras" in page.locator("#pnginfo_table").inner_text()
    page.click("#pnginfo_send_txt2img")
    prompt = page.locator("#txt2img_prompt textarea")
    prompt.wait_for(state="visible")
    page.wait_for_function("() => document.querySelector('#txt2img_prompt textarea').value.startsWith('a castle')")
    assert prompt.input_value() == "a castle on a hill, (golden hour:1.2)"
    assert page.locator("#txt2img_neg_prompt textarea").input_value() == "blurry, lowres"
    assert number_value(page, "txt2img_steps") == 7
    assert number_value(page, "txt2img_cfg_scale") == 5.5
    assert number_value(page, "txt2img_width") == 96
    assert number_value(page, "txt2img_height") == 64
    assert number_value(page, "txt2img_clip_skip") == 2
    assert page.locator("#txt2img_seed input").input_value() == "1234"
    assert page.locator("#txt2img_sampling input").input_value() == "Euler"
    assert page.locator("#txt2img_scheduler input").input_value() == "Karras"


def test_settings_apply_persists_to_config_json(page, live_server):
    open_tab(page, "Settings")
    set_number(page, "setting_show_progress_every_n_steps", 5)
    page.locator("#setting_save_images_default input[type=checkbox]").uncheck()
    page.click("#settings_submit")
    page.wait_for_function("() => document.querySelector('#settings_result').innerText.includes('Saved')")
    saved = json.loads((live_server.data_dir / "config.json").read_text())
    assert saved["show_progress_every_n_steps"] == 5
    assert saved["save_images_default"] is False
    # Put them back so the other tests see the defaults.
    set_number(page, "setting_show_progress_every_n_steps", 2)
    page.locator("#setting_save_images_default input[type=checkbox]").check()
    page.click("#settings_submit")
    page.wait_for_function("() => document.querySelector('#settings_result').innerText.includes('Saved 2')")


def test_a_task_section_is_saved_under_tasks(page, live_server):
    open_tab(page, "Settings")
    page.locator("#settings_section_models").get_by_text("models").first.click()
    set_number(page, "setting_models_ram_budget_gb", 20)
    page.click("#settings_submit")
    page.wait_for_function("() => document.querySelector('#settings_result').innerText.includes('models.ram_budget_gb')")
    saved = json.loads((live_server.data_dir / "config.json").read_text())
    assert saved["tasks"]["models"]["ram_budget_gb"] == 20
    set_number(page, "setting_models_ram_budget_gb", 0)  # back to automatic for the other tests
    page.click("#settings_submit")
    page.wait_for_function("() => document.querySelector('#settings_result').innerText.includes('Saved 1')")
    assert json.loads((live_server.data_dir / "config.json").read_text())["tasks"]["models"]["ram_budget_gb"] == 0


def test_opening_settings_shows_a_change_made_through_the_api_and_keeps_what_is_typed(page, live_server):
    import httpx

    # The page was built before this change: opening the tab brings it in, and leaves the other fields alone.
    r = httpx.post(live_server.url + "/sdapi/v1/options", json={"show_progress_every_n_steps": 7}, timeout=30)
    assert r.status_code == 200, r.text
    try:
        open_tab(page, "Settings")
        page.wait_for_function("() => document.querySelector('#setting_show_progress_every_n_steps "
                               "input[type=number]').value === '7'")
        page.locator("#settings_section_models").get_by_text("models").first.click()
        set_number(page, "setting_models_ram_budget_gb", 3)
        page.get_by_role("tab", name="txt2img", exact=True).click()
        open_tab(page, "Settings")  # opened again: the server has not changed it, so the typed 3 stays
        page.wait_for_timeout(500)
        assert page.locator("#setting_models_ram_budget_gb input[type=number]").first.input_value() == "3"
    finally:
        httpx.post(live_server.url + "/sdapi/v1/options", json={"show_progress_every_n_steps": 2}, timeout=30)

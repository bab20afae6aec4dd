"""Prompt editing, styles and tiling in a real browser: an edited prompt generates and keeps its text; a style
is saved from the prompt boxes, applied into them with 📋, and applied at generation when picked; the Tiling
checkbox makes a tiled picture."""
from __future__ import annotations

import csv
import io

from tests.browser.helpers import small_run


def info_text(page, tab="txt2img") -> str:
    return page.locator(f"#{tab}_info textarea").input_value()


def wait_info(page, needle: str, tab="txt2img") -> None:
    page.wait_for_function(f"(n) => document.querySelector('#{tab}_info textarea').value.includes(n)", arg=needle,
                           timeout=60_000)


def test_prompt_editing_generates_and_keeps_the_prompt_as_written(page):
    page.fill("#txt2img_prompt textarea", "a [lighthouse:castle:0.5] at [dusk|dawn]")
    small_run(page, "txt2img", steps=4, size=64)
    page.click("#txt2img_generate")
    wait_info(page, "Steps: 4")
    assert info_text(page).startswith("a [lighthouse:castle:0.5] at [dusk|dawn]\n")


def pick_style(page, name: str, tab="txt2img") -> None:
    page.click(f"#{tab}_styles input")
    page.get_by_role("option", name=name, exact=True).click()
    page.keyboard.press("Escape")


def test_save_apply_and_generate_with_a_style(page, live_server):
    page.fill("#txt2img_prompt textarea", "cinematic still of {prompt}, film grain")
    page.fill("#txt2img_neg_prompt textarea", "cartoon")
    page.locator("#txt2img_style_edit").get_by_text("Save the prompts as a style").click()  # open the accordion
    page.fill("#txt2img_style_name textarea, #txt2img_style_name input", "cinematic")
    page.click("#txt2img_style_save")
    path = live_server.data_dir / "styles.csv"
    page.wait_for_function("() => true")  # let the click land
    for _ in range(50):
        if path.exists():
            break
        page.wait_for_timeout(100)
    rows = list(csv.DictReader(io.StringIO(path.read_bytes().decode("utf-8-sig"))))
    assert rows == [{"name": "cinematic", "prompt": "cinematic still of {prompt}, film grain", "negative_prompt": "cartoon"}]

    # 📋 writes the picked style into the boxes, and unpicks it
    page.click("#txt2img_styles_refresh")
    page.fill("#txt2img_prompt textarea", "a red fox")
    page.fill("#txt2img_neg_prompt textarea", "blurry")
    pick_style(page, "cinematic")
    page.click("#txt2img_style_apply")
    page.wait_for_function("() => document.querySelector('#txt2img_prompt textarea').value.startsWith('cinematic still')")
    assert page.locator("#txt2img_prompt textarea").input_value() == "cinematic still of a red fox, film grain"
    assert page.locator("#txt2img_neg_prompt textarea").input_value() == "blurry, cartoon"

    # picked and left picked, it is applied when the job runs: the infotext has the styled prompt
    page.fill("#txt2img_prompt textarea", "a blue bird")
    page.fill("#txt2img_neg_prompt textarea", "")
    pick_style(page, "cinematic")
    small_run(page, "txt2img", steps=3, size=64)
    page.click("#txt2img_generate")
    wait_info(page, "Steps: 3")
    assert info_text(page).startswith("cinematic still of a blue bird, film grain\nNegative prompt: cartoon\n")
    assert page.locator("#txt2img_prompt textarea").input_value() == "a blue bird"

    # Reuse parameters takes the style back out of the prompt, as A1111 does
    page.fill("#txt2img_prompt textarea", "something else")
    page.click("#txt2img_reuse_params")
    page.wait_for_function("() => document.querySelector('#txt2img_prompt textarea').value === 'a blue bird'")


def test_tiling_checkbox(page):
    page.fill("#txt2img_prompt textarea", "a stone wall")
    page.locator("#txt2img_tiling input[type=checkbox]").check()
    small_run(page, "txt2img", steps=3, size=64)
    page.click("#txt2img_generate")
    wait_info(page, "Tiling: True")
    page.locator("#txt2img_tiling input[type=checkbox]").uncheck()


def choose(page, elem_id: str, value: str) -> None:
    page.click(f"#{elem_id} input")
    page.locator(f"#{elem_id}").get_by_role("option", name=value, exact=True).click()
    page.keyboard.press("Escape")


def test_xyz_plot_section_makes_a_labelled_grid(page, live_server):
    page.fill("#txt2img_prompt textarea", "a red fox")
    small_run(page, "txt2img", steps=3, size=64)
    page.locator("#txt2img_xyz").get_by_text("X/Y/Z plot", exact=True).click()  # open the accordion
    page.locator("#txt2img_xyz_enable input[type=checkbox]").check()
    choose(page, "txt2img_xyz_x_type", "Steps")
    page.fill("#txt2img_xyz_x_values input, #txt2img_xyz_x_values textarea", "2, 3")
    choose(page, "txt2img_xyz_y_type", "Sampler")
    page.click("#txt2img_xyz_y_fill")  # 📒 fills every sampler; keep two
    page.wait_for_function("() => (document.querySelector('#txt2img_xyz_y_values input, #txt2img_xyz_y_values textarea')"
                           ".value || '').includes('Euler a')")
    page.fill("#txt2img_xyz_y_values input, #txt2img_xyz_y_values textarea", "Euler, DDIM")
    page.click("#txt2img_generate")
    wait_info(page, "Script: X/Y/Z plot")
    text = info_text(page)
    assert "X Type: Steps" in text and "Y Type: Sampler" in text
    page.wait_for_selector("#txt2img_gallery img")
    grids = list((live_server.data_dir / "outputs" / "txt2img-grids").rglob("*.png"))
    assert grids, "the grid is saved under outputs/txt2img-grids"
    from PIL import Image

    with Image.open(sorted(grids)[-1]) as grid:
        assert grid.width > 2 * 64 and grid.height > 2 * 64 and "X/Y/Z plot" in grid.info["parameters"]
    page.locator("#txt2img_xyz_enable input[type=checkbox]").uncheck()

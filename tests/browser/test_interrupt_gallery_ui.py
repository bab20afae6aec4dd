"""A long generation shows live progress and stops on Interrupt; the Gallery lists, shows and deletes outputs."""
from __future__ import annotations

import time

from tests.browser.helpers import open_tab, set_number, small_run
from tests.conftest import wait_until


def test_interrupt_long_generation(page, live_server):
    outputs = live_server.data_dir / "outputs"
    before = set(outputs.rglob("*.png"))
    page.fill("#txt2img_prompt textarea", "a very long run")
    small_run(page, "txt2img", steps=150, size=64)
    set_number(page, "txt2img_batch_count", 4)
    page.click("#txt2img_generate")
    page.wait_for_selector("#txt2img_interrupt", state="visible")
    assert not page.locator("#txt2img_generate").is_visible()
    # Live progress: step/total with an ETA, at most a few updates a second.
    page.wait_for_function("() => /Step \\d+\\/150/.test(document.querySelector('#txt2img_progress').innerText)",
                           timeout=60_000)
    assert "ETA" in page.locator("#txt2img_progress").inner_text()
    # Skip drops the current picture and goes on with the next one of the batch count.
    page.click("#txt2img_skip")
    page.wait_for_function("() => document.querySelector('#txt2img_progress').innerText.includes('batch 2/4')",
                           timeout=20_000)
    page.click("#txt2img_interrupt")
    page.wait_for_selector("#txt2img_generate", state="visible", timeout=20_000)
    page.wait_for_function("() => document.querySelector('#txt2img_progress').innerText.includes('Interrupted')")
    assert not page.locator("#txt2img_interrupt").is_visible()
    # Counted, not timed: the skipped first picture and the interrupted second are saved, the last two never
    # started (an interrupt that waited for the batch to end would have saved all four, 600 steps later).
    made = wait_until(lambda: sorted(set(outputs.rglob("*.png")) - before)[1:] or None, 10, "two saved pictures")
    time.sleep(1)  # anything still on its way lands now
    assert len(set(outputs.rglob("*.png")) - before) == 2, made


def test_gallery_browse_view_delete(page, live_server):
    # Make sure there is at least one image today.
    page.fill("#txt2img_prompt textarea", "for the gallery")
    small_run(page, "txt2img", steps=2, size=64)
    page.locator("#txt2img_prompt textarea").press("Shift+Enter")  # generates like the button
    page.wait_for_function("() => document.querySelector('#txt2img_info textarea').value.includes('for the gallery')",
                           timeout=60_000)
    open_tab(page, "Gallery")
    page.wait_for_selector("#gallery_images img")
    assert "image(s) on" in page.locator("#gallery_status").inner_text()
    page.locator("#gallery_images button img").first.click()
    page.wait_for_function("() => document.querySelector('#gallery_path textarea, #gallery_path input').value.endsWith('.png')")
    rel = page.locator("#gallery_path textarea, #gallery_path input").first.input_value()
    assert "for the gallery" in page.locator("#gallery_info textarea").input_value()  # newest first
    target = live_server.data_dir / "outputs" / rel
    assert target.exists()
    page.click("#gallery_delete")
    deadline = time.monotonic() + 10
    while target.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not target.exists()

"""Inpaint in a real browser: upload an image, paint a stroke with the mouse, Generate; the saved
PNG keeps every pixel outside the painted region and changes some inside it."""
from __future__ import annotations

import time

from tests.browser.helpers import open_tab, set_number


def _gradient(path):
    from PIL import Image

    img = Image.new("RGB", (64, 64))
    img.putdata([(x * 4, y * 4, 128) for y in range(64) for x in range(64)])
    img.save(path)
    return img


def wait_until_shown(canvas, timeout_s: float = 90) -> None:
    """Until the canvas shows the gradient, fitted and still: a stroke painted before the background has
    landed makes a white image (a fixed sleep raced it on a loaded machine). "Still" allows a few changed
    pixels between two shots (a cursor or antialiasing), not the image moving while it is being fitted."""
    import io

    import numpy as np
    from PIL import Image

    deadline, last, seen = time.monotonic() + timeout_s, None, []
    while time.monotonic() < deadline:
        shot = np.asarray(Image.open(io.BytesIO(canvas.screenshot())).convert("RGB")).astype(int)
        blue = float((np.abs(shot[..., 2] - 128) < 12).mean())
        spread = float((shot[..., 0] - shot[..., 1]).std())
        colourful = blue > 0.05 and spread > 20  # blue 128 and a red/green gradient
        moved = None if last is None or last.shape != shot.shape else \
            float((np.abs(shot - last).max(axis=-1) > 8).mean())
        seen.append((round(blue, 3), round(spread, 1), moved))
        if colourful and moved is not None and moved < 0.002:
            return
        last = shot if colourful else None
        time.sleep(0.25)
    raise AssertionError(f"the uploaded image never showed still on the inpaint canvas; last shots "
                         f"(blue share, red-green spread, share of pixels moved): {seen[-5:]}")


def test_paint_mask_and_generate(page, live_server, tmp_path):
    import numpy as np
    from PIL import Image

    source = _gradient(tmp_path / "source.png")
    open_tab(page, "Inpaint")
    # The upload event sends the editor's value to the server, which answers with the image's size: once the
    # width reads 64 the editor holds the background (the default is 512), and only the fitting is left. The file
    # is picked as a person does (click the placeholder, the file dialog); a pick that left the placeholder
    # showing (no upload request was made) is picked again, as a person would when nothing appeared.
    width = page.locator("#inpaint_width input[type=number]").first
    placeholder = page.locator("#inpaint_editor").get_by_text("Upload an image")
    for _attempt in range(4):
        if placeholder.is_visible():  # else the last pick landed and its size event is on its way
            with page.expect_file_chooser() as chooser:
                placeholder.click()
            chooser.value.set_files(str(tmp_path / "source.png"))
        deadline = time.monotonic() + 20
        while width.input_value() != "64" and time.monotonic() < deadline:
            time.sleep(0.2)
        if width.input_value() == "64":
            break
    assert width.input_value() == "64", f"the upload never reached the server in 4 tries (width {width.input_value()})"
    canvas = page.locator("#inpaint_editor .pixi-target canvas").first
    canvas.wait_for(state="visible")

    wait_until_shown(canvas)  # paint only once the image is on the canvas, as a person would
    page.get_by_role("button", name="Brush", exact=True).click()
    # A thin brush (the size picker's slider), so the stroke stays well inside the middle third.
    page.get_by_role("button", name="Brush Size", exact=True).click()
    size = page.locator("#inpaint_editor .size_picker input[type=range]")
    size.evaluate("(el) => { el.value = '4'; el.dispatchEvent(new Event('input', {bubbles: true}));"
                  " el.dispatchEvent(new Event('change', {bubbles: true})); }")
    page.get_by_role("button", name="Brush Size", exact=True).click()
    # The image is drawn centred and square; stroke across its middle row, from 30% to 70% of its width.
    box = canvas.bounding_box()
    side = min(box["width"], box["height"]) * 0.9
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(cx - side * 0.2, cy)
    page.mouse.down()
    for i in range(1, 21):
        page.mouse.move(cx - side * 0.2 + side * 0.4 * i / 20, cy)
    page.mouse.up()

    # The work size is the image's, typed as a person would (the upload's own size event may land late
    # on a busy machine; this test is about the painted mask, not that event).
    set_number(page, "inpaint_width", 64)
    set_number(page, "inpaint_height", 64)
    page.fill("#inpaint_prompt textarea", "a red ball")
    set_number(page, "inpaint_steps", 4)
    set_number(page, "inpaint_mask_blur", 0)
    set_number(page, "inpaint_denoising_strength", 1)
    before = set((live_server.data_dir / "outputs").rglob("*.png"))
    page.click("#inpaint_generate")
    page.wait_for_selector("#inpaint_gallery img", timeout=60_000)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not set((live_server.data_dir / "outputs").rglob("*.png")) - before:
        time.sleep(0.1)
    new = sorted(set((live_server.data_dir / "outputs").rglob("*.png")) - before)
    assert new, "the inpaint result was not saved under outputs/"
    out = np.asarray(Image.open(new[-1]).convert("RGB")).astype(int)
    src = np.asarray(source).astype(int)
    assert out.shape == src.shape
    # Far from the stroke (the top and bottom thirds) nothing moved; along the stroke something did.
    assert np.array_equal(out[:18], src[:18]), "pixels above the painted stroke changed"
    assert np.array_equal(out[46:], src[46:]), "pixels below the painted stroke changed"
    assert np.abs(out[28:36, 24:40] - src[28:36, 24:40]).max() > 8, "nothing changed where the mask was painted"

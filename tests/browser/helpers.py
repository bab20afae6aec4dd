"""Small steps a person takes in the UI, written once for the browser tests."""
from __future__ import annotations

from contextlib import contextmanager


def set_number(page, elem_id: str, value) -> None:
    """Type into a slider's or number's box (Gradio sliders carry a number input beside the range)."""
    box = page.locator(f"#{elem_id} input[type=number]").first
    box.fill(str(value))
    box.press("Enter")


def open_tab(page, title: str) -> None:
    page.get_by_role("tab", name=title, exact=True).click()


def small_run(page, tab: str, steps: int = 4, size: int = 64) -> None:
    set_number(page, f"{tab}_steps", steps)
    set_number(page, f"{tab}_width", size)
    set_number(page, f"{tab}_height", size)


def choose(page, elem_id: str, value: str) -> None:
    """Pick `value` in a Gradio dropdown as a person does: open it, click the option."""
    page.locator(f"#{elem_id} input").click()
    page.get_by_role("option", name=value, exact=True).click()


@contextmanager
def page_of(browser, server):
    """A fresh page on `server` (one the test started itself), once the UI has loaded; closed afterwards."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(30_000)
    try:
        page.goto(server.url + "/")
        page.wait_for_selector("#txt2img_prompt textarea")
        yield page
    finally:
        context.close()

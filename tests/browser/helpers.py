"""Small steps a person takes in the UI, written once for the browser tests."""
from __future__ import annotations


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

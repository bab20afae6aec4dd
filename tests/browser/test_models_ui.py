"""Models tab: every kind listed; the demo Gemma loaded in nf4 from the tab shows where it lives
and its footprint; unloading puts it back on disk; the budget gauge is there."""
from __future__ import annotations

from tests.browser.helpers import choose as _choose, open_tab


def _row_of(page, name: str) -> str:
    """The table's text from `name` on (the kind shown has one model: its row)."""
    text = page.locator("#models_table").inner_text()
    return text[text.index(name):] if name in text else ""


def test_load_the_demo_llm_in_nf4_from_the_models_tab_then_unload_it(page):
    open_tab(page, "Models")
    page.wait_for_function("() => document.querySelector('#models_table').innerText.includes('atelier-demo-sd15')")
    assert "Models on cpu (budget)" in page.locator("#models_memory").inner_text()
    _choose(page, "models_kind", "llm")
    page.wait_for_function("() => document.querySelector('#models_table').innerText.includes('atelier-demo-gemma2')")
    # The server is shared: another test (the Chat tab's) may have loaded it. Unload it from the tab first.
    page.click("#models_unload")
    page.wait_for_function("() => { const t = document.querySelector('#models_table').innerText; "
                           "return t.slice(t.indexOf('atelier-demo-gemma2')).includes('disk'); }")
    assert "demo: random weights" in _row_of(page, "atelier-demo-gemma2")
    _choose(page, "models_quantization", "nf4")
    page.click("#models_load")
    page.wait_for_function("() => document.querySelector('#models_status').innerText.includes('loaded')",
                           timeout=120_000)
    row = _row_of(page, "atelier-demo-gemma2")
    assert "\ncpu\n" in row and "nf4" in row, row
    assert row.count("KiB") == 2, f"size and footprint: {row}"
    page.click("#models_unload")
    page.wait_for_function("() => { const t = document.querySelector('#models_table').innerText; "
                           "return t.slice(t.indexOf('atelier-demo-gemma2')).includes('disk'); }")

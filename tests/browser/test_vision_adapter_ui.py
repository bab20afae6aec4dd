"""Vision tab: a PaliGemma adapter (as the Train tab's paligemma_lora writes one) is offered under its model
in the Adapter dropdown; choosing it, the answer's JSON names it."""
from __future__ import annotations

import json

import pytest

from modules.models.demo_lm import DEMO_PALIGEMMA_NAME
from tests.browser.helpers import choose, open_tab, page_of
from tests.conftest import make_data_dir, start_live_server
from tests.fixtures_models import save_demo_paligemma_adapter

ADAPTER = "shapes-ui"


@pytest.fixture(scope="module")
def adapter_server(tmp_path_factory, demo_checkpoint, demo_language_models):
    data = make_data_dir(tmp_path_factory.mktemp("vision-adapter-ui"), demo_checkpoint)
    save_demo_paligemma_adapter(data / "models" / "VLM" / DEMO_PALIGEMMA_NAME, data / "models" / "LLM-loras" / ADAPTER,
                                DEMO_PALIGEMMA_NAME)
    server = start_live_server(data)
    yield server
    server.stop()


def test_choose_the_adapter_under_its_model_and_run(browser, adapter_server, tmp_path):
    from PIL import Image

    Image.new("RGB", (64, 48), (30, 90, 200)).save(tmp_path / "blue.png")
    with page_of(browser, adapter_server) as page:
        open_tab(page, "Vision")
        page.wait_for_function("() => document.querySelector('#vision_task input').value !== ''")
        choose(page, "vision_task", "Raw prefix (raw)")
        page.wait_for_function("() => document.querySelector('#vision_model input').value.includes('paligemma')")
        choose(page, "vision_adapter", ADAPTER)
        page.locator("#vision_image input[type=file]").set_input_files(str(tmp_path / "blue.png"))
        page.locator("#vision_image img").wait_for(state="visible")
        page.fill("#vision_prompt textarea", "caption en")
        page.click("#vision_run")
        page.wait_for_function("() => document.querySelector('#vision_json').innerText.includes('\"adapter\"')",
                               timeout=120_000)
        shown = json.loads(page.locator("#vision_json .cm-content").inner_text())
        assert shown["adapter"] == ADAPTER and shown["model"] == DEMO_PALIGEMMA_NAME and shown["prompt"] == "caption en"

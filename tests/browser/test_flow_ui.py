"""A Flux checkpoint in a real browser: choosing it in the top bar applies Forge's Flux preset — the Distilled
CFG Scale slider (hidden for the SD demo), Euler, CFG 1, no tiling — and a txt2img made with it says the
distilled value in its infotext; an SD3 checkpoint generates from the same tab without the slider; back on the
SD demo, tiling and CFG 7 return."""
from __future__ import annotations

import pytest

from modules.models.demo import DEMO_NAME
from tests.browser.helpers import choose, page_of, set_number, small_run
from tests.conftest import make_data_dir, start_live_server

FLUX, SD3 = "tiny-flux-dev", "tiny-sd3"


@pytest.fixture(scope="module")
def flow_server(tmp_path_factory, demo_checkpoint):
    from modules.models.demo_flow import save_demo_flow

    data = make_data_dir(tmp_path_factory.mktemp("flow-ui"), demo_checkpoint)
    save_demo_flow(data / "models" / "Stable-diffusion" / FLUX, "flux", seed=1)
    save_demo_flow(data / "models" / "Stable-diffusion" / SD3, "sd3", seed=2)
    server = start_live_server(data)
    yield server
    server.stop()


def test_choosing_flux_shows_distilled_guidance_and_it_reaches_the_image(browser, flow_server):
    with page_of(browser, flow_server) as page:
        slider = page.locator("#txt2img_distilled_cfg_scale")
        assert slider.count() == 0 or not slider.is_visible()  # the SD demo is loaded: no distilled guidance
        choose(page, "setting_sd_model_checkpoint", FLUX)
        slider.wait_for(state="visible", timeout=120_000)
        # Forge's Flux preset: the Euler sampler, CFG 1; no tiling (not there for Flux yet).
        page.wait_for_function("() => document.querySelector('#txt2img_sampling input').value === 'Euler'")
        assert page.locator("#txt2img_cfg_scale input[type=number]").input_value() == "1"
        assert not page.locator("#txt2img_tiling").is_visible()
        page.fill("#txt2img_prompt textarea", "a red fox")
        small_run(page, "txt2img", steps=3, size=64)
        set_number(page, "txt2img_distilled_cfg_scale", 5)
        page.click("#txt2img_generate")
        page.wait_for_function("() => document.querySelector('#txt2img_info textarea').value"
                               ".includes('Distilled CFG Scale: 5')", timeout=180_000)
        # SD3: no distilled guidance, still Euler and no tiling; it generates from the same tab.
        choose(page, "setting_sd_model_checkpoint", SD3)
        slider.wait_for(state="hidden", timeout=120_000)
        assert page.locator("#txt2img_sampling input").input_value() == "Euler"
        page.click("#txt2img_generate")
        page.wait_for_function("() => document.querySelector('#txt2img_info textarea').value"
                               ".includes('Model: tiny-sd3')", timeout=180_000)
        choose(page, "setting_sd_model_checkpoint", DEMO_NAME)
        page.locator("#txt2img_tiling").wait_for(state="visible")
        assert page.locator("#txt2img_cfg_scale input[type=number]").input_value() == "7"

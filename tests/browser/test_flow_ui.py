"""A Flux checkpoint in a real browser: choosing it in the top bar applies Forge's Flux preset — the Distilled
CFG Scale slider (hidden for the SD demo), Euler, CFG 1, no tiling — and a txt2img made with it says the
distilled value in its infotext; an SD3 checkpoint generates from the same tab without the slider; back on the
SD demo, tiling and CFG 7 return. A kohya Flux LoRA in the prompt reaches the image. A transformer-only Flux file
chosen in the top bar shows the VAE / Text Encoder picker and writes Forge's Module 1, 2, … keys; "Send to
img2img" carries them into img2img's picker and its image says them again; a GGUF file in models/unet and an nf4
load from the Models tab generate from the same tab and say so; PNG Info's send fills the picker too. SD3's
all-in-one file, an SD3 GGUF whose default encoders do not fit (the top bar refuses it by name; its modules picked,
the tab generates with it) and the SD3 folder in nf4 from the Models tab generate the same way."""
from __future__ import annotations

import re

import pytest

from modules.models.demo import DEMO_NAME
from tests.browser.helpers import choose, open_tab, page_of, set_number, small_run
from tests.conftest import make_data_dir, start_live_server

FLUX, SD3 = "tiny-flux-dev", "tiny-sd3"
BFL, GGUF = "tiny-flux-bfl.safetensors", "unet/tiny-flux-Q4_K.gguf"
SD3_AIO, SD3_GGUF = "tiny-sd3-file-aio.safetensors", "unet/tiny-sd3-Q8_0.gguf"
SD3_MODULES = ("sd3_vae", "clip_l_sd3", "clip_g_sd3", "t5xxl_sd3")  # its encoders: the Flux-sized defaults do not fit


@pytest.fixture(scope="module")
def flow_server(tmp_path_factory, demo_checkpoint):
    from modules.models.demo_flow import save_demo_flow, save_sd3_files, save_sd3_gguf
    from tests.fixtures_flow_loras import save_server_loras
    from tests.fixtures_models import save_flux_file_set

    data = make_data_dir(tmp_path_factory.mktemp("flow-ui"), demo_checkpoint)
    save_demo_flow(data / "models" / "Stable-diffusion" / FLUX, "flux", seed=1)
    sd3 = save_demo_flow(data / "models" / "Stable-diffusion" / SD3, "sd3", seed=2)
    save_sd3_files(sd3, data / "models", "tiny-sd3-file")  # SAI's all-in-one file (+ a transformer-only one)
    save_sd3_gguf(sd3, data / "models", SD3_GGUF)  # its encoders as clip_l_sd3, clip_g_sd3, t5xxl_sd3, sd3_vae
    save_flux_file_set(data / "models", "tiny-flux-wide", {"Q4_K": GGUF})
    save_server_loras(data / "models")
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
        page.fill("#txt2img_prompt textarea", "a red fox <lora:flux-kohya:1>")
        small_run(page, "txt2img", steps=3, size=64)
        set_number(page, "txt2img_distilled_cfg_scale", 5)
        page.click("#txt2img_generate")
        page.wait_for_function("() => document.querySelector('#txt2img_info textarea').value"
                               ".includes('Distilled CFG Scale: 5')", timeout=180_000)
        assert "flux-kohya: " in _info(page, "txt2img")  # Lora hashes: the LoRA was applied
        page.fill("#txt2img_prompt textarea", "a red fox")
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


def _info(page, tab: str) -> str:
    return page.locator(f"#{tab}_info textarea").input_value()


def _load_nf4_from_the_models_tab(page, name: str) -> None:
    """Load `name` in nf4 from the Models tab, wait until the top bar follows (it names the checkpoint now active),
    and come back to txt2img."""
    open_tab(page, "Models")
    choose(page, "models_name", name)
    choose(page, "models_quantization", "nf4")
    page.click("#models_load")
    page.wait_for_function("() => document.querySelector('#models_status').innerText.includes('loaded')",
                           timeout=120_000)
    page.wait_for_function("() => document.querySelector('#setting_sd_model_checkpoint input').value"
                           f" === {name!r}", timeout=30_000)
    open_tab(page, "txt2img")


def _generate_until(page, tab: str, text: str) -> str:
    page.click(f"#{tab}_generate")
    page.wait_for_function(f"() => document.querySelector('#{tab}_info textarea').value.includes({text!r})",
                           timeout=180_000)
    return _info(page, tab)


def test_flux_files_gguf_and_nf4_from_the_ui_and_send_to_carries_the_modules(browser, flow_server, tmp_path):
    with page_of(browser, flow_server) as page:
        picker = page.locator("#txt2img_forge_modules")
        assert not picker.is_visible()  # the SD demo: no shared modules
        choose(page, "setting_sd_model_checkpoint", BFL)
        picker.wait_for(state="visible", timeout=120_000)
        page.fill("#txt2img_prompt textarea", "a red fox")
        small_run(page, "txt2img", steps=3, size=64)
        info = _generate_until(page, "txt2img", "Module 1: ")
        assert "Model: tiny-flux-bfl" in info, info
        modules = re.findall(r"Module \d+: ([^,\n]+)", info)
        assert len(modules) == 3, info  # the VAE, CLIP-L and T5 the file was loaded with
        # Send to img2img: the picker there holds Forge's Module keys, and its image is made with them.
        page.click("#txt2img_send_img2img")
        for name in modules:
            page.locator("#img2img_forge_modules").get_by_text(name, exact=True).wait_for(timeout=30_000)
        small_run(page, "img2img", steps=4, size=64)
        sent = _generate_until(page, "img2img", "Module 1: ")
        assert re.findall(r"Module \d+: ([^,\n]+)", sent) == modules, sent
        # A GGUF file in models/unet from the top bar.
        open_tab(page, "txt2img")
        choose(page, "setting_sd_model_checkpoint", GGUF)
        page.wait_for_function("() => document.querySelector('#setting_sd_model_checkpoint input').value"
                               f" === {GGUF!r}")
        assert "Quantization: GGUF Q4_K" in _generate_until(page, "txt2img", "Quantization: GGUF")
        # nf4 from the Models tab: the folder checkpoint, then the same tab generates with it.
        _load_nf4_from_the_models_tab(page, FLUX)  # the tab generates with the active checkpoint: the one just loaded
        made = _generate_until(page, "txt2img", "Quantization: nf4")
        assert f"Model: {FLUX}," in made, made
        # PNG Info's send: a Forge Flux image's Module keys fill txt2img's picker.
        from PIL import Image
        from PIL.PngImagePlugin import PngInfo

        text = ("a fox\nSteps: 4, Sampler: Euler, CFG scale: 1, Seed: 5, Size: 64x64, Model: tiny-flux-bfl, "
                "Distilled CFG Scale: 4.5, Module 1: ae, Module 2: clip_l, Module 3: t5xxl")
        meta = PngInfo()
        meta.add_text("parameters", text)
        Image.new("RGB", (64, 64)).save(tmp_path / "forge.png", pnginfo=meta)
        open_tab(page, "PNG Info")
        page.locator("#pnginfo_image input[type=file]").set_input_files(str(tmp_path / "forge.png"))
        page.wait_for_function("() => document.querySelector('#pnginfo_text textarea').value.includes('Module 3')")
        page.click("#pnginfo_send_txt2img")
        for name in ("ae", "clip_l", "t5xxl"):
            picker.get_by_text(name, exact=True).wait_for(timeout=30_000)
        assert page.locator("#txt2img_distilled_cfg_scale input[type=number]").input_value() == "4.5"



def test_sd3_single_file_gguf_with_picked_modules_and_nf4_from_the_ui(browser, flow_server):
    with page_of(browser, flow_server) as page:
        picker = page.locator("#txt2img_forge_modules")
        page.fill("#txt2img_prompt textarea", "a red fox")
        small_run(page, "txt2img", steps=3, size=64)
        # SAI's all-in-one file: its own encoders and VAE.
        choose(page, "setting_sd_model_checkpoint", SD3_AIO)
        page.wait_for_function("() => document.querySelector('#txt2img_sampling input').value === 'Euler'",
                               timeout=120_000)
        info = _generate_until(page, "txt2img", "Model: tiny-sd3-file-aio")
        assert "Module 1" not in info and "Quantization" not in info, info
        # The GGUF file: the top bar's switch refuses the Flux-sized default encoders by name and says what to do.
        choose(page, "setting_sd_model_checkpoint", SD3_GGUF)
        refusal = page.locator(".toast-body").filter(has_text="clip_l.safetensors")
        refusal.wait_for(timeout=120_000)
        assert "VAE / Text Encoder" in refusal.inner_text()
        picker.wait_for(state="visible")  # a file that takes modules: the picker is there
        for name in SD3_MODULES:
            choose(page, "txt2img_forge_modules", name)
        made = _generate_until(page, "txt2img", "Quantization: GGUF")
        assert "Quantization: GGUF Q8_0" in made and "Model: tiny-sd3-Q8_0" in made, made
        assert "Module 1: sd3_vae, Module 2: clip_l_sd3, Module 3: clip_g_sd3, Module 4: t5xxl_sd3" in made, made
        # nf4 from the Models tab: the folder brings its own encoders, so the picker empties and hides.
        _load_nf4_from_the_models_tab(page, SD3)
        picker.wait_for(state="hidden")
        made = _generate_until(page, "txt2img", "Quantization: nf4")
        assert f"Model: {SD3}," in made and "Module 1" not in made, made

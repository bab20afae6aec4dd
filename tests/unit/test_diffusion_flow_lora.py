"""LoRAs on Flux and SD3 checkpoints, in the formats people download: a kohya / sd-scripts Flux LoRA
(`lora_unet_double_blocks_…`, `.alpha`), an XLabs Flux LoRA (`double_blocks.0.processor.qkv_lora1.down.weight`),
a diffusers/PEFT Flux LoRA and a PEFT SD3 LoRA, all for the tiny demo transformers. `<lora:name:w>` applies them like any LoRA; weight 0 and removal give the base image bit for bit;
a Flux LoRA on an SD checkpoint (and an SD LoRA on Flux) is refused by name."""
from __future__ import annotations

import numpy as np
import pytest

from modules.models.demo import DEMO_NAME
from tests.fixtures_flow_loras import (FLUX_PEFT, SD3_PEFT, save_kohya_flux_lora, save_peft_lora,
                                       save_xlabs_flux_lora)

FLUX, SD3 = "tiny-flux-dev", "tiny-sd3"


@pytest.fixture(scope="module")
def studio(tmp_path_factory, demo_checkpoint):
    from modules.models.demo_flow import save_demo_flow
    from modules.studio import Studio, StudioOptions
    from tests.conftest import make_data_dir
    from tests.fixtures_models import save_demo_lora

    data = make_data_dir(tmp_path_factory.mktemp("flow-lora"), demo_checkpoint)
    save_demo_flow(data / "models" / "Stable-diffusion" / FLUX, "flux", seed=1)
    save_demo_flow(data / "models" / "Stable-diffusion" / SD3, "sd3", seed=2)
    loras = data / "models" / "Lora"
    loras.mkdir(parents=True, exist_ok=True)
    save_kohya_flux_lora(loras / "flux-kohya.safetensors", seed=3)
    save_peft_lora(loras / "flux-peft.safetensors", FLUX_PEFT, seed=4)
    save_xlabs_flux_lora(loras / "flux-xlabs.safetensors", seed=7)
    save_peft_lora(loras / "sd3-peft.safetensors", SD3_PEFT, seed=5)
    save_demo_lora(loras / "sd-style.safetensors", seed=6)
    s = Studio(StudioOptions(data_dir=data, device="cpu", build_demo=False))
    s.load()
    assert s.load_error is None, s.load_error
    yield s
    s.shutdown()


def _job(studio, checkpoint, prompt="a red fox"):
    from modules.diffusion.params import Txt2ImgRequest

    req = Txt2ImgRequest(prompt=prompt, steps=3, width=64, height=64, seed=5, sampler_name="Euler", cfg_scale=1,
                         save_images=False, override_settings={"sd_model_checkpoint": checkpoint})
    return studio.jobs.run("txt2img", req, timeout=300)


def _image(studio, checkpoint, prompt="a red fox"):
    job = _job(studio, checkpoint, prompt)
    job.raise_for_error()
    return np.asarray(job.result.images[0].image.convert("RGB")).astype(int), job.result.images[0].infotext


def test_flux_loras_are_told_from_their_keys(studio):
    assert studio.registry.get("lora", "flux-kohya").arch == "flux"
    assert studio.registry.get("lora", "flux-peft").arch == "flux"
    assert studio.registry.get("lora", "flux-xlabs").arch == "flux"


@pytest.mark.parametrize("checkpoint,lora", [(FLUX, "flux-kohya"), (FLUX, "flux-xlabs"), (FLUX, "flux-peft"),
                                             (SD3, "sd3-peft")])
def test_a_lora_changes_the_image_and_weight_zero_and_removal_are_bit_exact(studio, checkpoint, lora):
    base, _ = _image(studio, checkpoint)
    with_lora, info = _image(studio, checkpoint, f"a red fox <lora:{lora}:1>")
    assert np.abs(with_lora - base).mean() > 1, "the LoRA did not change the image"
    assert f"{lora}: " in info  # Lora hashes
    zero, _ = _image(studio, checkpoint, f"a red fox <lora:{lora}:0>")
    assert np.array_equal(zero, base)
    after, _ = _image(studio, checkpoint)
    assert np.array_equal(after, base)


@pytest.mark.parametrize("lora", ["flux-kohya", "flux-xlabs"])
def test_a_kohya_or_xlabs_flux_lora_matches_plain_diffusers_loading_it(studio, lora):
    import torch
    from diffusers import FluxPipeline

    ours, _ = _image(studio, FLUX, f"a red fox <lora:{lora}:0.8>")
    pipe = FluxPipeline.from_pretrained(str(studio.registry.get("checkpoint", FLUX).path), local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    pipe.load_lora_weights(str(studio.registry.get("lora", lora).path), adapter_name="style")
    pipe.set_adapters(["style"], adapter_weights=[0.8])
    plain = pipe("a red fox", num_inference_steps=3, height=64, width=64, guidance_scale=3.5,
                 generator=torch.Generator().manual_seed(5)).images[0]
    diff = np.abs(ours - np.asarray(plain.convert("RGB")).astype(int))
    assert diff.max() <= 2, diff.max()  # ours fuses the delta into the weights; diffusers adds it per step


@pytest.mark.parametrize("checkpoint,lora", [(DEMO_NAME, "flux-kohya"), (FLUX, "sd-style")])
def test_a_lora_of_another_architecture_is_refused_by_name(studio, checkpoint, lora):
    job = _job(studio, checkpoint, f"a red fox <lora:{lora}:1>")
    assert job.state.value == "failed" and job.error_field == "prompt" and 400 <= job.error_status < 500, job.error
    assert lora in job.error, job.error

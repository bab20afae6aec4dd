"""Flux.1 and SD3 checkpoints (tiny random-weight diffusers folders from the real classes, modules/models/demo_flow.py)
load through the model manager like any checkpoint, and txt2img through the studio's job equals the plain
diffusers pipeline on the same folder and seed; what they cannot do yet is refused by its field."""
from __future__ import annotations

import numpy as np
import pytest

from modules.models.demo import DEMO_NAME

FLUX, SD3 = "tiny-flux-dev", "tiny-sd3"


@pytest.fixture(scope="module")
def studio(tmp_path_factory, demo_checkpoint):
    from modules.models.demo_flow import save_demo_flow
    from modules.studio import Studio, StudioOptions
    from tests.conftest import make_data_dir

    data = make_data_dir(tmp_path_factory.mktemp("flow-data"), demo_checkpoint)
    save_demo_flow(data / "models" / "Stable-diffusion" / FLUX, "flux", seed=1)
    save_demo_flow(data / "models" / "Stable-diffusion" / SD3, "sd3", seed=2)
    s = Studio(StudioOptions(data_dir=data, device="cpu", build_demo=False))
    s.load()
    assert s.load_error is None, s.load_error
    yield s
    s.shutdown()


def _job(studio, kind="txt2img", **fields):
    from modules.diffusion.params import Img2ImgRequest, Txt2ImgRequest

    body = {"prompt": "a red fox", "steps": 3, "width": 64, "height": 64, "seed": 5, "sampler_name": "Euler",
            "save_images": False, **fields}
    request = (Txt2ImgRequest if kind == "txt2img" else Img2ImgRequest)(**body)
    return studio.jobs.run(kind, request, timeout=300)


def _image(studio, checkpoint, **fields):
    job = _job(studio, override_settings={"sd_model_checkpoint": checkpoint}, **fields)
    job.raise_for_error()
    generated = job.result.images[0]
    return np.asarray(generated.image.convert("RGB")), generated.infotext


def _plain(studio, checkpoint, prompt="a red fox", **kwargs):
    import torch
    from diffusers import DiffusionPipeline

    folder = studio.registry.get("checkpoint", checkpoint).path
    pipe = DiffusionPipeline.from_pretrained(str(folder), local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    out = pipe(prompt, num_inference_steps=3, height=64, width=64, generator=torch.Generator().manual_seed(5), **kwargs)
    return np.asarray(out.images[0].convert("RGB"))


def test_flux_and_sd3_folders_are_listed_with_their_architecture(studio):
    assert studio.registry.get("checkpoint", FLUX).arch == "flux"
    assert studio.registry.get("checkpoint", SD3).arch == "sd3"


def test_flux_txt2img_equals_plain_diffusers_with_distilled_guidance_and_true_cfg(studio):
    ours, info = _image(studio, FLUX, cfg_scale=1, distilled_cfg_scale=2.5)
    assert np.array_equal(ours, _plain(studio, FLUX, guidance_scale=2.5))
    assert "Distilled CFG Scale: 2.5" in info and "Sampler: Euler" in info
    # cfg_scale above 1 is true CFG with the negative prompt (Forge's mapping): 2 passes a step, another image.
    cfg, _ = _image(studio, FLUX, cfg_scale=3, negative_prompt="blurry")
    assert np.array_equal(cfg, _plain(studio, FLUX, guidance_scale=3.5, true_cfg_scale=3, negative_prompt="blurry"))
    assert not np.array_equal(cfg, ours)


def test_sd3_txt2img_equals_plain_diffusers(studio):
    ours, info = _image(studio, SD3, cfg_scale=4, negative_prompt="dark")
    assert np.array_equal(ours, _plain(studio, SD3, guidance_scale=4, negative_prompt="dark"))
    assert "Distilled CFG Scale" not in info


def test_emphasis_markup_is_taken_out_of_the_text_for_t5(studio):
    plain, _ = _image(studio, SD3, cfg_scale=1)
    marked, _ = _image(studio, SD3, cfg_scale=1, prompt="(a red:1.3) [fox]")
    assert np.array_equal(plain, marked)


def test_the_infotext_round_trips_distilled_guidance(studio):
    from modules.diffusion.infotext import parse, to_request_fields

    _, info = _image(studio, FLUX, cfg_scale=1, distilled_cfg_scale=4)
    assert to_request_fields(parse(info))["distilled_cfg_scale"] == 4.0  # PNG Info → send to txt2img


@pytest.mark.parametrize("fields,field", [
    ({"sampler_name": "Euler a"}, "sampler_name"),
    ({"scheduler": "SGM Uniform"}, "scheduler"),
    ({"enable_hr": True}, "enable_hr"),
    ({"width": 72}, "width"),
    ({"tiling": True}, "tiling"),
    ({"prompt": "a fox <lora:style:1>"}, "prompt"),
    ({"prompt": "a [fox:cat:2]"}, "prompt"),
])
def test_what_flux_cannot_do_yet_is_refused_by_field(studio, fields, field):
    job = _job(studio, override_settings={"sd_model_checkpoint": FLUX}, **fields)
    assert job.state.value == "failed" and 400 <= job.error_status < 500, job.error
    assert job.error_field == field, (job.error_field, job.error)


def test_img2img_on_flux_and_distilled_guidance_elsewhere_are_refused(studio):
    from PIL import Image

    job = _job(studio, "img2img", init_images=[Image.new("RGB", (64, 64), "red")], override_settings={"sd_model_checkpoint": FLUX})
    assert job.state.value == "failed" and job.error_field == "init_images", job.error
    for checkpoint in (SD3, DEMO_NAME):
        job = _job(studio, distilled_cfg_scale=2, override_settings={"sd_model_checkpoint": checkpoint})
        assert job.state.value == "failed" and job.error_field == "distilled_cfg_scale", (checkpoint, job.error)

"""Forge's infotext for a transformer-only Flux file with its encoders and VAE from the shared folders:
`Module 1: ae, Module 2: clip_l, Module 3: t5xxl` (the files' stems, VAE first, as Forge writes its
forge_additional_modules), and back: PNG Info's fields carry them as override_settings' forge_additional_modules,
which picks the same files (or refuses by name a module that is not there), as Forge's API clients send it."""
from __future__ import annotations

import numpy as np
import pytest

FOLDER, BFL = "tiny-flux-wide", "tiny-flux-bfl.safetensors"
OTHER_T5 = "t5xxl_fp8_e4m3fn"


@pytest.fixture(scope="module")
def studio(tmp_path_factory, demo_checkpoint):
    from modules.studio import Studio, StudioOptions
    from tests.conftest import make_data_dir
    from tests.fixtures_models import save_flux_file_set, save_fp8_t5_file

    data = make_data_dir(tmp_path_factory.mktemp("flow-modules"), demo_checkpoint)
    models = data / "models"
    save_flux_file_set(models, FOLDER, {})
    save_fp8_t5_file(models / "text_encoder" / "t5xxl", models / "text_encoder" / f"{OTHER_T5}.safetensors")
    s = Studio(StudioOptions(data_dir=data, device="cpu", build_demo=False))
    s.load()
    assert s.load_error is None, s.load_error
    yield s
    s.shutdown()


def _job(studio, **fields):
    from modules.diffusion.params import Txt2ImgRequest

    body = {"prompt": "a red fox", "steps": 3, "width": 64, "height": 64, "seed": 5, "sampler_name": "Euler",
            "cfg_scale": 1, "save_images": False, **fields}
    body["override_settings"] = {"sd_model_checkpoint": BFL, **body.get("override_settings", {})}
    return studio.jobs.run("txt2img", Txt2ImgRequest(**body), timeout=300)


def _image(studio, **fields):
    job = _job(studio, **fields)
    job.raise_for_error()
    made = job.result.images[0]
    return np.asarray(made.image.convert("RGB")).astype(int), made.infotext


def test_the_infotext_names_the_shared_modules_as_forge_and_png_info_picks_them_again(studio):
    from modules.diffusion.infotext import parse, to_request_fields

    default, info = _image(studio)
    assert "Module 1: ae, Module 2: clip_l, Module 3: t5xxl," in info, info
    # Forge's API clients send paths; the infotext then names the chosen T5 by its stem
    chosen = ["/webui/models/VAE/ae.safetensors", "clip_l.safetensors", f"C:\\webui\\models\\text_encoder\\{OTHER_T5}.safetensors"]
    other, other_info = _image(studio, override_settings={"forge_additional_modules": chosen})
    assert f"Module 3: {OTHER_T5}" in other_info and not np.array_equal(other, default), other_info
    fields = to_request_fields(parse(other_info))  # PNG Info → send to txt2img / the A1111 API
    assert fields["override_settings"]["forge_additional_modules"] == ["ae", "clip_l", OTHER_T5]
    again, again_info = _image(studio, **{k: v for k, v in fields.items() if k != "prompt"})
    assert np.array_equal(again, other) and f"Module 3: {OTHER_T5}" in again_info
    back, _ = _image(studio)  # no modules asked: the default choice again
    assert np.array_equal(back, default)


def test_a_missing_module_is_refused_by_name(studio):
    job = _job(studio, override_settings={"forge_additional_modules": ["ae", "t5xxl_gone"]})
    assert job.state.value == "failed" and 400 <= job.error_status < 500, job.error
    assert job.error_field == "forge_additional_modules" and "t5xxl_gone" in job.error, job.error


@pytest.mark.parametrize("value,checkpoint", [(["clip_l"], FOLDER), ("clip_l", BFL), ([3], BFL)])
def test_modules_for_a_folder_or_not_a_list_of_names_are_refused_by_field(studio, value, checkpoint):
    job = _job(studio, override_settings={"sd_model_checkpoint": checkpoint, "forge_additional_modules": value})
    assert job.state.value == "failed" and 400 <= job.error_status < 500, job.error
    assert job.error_field == "forge_additional_modules", (job.error_field, job.error)

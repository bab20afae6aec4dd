"""SD3 single files (modules/models/flow_files.py): an all-in-one file in SAI's layout
(`model.diffusion_model.joint_blocks…`) that carries its text encoders and VAE (as SAI's
sd3_medium_incl_clips_t5xxlfp16) loads with nothing else but models/configs/sd3; a transformer-only one (diffusers'
names) names the CLIP-L, CLIP-G, T5 and VAE it needs and where they go, then loads from models/text_encoder and
models/VAE. Both generate bit for bit the image of the diffusers folder they were made from."""
from __future__ import annotations

import numpy as np
import pytest

FOLDER = "tiny-sd3"


@pytest.fixture(scope="module")
def studio(tmp_path_factory, demo_checkpoint):
    from modules.models.demo_flow import save_demo_flow, save_sd3_files
    from modules.studio import Studio, StudioOptions
    from tests.conftest import make_data_dir

    data = make_data_dir(tmp_path_factory.mktemp("sd3-files"), demo_checkpoint)
    folder = save_demo_flow(data / "models" / "Stable-diffusion" / FOLDER, "sd3", seed=4)
    save_sd3_files(folder, data / "models", "tiny-sd3-file")
    s = Studio(StudioOptions(data_dir=data, device="cpu", build_demo=False))
    s.load()
    assert s.load_error is None, s.load_error
    s.sd3_folder = folder
    yield s
    s.shutdown()


def _image(studio, checkpoint):
    from modules.diffusion.params import Txt2ImgRequest

    body = {"prompt": "a red fox", "negative_prompt": "dark", "steps": 3, "width": 64, "height": 64, "seed": 5,
            "sampler_name": "Euler", "cfg_scale": 4, "save_images": False,
            "override_settings": {"sd_model_checkpoint": checkpoint}}
    job = studio.jobs.run("txt2img", Txt2ImgRequest(**body), timeout=300)
    job.raise_for_error()
    return np.asarray(job.result.images[0].image.convert("RGB"))


def test_sd3_files_are_detected_and_load_all_in_one_then_from_the_shared_folders(studio):
    from modules.models.demo_flow import save_shared_parts

    for name in ("tiny-sd3-file-aio.safetensors", "tiny-sd3-file.safetensors"):
        assert studio.registry.get("checkpoint", name).arch == "sd3", name
    reference = _image(studio, FOLDER)
    assert np.array_equal(_image(studio, "tiny-sd3-file-aio.safetensors"), reference)
    job = studio.jobs.run("load_checkpoint", {"name": "tiny-sd3-file.safetensors"}, timeout=120)
    assert job.state.value == "failed" and job.error_field == "sd_model_checkpoint", job.error
    for needed in ("CLIP-L", "CLIP-G", "T5", "models/text_encoder", "VAE", "models/VAE"):
        assert needed in job.error, (needed, job.error)
    save_shared_parts(studio.sd3_folder, studio.paths.models)
    assert np.array_equal(_image(studio, "tiny-sd3-file.safetensors"), reference)


def test_the_aio_file_is_in_sais_layout_and_its_converter_is_diffusers_inverse(studio):
    """The key table reads SAI's MMDiT names; sd3_layout.to_sai (which wrote them) undone by diffusers' own
    converter gives the folder's transformer back tensor for tensor."""
    import torch
    from diffusers.loaders.single_file_utils import convert_sd3_transformer_checkpoint_to_diffusers
    from safetensors.torch import load_file

    from modules.models import detect, sd3_layout

    aio = studio.registry.get("checkpoint", "tiny-sd3-file-aio.safetensors").path
    keys = list(load_file(str(aio)))
    assert any(k.startswith("model.diffusion_model.joint_blocks.1.context_block.") for k in keys)
    kind = detect.flow_kind_from_keys(keys)
    assert (kind.arch, kind.variant, kind.layout) == ("sd3", "sd3", "bfl")
    folder = load_file(str(studio.sd3_folder / "transformer" / "diffusion_pytorch_model.safetensors"))
    back = convert_sd3_transformer_checkpoint_to_diffusers(sd3_layout.to_sai(folder))
    assert set(back) == set(folder) and all(torch.equal(back[k], folder[k]) for k in folder)

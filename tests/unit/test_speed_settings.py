"""The speed settings act when on, keep the image within a stated tolerance of the setting off (and
exactly the old image once off again), and one that this machine cannot honour is refused by name."""
from __future__ import annotations

import numpy as np
import pytest

from modules import cpu_features
from modules.errors import InvalidRequest

# Max abs difference, in 0–255 pixel steps, allowed between a speed setting on and off (same seed).
TOLERANCE = {"channels_last": 2, "attention": 2, "cpu_bf16": 24}


@pytest.fixture(scope="module")
def studio(tmp_path_factory, demo_checkpoint):
    from modules.studio import Studio, StudioOptions
    from tests.conftest import make_data_dir

    s = Studio(StudioOptions(data_dir=make_data_dir(tmp_path_factory.mktemp("speed"), demo_checkpoint),
                             device="cpu", build_demo=False))
    s.load()
    assert s.load_error is None, s.load_error
    yield s
    s.shutdown()


def _image(studio) -> np.ndarray:
    from modules.diffusion.params import Txt2ImgRequest

    req = Txt2ImgRequest(prompt="a red cat", steps=3, width=64, height=64, seed=9, save_images=False)
    job = studio.jobs.run("txt2img", req, timeout=300)
    job.raise_for_error()
    return np.asarray(job.result.images[0].image).astype(np.int16)


def _diff(a, b) -> int:
    return int(np.abs(a - b).max())


def test_channels_last_puts_the_unet_and_vae_weights_in_that_format(studio):
    from modules.models.speed import is_channels_last

    base = _image(studio)
    studio.settings.update({"channels_last": True}, save=False)
    try:
        on = _image(studio)
        pipe = studio.models.active.pipe
        assert is_channels_last(pipe.unet) and is_channels_last(pipe.vae)
        assert _diff(on, base) <= TOLERANCE["channels_last"]
    finally:
        studio.settings.update({"channels_last": False}, save=False)
    assert np.array_equal(_image(studio), base)
    assert not is_channels_last(studio.models.active.pipe.unet)


def test_classic_attention_swaps_the_processors_and_sdpa_is_the_default(studio):
    from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

    base = _image(studio)
    pipe = studio.models.active.pipe
    assert {type(p) for p in pipe.unet.attn_processors.values()} == {AttnProcessor2_0}
    studio.settings.update({"attention": "classic"}, save=False)
    try:
        on = _image(studio)
        assert {type(p) for p in pipe.unet.attn_processors.values()} == {AttnProcessor}
        assert {type(p) for p in pipe.vae.attn_processors.values()} == {AttnProcessor}
        assert _diff(on, base) <= TOLERANCE["attention"]
    finally:
        studio.settings.update({"attention": "sdpa"}, save=False)
    assert np.array_equal(_image(studio), base)
    with pytest.raises(InvalidRequest) as refused:
        studio.settings.update({"attention": "xformers"}, save=False)
    assert refused.value.field == "attention"


def test_cpu_bf16_acts_where_the_cpu_has_native_bf16_and_is_refused_elsewhere(studio):
    if not cpu_features.bf16_flags():
        with pytest.raises(InvalidRequest) as refused:
            studio.settings.update({"cpu_bf16": True}, save=False)
        assert refused.value.field == "cpu_bf16" and "not available" in refused.value.message
        assert studio.settings.get().cpu_bf16 is False
        return
    base = _image(studio)
    studio.settings.update({"cpu_bf16": True}, save=False)
    try:
        on = _image(studio)
    finally:
        studio.settings.update({"cpu_bf16": False}, save=False)
    assert not np.array_equal(on, base), "bf16 autocast did not change a single pixel: it did not act"
    assert _diff(on, base) <= TOLERANCE["cpu_bf16"]
    assert np.array_equal(_image(studio), base)


def test_cpu_threads_sets_torchs_threads_in_the_job_and_zero_means_physical_cores(studio):
    import torch

    seen: list[int] = []
    studio.hooks.add("after_generate", lambda result: seen.append(torch.get_num_threads()), owner="test-threads")
    try:
        studio.settings.update({"cpu_threads": 1}, save=False)
        _image(studio)
        studio.settings.update({"cpu_threads": 0}, save=False)
        _image(studio)
    finally:
        studio.settings.update({"cpu_threads": 0}, save=False)
        studio.hooks.remove_owner("test-threads")
    assert seen == [1, cpu_features.physical_cores()], "the job's torch threads follow the setting"

"""Checkpoints: hot swap with a RAM cache, per-request override, single files, and bad files that
never take the studio down."""
from __future__ import annotations

import numpy as np
import pytest

from modules.errors import AtelierError, ModelLoadError
from tests.support import assert_payloads_fire, save_malicious_pickle

SECOND = "second-sd15"


@pytest.fixture(scope="module")
def marker(tmp_path_factory):
    return tmp_path_factory.mktemp("marker") / "PWNED"


@pytest.fixture(scope="module")
def studio(tmp_path_factory, demo_checkpoint, marker):
    import torch

    from modules.models.demo import save_demo_checkpoint
    from tests.fixtures_models import save_demo_single_file
    from modules.models.singlefile import copy_configs, ldm_state_dict
    from modules.studio import Studio, StudioOptions
    from tests.conftest import make_data_dir

    data = make_data_dir(tmp_path_factory.mktemp("ckpt-data"), demo_checkpoint)
    ckpts = data / "models" / "Stable-diffusion"
    save_demo_checkpoint(ckpts / SECOND, seed=1)
    save_demo_single_file(ckpts / "single" / "demo-single.safetensors", seed=0)  # in a sub-folder: recursive scan
    save_demo_single_file(ckpts / "no-config.safetensors", seed=0, sidecar=False)
    from modules.models.demo import build_sd15_pipeline

    torch.save({"state_dict": ldm_state_dict(build_sd15_pipeline(0))}, ckpts / "weights-only.ckpt")
    copy_configs(demo_checkpoint, ckpts / "weights-only.config")
    weights = (demo_checkpoint / "unet" / "diffusion_pytorch_model.safetensors").read_bytes()
    (ckpts / "truncated.safetensors").write_bytes(weights[: len(weights) // 2])
    (ckpts / "noise.safetensors").write_bytes(b"\x00\x01not a safetensors file" * 10)
    assert_payloads_fire({save_malicious_pickle(ckpts / "payload.ckpt", marker): marker})  # not a dud
    from tests.fixtures_models import save_demo_lora

    save_demo_lora(ckpts / "a-lora-in-the-wrong-folder.safetensors")
    s = Studio(StudioOptions(data_dir=data, device="cpu", build_demo=False))
    s.settings.update({"sd_model_checkpoint": "atelier-demo-sd15"}, save=False)
    s.load()
    assert s.load_error is None, s.load_error
    yield s
    s.shutdown()


def _txt2img(studio, seed=5, **extra):
    from modules.diffusion.params import Txt2ImgRequest

    req = Txt2ImgRequest(prompt="a red cat", steps=3, width=64, height=64, seed=seed, save_images=False, **extra)
    job = studio.jobs.run("txt2img", req, timeout=300)
    job.raise_for_error()
    return np.asarray(job.result.images[0].image), job.result.images[0].infotext


def _switch(studio, name):
    job = studio.jobs.run("load_checkpoint", name, timeout=300)
    job.raise_for_error()
    return job.result


def test_two_checkpoints_swap_back_and_forth_and_the_right_one_answers(studio):
    first, info1 = _txt2img(studio)
    assert "Model: atelier-demo-sd15" in info1
    _switch(studio, SECOND)
    pipe_second = studio.models.active.pipe
    second, info2 = _txt2img(studio)
    assert f"Model: {SECOND}" in info2
    assert not np.array_equal(first, second), "the second checkpoint answered with the first's weights"
    result = _switch(studio, "atelier-demo-sd15 [" + studio.registry.get("checkpoint", "atelier-demo-sd15").short_hash + "]")
    assert result["name"] == "atelier-demo-sd15"
    again, _ = _txt2img(studio)
    assert np.array_equal(first, again)
    _switch(studio, SECOND)
    assert studio.models.active.pipe is pipe_second, "switching back to a cached checkpoint must not read the disk"
    second_again, _ = _txt2img(studio)
    assert np.array_equal(second, second_again)
    _switch(studio, "atelier-demo-sd15")


def test_ram_cache_limit_of_one_reads_the_disk_again(studio):
    studio.settings.update({"sd_checkpoints_limit": 1}, save=False)
    try:
        _switch(studio, SECOND)
        pipe = studio.models.active.pipe
        _switch(studio, "atelier-demo-sd15")
        _switch(studio, SECOND)
        assert studio.models.active.pipe is not pipe
        assert len([m for m in studio.models.resident() if m.kind == "checkpoint"]) == 1, \
            "with a limit of 1 nothing stays cached besides the active one"
    finally:
        studio.settings.update({"sd_checkpoints_limit": 2}, save=False)
        _switch(studio, "atelier-demo-sd15")


def test_per_request_override_is_for_that_request_only(studio):
    base, _ = _txt2img(studio, seed=11)
    other, info = _txt2img(studio, seed=11, override_settings={"sd_model_checkpoint": SECOND})
    assert f"Model: {SECOND}" in info and not np.array_equal(base, other)
    back, info = _txt2img(studio, seed=11)
    assert "Model: atelier-demo-sd15" in info and np.array_equal(base, back)


@pytest.mark.parametrize("name", ["single/demo-single.safetensors", "weights-only.ckpt"])
def test_single_file_checkpoint_equals_the_diffusers_folder(studio, name):
    base, _ = _txt2img(studio, seed=4)
    entry = studio.registry.get("checkpoint", name)
    assert entry.arch == "sd1" or entry.format == "pickle"
    _switch(studio, name)
    assert studio.models.active.arch == "sd1"
    single, _ = _txt2img(studio, seed=4)
    _switch(studio, "atelier-demo-sd15")
    np.testing.assert_allclose(single, base, atol=1)  # same weights, same seed: the same picture


def test_single_file_without_configs_says_what_is_missing_and_how_to_get_it(studio):
    with pytest.raises(ModelLoadError) as info:
        studio.models.load("no-config.safetensors")
    msg = info.value.message
    assert "no-config.safetensors" in msg and "stable-diffusion-v1-5/stable-diffusion-v1-5" in msg
    assert 'huggingface-cli download stable-diffusion-v1-5/stable-diffusion-v1-5 --include "*.json" "*.txt"' in msg
    assert "no-config.config" in msg
    assert studio.models.active.entry.name == "atelier-demo-sd15", "a failed load leaves the current one serving"


def test_pickle_payload_is_refused_and_never_runs(studio, marker):
    with pytest.raises(ModelLoadError) as info:
        studio.models.load("payload.ckpt")
    assert "payload.ckpt" in info.value.message and "refused" in info.value.message
    assert not marker.exists(), "the pickle's code ran"
    job = studio.jobs.run("txt2img", _request(override_settings={"sd_model_checkpoint": "payload.ckpt"}), timeout=120)
    assert job.state.value == "failed" and "payload.ckpt" in job.error and job.error_status < 500
    assert not marker.exists()
    _txt2img(studio)  # still serving


@pytest.mark.parametrize("name,words", [
    ("truncated.safetensors", "truncated.safetensors"),
    ("noise.safetensors", "noise.safetensors"),
    ("a-lora-in-the-wrong-folder.safetensors", "not a checkpoint"),
])
def test_corrupt_or_foreign_files_give_a_clear_error_and_the_studio_keeps_serving(studio, name, words):
    entry = studio.registry.get("checkpoint", name)
    assert entry.problem, "the scan already knows this file is unusable"
    job = studio.jobs.run("txt2img", _request(override_settings={"sd_model_checkpoint": name}), timeout=120)
    assert job.state.value == "failed" and words in job.error, job.error
    assert 400 <= job.error_status < 500
    image, info = _txt2img(studio)
    assert "Model: atelier-demo-sd15" in info


def _request(**extra):
    from modules.diffusion.params import Txt2ImgRequest

    return Txt2ImgRequest(prompt="x", steps=2, width=64, height=64, seed=1, save_images=False, **extra)


def test_describe_and_unload(studio):
    rows = {(r["kind"], r["name"]): r for r in studio.models.describe()}
    demo = rows[("checkpoint", "atelier-demo-sd15")]
    assert demo["location"] == "cpu" and demo["active"] and demo["footprint_bytes"] > 0
    assert demo["arch"] == "sd1" and len(demo["short_hash"]) == 10
    assert rows[("checkpoint", "noise.safetensors")]["location"] == "disk"
    _switch(studio, SECOND)
    assert {r["name"]: r["location"] for r in studio.models.describe()}["atelier-demo-sd15"] == "cpu"  # cached
    studio.models.unload("atelier-demo-sd15")
    assert {r["name"]: r["location"] for r in studio.models.describe()}["atelier-demo-sd15"] == "disk"
    _switch(studio, "atelier-demo-sd15")


def test_retry_on_oom_retries_once_then_says_what_to_change(studio):
    import torch

    calls = []

    def once():
        calls.append(1)
        if len(calls) == 1:
            raise torch.OutOfMemoryError("CUDA out of memory")
        return "ok"

    ckpt = studio.models.active
    assert studio.models.retry_on_oom(ckpt, once) == "ok" and len(calls) == 2

    def always():
        raise torch.OutOfMemoryError("CUDA out of memory")

    with pytest.raises(AtelierError) as info:
        studio.models.retry_on_oom(ckpt, always)
    assert "smaller" in info.value.message and info.value.status < 500
    assert ckpt.pipe.vae.use_tiling and ckpt.pipe.vae.use_slicing, "the retry ran with the lightest VAE"
    studio.models.load()  # the next job starts with the configured tiling again
    assert not ckpt.pipe.vae.use_slicing and ckpt.pipe.vae.tile_sample_min_size == 1024


def test_vae_tiles_only_above_the_threshold(studio):
    vae = studio.models.active.pipe.vae
    studio.settings.update({"vae_tiling_pixels": 0}, save=False)
    try:
        studio.models.load()
        assert not vae.use_tiling
    finally:
        studio.settings.update({"vae_tiling_pixels": 1024 * 1024}, save=False)
    studio.models.load()
    factor = 2 ** (len(vae.config.block_out_channels) - 1)
    assert vae.use_tiling and vae.tile_sample_min_size == 1024 and vae.tile_latent_min_size == 1024 // factor


def test_sdxl_folder_loads_as_sdxl_and_swaps_with_sd1(studio):
    from tests.fixtures_models import save_demo_sdxl_checkpoint

    folder = studio.paths.model_dir("checkpoint") / "tiny-xl"
    save_demo_sdxl_checkpoint(folder)
    studio.registry.refresh("checkpoint")
    assert studio.registry.get("checkpoint", "tiny-xl").arch == "sdxl"
    image, info = _txt2img(studio, override_settings={"sd_model_checkpoint": "tiny-xl"})
    assert "Model: tiny-xl" in info and image.shape == (64, 64, 3)
    with studio.models.checkpoint("tiny-xl") as ckpt:
        assert ckpt.arch == "sdxl" and type(ckpt.pipeline("img2img")).__name__ == "StableDiffusionXLImg2ImgPipeline"
        assert ckpt.pipeline("img2img").unet is ckpt.pipe.unet, "img2img shares the txt2img weights"
    _, info = _txt2img(studio)
    assert "Model: atelier-demo-sd15" in info


def test_a_stale_checkpoint_in_the_settings_falls_back_at_start(tmp_path, demo_checkpoint):
    import json

    from modules.studio import Studio, StudioOptions
    from tests.conftest import make_data_dir

    data = make_data_dir(tmp_path / "stale", demo_checkpoint)
    (data / "config.json").write_text(json.dumps({"sd_model_checkpoint": "deleted-last-week.safetensors"}))
    s = Studio(StudioOptions(data_dir=data, device="cpu", build_demo=False))
    s.load()
    try:
        assert s.load_error is None and s.models.active.entry.name == "atelier-demo-sd15"
        assert json.loads((data / "config.json").read_text())["sd_model_checkpoint"] == "deleted-last-week.safetensors"
    finally:
        s.shutdown()

"""Same-architecture checkpoint switches through the kept module skeleton (modules/models/skeleton.py):
the image is the cold load's bit for bit, nothing of the previous checkpoint stays, and anything
the skeleton cannot reproduce (a missing key, other configs, another architecture) loads the ordinary way."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from tests.conftest import make_data_dir

SECOND, MISSING, OTHER_SCHEDULER, OTHER_ARCH = "second-sd15", "missing-key-sd15", "other-scheduler-sd15", "wide-sd15"
DEMO = "atelier-demo-sd15"
DROPPED = "conv_out.weight"  # the key left out of MISSING's UNet file
FILE_A, FILE_B, FILE_WIDE = "file-a.safetensors", "file-b.safetensors", "file-wide.safetensors"  # A1111 single files


def _studio(data, first: str = DEMO):
    """A studio (its own model manager and skeletons) whose first load is `first`."""
    from modules.studio import Studio, StudioOptions

    s = Studio(StudioOptions(data_dir=data, device="cpu", build_demo=False))
    s.settings.update({"sd_model_checkpoint": first, "sd_checkpoints_limit": 1}, save=False)
    s.load()
    assert s.load_error is None, s.load_error
    return s


@pytest.fixture(scope="module")
def data(tmp_path_factory, demo_checkpoint, second_checkpoint):
    from safetensors.torch import load_file, save_file

    from modules.models.demo import save_demo_checkpoint

    root = make_data_dir(tmp_path_factory.mktemp("skeleton-data"), demo_checkpoint)
    ckpts = root / "models" / "Stable-diffusion"
    shutil.copytree(second_checkpoint, ckpts / SECOND)
    shutil.copytree(second_checkpoint, ckpts / MISSING)
    unet_file = ckpts / MISSING / "unet" / "diffusion_pytorch_model.safetensors"
    state = load_file(str(unet_file))
    del state[DROPPED]
    save_file(state, str(unet_file), metadata={"format": "pt"})
    shutil.copytree(second_checkpoint, ckpts / OTHER_SCHEDULER)
    config = ckpts / OTHER_SCHEDULER / "scheduler" / "scheduler_config.json"
    config.write_text(config.read_text(encoding="utf-8").replace('"timestep_spacing": "leading"', '"timestep_spacing": "trailing"'),
                      encoding="utf-8")
    save_demo_checkpoint(ckpts / OTHER_ARCH, seed=2, unet_channels=(64, 64))
    from tests.fixtures_models import save_demo_single_file

    save_demo_single_file(ckpts / FILE_A, seed=3)  # each with its <stem>.config/ sidecar (same configs)
    save_demo_single_file(ckpts / FILE_B, seed=4)
    save_demo_single_file(ckpts / FILE_WIDE, seed=5, unet_channels=(64, 64))
    return root


@pytest.fixture(scope="module")
def studio(data):
    s = _studio(data)
    yield s
    s.shutdown()


def _switch(studio, name):
    studio.jobs.run("load_checkpoint", name, timeout=300).raise_for_error()
    return studio.models.active


def _image(studio, name):
    from modules.diffusion.params import Txt2ImgRequest

    req = Txt2ImgRequest(prompt="a red cat", steps=3, width=64, height=64, seed=5, save_images=False,
                         override_settings={"sd_model_checkpoint": name})
    job = studio.jobs.run("txt2img", req, timeout=300)
    job.raise_for_error()
    assert f"Model: {name.removesuffix('.safetensors')}" in job.result.images[0].infotext
    return np.asarray(job.result.images[0].image)


def _state(ckpt) -> dict:
    return {f"{name}.{k}": t for name in ("unet", "vae", "text_encoder")
            for k, t in getattr(ckpt.pipe, name).state_dict().items()}


def _assert_nothing_left(state: dict, first_state: dict) -> None:
    import torch

    assert not any(torch.equal(state[k], first_state[k]) for k in state if state[k].numel() > 16 and "norm" not in k
                   and k.endswith("weight")), "a weight of the first checkpoint was left in the second"


def _assert_same_as_a_cold_load(data, name: str, switched, image) -> None:
    """A fresh studio whose first load is `name` (the ordinary way) has the same tensors, configs and image."""
    import torch

    fresh = _studio(data, first=name)
    try:
        cold = _switch(fresh, name)
        assert cold.built_from == "files"
        state, cold_state = _state(switched), _state(cold)
        assert state.keys() == cold_state.keys()
        assert all(torch.equal(state[k], cold_state[k]) and state[k].dtype == cold_state[k].dtype for k in state)
        for part in ("scheduler", "unet", "vae"):  # the same configs (a folder component's own path aside)
            ours, theirs = ({k: v for k, v in getattr(p, part).config.items() if k != "_name_or_path"}
                            for p in (switched.pipe, cold.pipe))
            assert ours == theirs, part
        assert np.array_equal(image, _image(fresh, name)), "the skeleton path changed the image"
    finally:
        fresh.shutdown()


def test_a_same_architecture_switch_reads_only_the_weights_and_equals_a_cold_load(studio, data):
    first = _switch(studio, DEMO)
    first_state = {k: t.clone() for k, t in _state(first).items()}
    demo_cold = _image(studio, DEMO)
    second = _switch(studio, SECOND)
    assert second.built_from == "skeleton", "a second SD1 folder with the same configs should reuse the skeleton"
    by_skeleton = _image(studio, SECOND)
    assert _state(second).keys() == first_state.keys()
    _assert_nothing_left(_state(second), first_state)
    _assert_same_as_a_cold_load(data, SECOND, second, by_skeleton)
    back = _switch(studio, DEMO)
    assert back.built_from == "skeleton"
    assert np.array_equal(demo_cold, _image(studio, DEMO)), "switching back by the skeleton changed the first image"


def test_a_key_missing_from_the_file_is_refused_as_the_cold_load_refuses_it(studio, data):
    from modules.errors import AtelierError

    _switch(studio, SECOND)
    with pytest.raises(AtelierError) as by_skeleton:
        _switch(studio, MISSING)
    assert DROPPED in by_skeleton.value.message and "incomplete" in by_skeleton.value.message
    assert studio.models.active.name == SECOND, "the checkpoint in use must keep serving"
    _image(studio, SECOND)
    fresh = _studio(data, first=SECOND)
    try:
        with pytest.raises(AtelierError) as cold:
            _switch(fresh, MISSING)
        assert cold.value.message == by_skeleton.value.message
    finally:
        fresh.shutdown()


def test_other_configs_or_another_architecture_load_the_ordinary_way(studio):
    _switch(studio, SECOND)
    other = _switch(studio, OTHER_SCHEDULER)
    assert other.built_from == "files", "another scheduler config must not come from the SD1 skeleton"
    assert other.pipe.scheduler.config.timestep_spacing == "trailing"
    wide = _switch(studio, OTHER_ARCH)
    assert wide.built_from == "files"
    assert tuple(wide.pipe.unet.config.block_out_channels) == (64, 64)
    _image(studio, OTHER_ARCH)
    assert _switch(studio, SECOND).built_from == "skeleton"


def test_a_flux_switch_takes_the_skeleton_too_and_equals_a_cold_load(tmp_path_factory, demo_checkpoint):
    """The skeleton is per pipeline, not per UNet: two Flux folders of one config (other weights) switch by it."""
    import torch

    from modules.diffusion.params import Txt2ImgRequest
    from modules.models.demo_flow import save_demo_flow

    root = make_data_dir(tmp_path_factory.mktemp("skeleton-flux"), demo_checkpoint)
    for name, seed in (("flux-a", 1), ("flux-b", 2)):
        save_demo_flow(root / "models" / "Stable-diffusion" / name, "flux", seed=seed)

    def image(s, name):
        req = Txt2ImgRequest(prompt="a red fox", steps=3, width=64, height=64, seed=5, sampler_name="Euler",
                             cfg_scale=1, save_images=False, override_settings={"sd_model_checkpoint": name})
        job = s.jobs.run("txt2img", req, timeout=300)
        job.raise_for_error()
        return np.asarray(job.result.images[0].image)

    studio = _studio(root, first="flux-a")
    fresh = None
    try:
        assert _switch(studio, "flux-a").built_from == "files"
        switched = _switch(studio, "flux-b")
        assert switched.built_from == "skeleton"
        by_skeleton = image(studio, "flux-b")
        fresh = _studio(root, first="flux-b")
        cold = _switch(fresh, "flux-b")
        assert cold.built_from == "files"
        for part in ("transformer", "vae", "text_encoder", "text_encoder_2"):
            ours, theirs = getattr(switched.pipe, part).state_dict(), getattr(cold.pipe, part).state_dict()
            assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours), part
        t5 = switched.pipe.text_encoder_2  # T5's tied embedding stays one tensor under both names
        assert t5.encoder.embed_tokens.weight is t5.shared.weight
        assert np.array_equal(by_skeleton, image(fresh, "flux-b"))
    finally:
        studio.shutdown()
        if fresh is not None:
            fresh.shutdown()


def test_an_sd1_single_file_switch_takes_the_skeleton_and_equals_the_ordinary_single_file_load(studio, data):
    """Two A1111-layout SD1 files of one architecture: the second is assigned into the first's skeleton (keys
    converted by diffusers' single-file helpers) and equals from_single_file tensor for tensor and bit for bit."""
    assert _switch(studio, FILE_A).built_from == "files"
    first_state = {k: t.clone() for k, t in _state(studio.models.active).items()}
    first_image = _image(studio, FILE_A)
    second = _switch(studio, FILE_B)
    assert second.built_from == "skeleton", "a second SD1 single file of the same architecture should reuse it"
    by_skeleton = _image(studio, FILE_B)
    _assert_nothing_left(_state(second), first_state)
    _assert_same_as_a_cold_load(data, FILE_B, second, by_skeleton)
    assert _switch(studio, FILE_A).built_from == "skeleton"
    assert np.array_equal(first_image, _image(studio, FILE_A))


def test_a_single_file_of_another_architecture_takes_the_full_load(studio):
    _switch(studio, FILE_A)
    wide = _switch(studio, FILE_WIDE)
    assert wide.built_from == "files", "a file with other shapes must never be assigned into the SD1 skeleton"
    assert tuple(wide.pipe.unet.config.block_out_channels) == (64, 64)
    _image(studio, FILE_WIDE)
    assert _switch(studio, FILE_A).built_from == "skeleton"

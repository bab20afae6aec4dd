"""compile_unet: the compiled UNet is the one that runs, its image stays within a tolerance of eager, weight
changes after the compile (a fused LoRA, a same-architecture skeleton switch) act as in eager mode, and the
CUDA-only modes are refused on the CPU by name.

Compiling even the tiny demo UNet takes tens of seconds on a small CPU (minutes without a warm cache), so
one studio is compiled once for the module and its tests run in order on it."""
from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

from modules.errors import InvalidRequest
from tests.conftest import SECOND, STYLE_LORA

TOLERANCE = 2  # max abs difference in 0–255 pixel steps: inductor reorders float math, nothing more
LORA, HALF_LORA = f"<lora:{STYLE_LORA}:1>", f"<lora:{STYLE_LORA}:0.5>"
pytestmark = pytest.mark.timeout(900)  # the module's first compile; see the docstring


@pytest.fixture(scope="module")
def studio(tmp_path_factory, demo_checkpoint, second_checkpoint):
    from modules.studio import Studio, StudioOptions
    from tests.conftest import make_data_dir
    from tests.fixtures_models import save_demo_lora

    data = make_data_dir(tmp_path_factory.mktemp("compile"), demo_checkpoint)
    shutil.copytree(second_checkpoint, data / "models" / "Stable-diffusion" / second_checkpoint.name)
    save_demo_lora(data / "models" / "Lora" / f"{STYLE_LORA}.safetensors", seed=2)
    s = Studio(StudioOptions(data_dir=data, device="cpu", build_demo=False))
    s.load()
    assert s.load_error is None, s.load_error
    yield s
    s.settings.update({"compile_unet": "off"}, save=False)
    s.shutdown()


def _job(studio, prompt: str = "a red cat", checkpoint: str | None = None):
    from modules.diffusion.params import Txt2ImgRequest

    overrides = {"sd_model_checkpoint": checkpoint} if checkpoint else {}
    req = Txt2ImgRequest(prompt=prompt, steps=3, width=64, height=64, seed=9, save_images=False,
                         override_settings=overrides)
    job = studio.jobs.run("txt2img", req, timeout=800)
    job.raise_for_error()
    return job


def _image(studio, prompt: str = "a red cat", checkpoint: str | None = None) -> np.ndarray:
    return np.asarray(_job(studio, prompt, checkpoint).result.images[0].image).astype(np.int16)


def _diff(a, b) -> int:
    return int(np.abs(a - b).max())


@pytest.fixture(scope="module")
def eager(studio, demo_checkpoint) -> dict:
    """The images with compile_unet off: the demo model, with the LoRA, and the second checkpoint."""
    first = demo_checkpoint.name
    return {"base": _image(studio, checkpoint=first), "lora": _image(studio, f"a red cat {LORA}", first),
            "half": _image(studio, f"a red cat {HALF_LORA}", first), "second": _image(studio, checkpoint=SECOND),
            "first": first}


def test_cuda_only_modes_are_refused_on_the_cpu_naming_the_setting(studio):
    for mode in ("reduce-overhead", "max-autotune-no-cudagraphs"):
        with pytest.raises(InvalidRequest) as refused:
            studio.settings.update({"compile_unet": mode}, save=False)
        assert refused.value.field == "compile_unet"
        assert "CUDA" in refused.value.message and '"default"' in refused.value.message
    assert studio.settings.get().compile_unet == "off"
    with pytest.raises(InvalidRequest) as refused:
        studio.settings.update({"compile_unet": "max-autotune"}, save=False)
    assert refused.value.field == "compile_unet"


def test_the_compiled_unet_runs_and_its_image_is_within_tolerance_of_eager(studio, eager):
    from torch._dynamo.utils import counters

    graphs = counters["stats"]["unique_graphs"]
    studio.settings.update({"compile_unet": "default"}, save=False)
    job = _job(studio, checkpoint=eager["first"])
    on = np.asarray(job.result.images[0].image).astype(np.int16)
    ckpt = studio.models.active
    assert ckpt.compiled == "default"
    assert counters["stats"]["unique_graphs"] > graphs, "no graph was compiled: the setting did not act"
    assert any("s compiling UNet2DConditionModel" in line for line in job.logs), list(job.logs)
    assert ckpt.compile_seconds > 0
    assert _diff(on, eager["base"]) <= TOLERANCE
    cache = studio.registry.paths.compile_cache  # the FX graph cache of this compile, kept for a restart
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(cache) and any((cache / "fxgraph").rglob("*"))
    again = _job(studio, checkpoint=eager["first"])  # same size, same weights: no compile, nothing in the log
    assert not any("compiling" in line for line in again.logs)


def test_a_lora_fused_after_the_compile_acts_as_in_eager_mode(studio, eager):
    on = _image(studio, f"a red cat {LORA}", eager["first"])
    assert studio.models.active.compiled == "default"
    assert _diff(eager["lora"], eager["base"]) > 10, "the demo LoRA must change the image for this test to mean anything"
    assert _diff(on, eager["lora"]) <= TOLERANCE
    # Another weight changes only the tensors (peft's layers and merged flag stay): the graph is reused, so a
    # graph with the weights folded in (inductor's freezing) would draw the weight-1 image here.
    assert _diff(eager["half"], eager["lora"]) > 10
    assert _diff(_image(studio, f"a red cat {HALF_LORA}", eager["first"]), eager["half"]) <= TOLERANCE
    assert _diff(_image(studio, checkpoint=eager["first"]), eager["base"]) <= TOLERANCE  # and out again


def test_a_same_architecture_switch_after_the_compile_gives_that_checkpoints_image(studio, eager):
    on = _image(studio, checkpoint=SECOND)
    ckpt = studio.models.active
    assert ckpt.name == SECOND and ckpt.built_from == "skeleton" and ckpt.compiled == "default"
    assert _diff(eager["second"], eager["base"]) > 10
    assert _diff(on, eager["second"]) <= TOLERANCE


def test_compile_off_runs_eagerly_again(studio, eager):
    from torch._dynamo.utils import counters

    studio.settings.update({"compile_unet": "off"}, save=False)
    frames = counters["frames"]["total"]
    assert np.array_equal(_image(studio, checkpoint=SECOND), eager["second"])
    assert studio.models.active.compiled == "off"
    assert counters["frames"]["total"] == frames, "dynamo still saw the UNet's frames"


def test_a_cuda_only_mode_in_a_config_json_from_a_gpu_machine_falls_back_to_default_on_the_cpu(tmp_path):
    import json

    from modules.settings import SettingsStore

    (tmp_path / "config.json").write_text(json.dumps({"compile_unet": "reduce-overhead"}))
    store = SettingsStore(tmp_path / "config.json")
    store.attach_devices(["cpu"])
    assert store.get().compile_unet == "default"
    assert "reduce-overhead" in store.warning and "CUDA" in store.warning
    gpu = SettingsStore(tmp_path / "config.json")
    gpu.attach_devices(["cuda"])
    assert gpu.get().compile_unet == "reduce-overhead" and gpu.warning is None
    gpu.update({"compile_unet": "max-autotune-no-cudagraphs"}, save=False)  # accepted where a GPU is

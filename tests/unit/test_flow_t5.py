"""Flux / SD3's T5 text encoder in fewer bytes (modules/models/t5_storage.py): the load option `t5` — int8
(bitsandbytes' layer swap on the CPU) or fp8 (float8_e4m3fn storage, upcast per layer as it runs) — and a T5
file that is fp8 already (ComfyUI's t5xxl_fp8_e4m3fn.safetensors in models/text_encoder) loaded with its fp8
storage kept. Each shrinks the footprint the model manager shows and generates an image close to the fp32 one
(mean absolute pixel difference under TOLERANCE of 255, not equal); what a checkpoint or device cannot do is
refused by the field `t5`."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from modules.models.demo import DEMO_NAME

FOLDER, BFL, SD3 = "tiny-flux-wide", "tiny-flux-bfl.safetensors", "tiny-sd3"
TOLERANCE = 1.0  # mean |Δ| of 0–255 pixels vs fp32 T5 (measured: 0.01–0.1 on this CPU)


@pytest.fixture(scope="module")
def studio(tmp_path_factory, demo_checkpoint):
    from modules.models.demo_flow import save_demo_flow
    from modules.studio import Studio, StudioOptions
    from tests.conftest import make_data_dir
    from tests.fixtures_models import save_flux_file_set, save_fp8_t5_file

    data = make_data_dir(tmp_path_factory.mktemp("flow-t5"), demo_checkpoint)
    models = data / "models"
    save_flux_file_set(models, FOLDER, {})
    save_demo_flow(models / "Stable-diffusion" / SD3, "sd3", seed=2)
    t5_folder = models / "text_encoder" / "t5xxl"
    save_fp8_t5_file(t5_folder, models / "text_encoder" / "t5xxl_fp8_e4m3fn.safetensors")
    shutil.rmtree(t5_folder)  # the fp8 file is the only T5 in models/text_encoder
    s = Studio(StudioOptions(data_dir=data, device="cpu", build_demo=False))
    s.load()
    assert s.load_error is None, s.load_error
    yield s
    s.shutdown()


def _load(studio, name, **options):
    job = studio.jobs.run("load_checkpoint", {"name": name, "options": options}, timeout=300)
    job.raise_for_error()
    return studio.models.active


def _image(studio, checkpoint, **fields):
    from modules.diffusion.params import Txt2ImgRequest

    body = {"prompt": "a red fox", "steps": 3, "width": 64, "height": 64, "seed": 5, "sampler_name": "Euler",
            "cfg_scale": 1, "save_images": False, "override_settings": {"sd_model_checkpoint": checkpoint}, **fields}
    job = studio.jobs.run("txt2img", Txt2ImgRequest(**body), timeout=300)
    job.raise_for_error()
    return np.asarray(job.result.images[0].image.convert("RGB")).astype(int)


def _footprint(studio, name) -> int:
    return next(r for r in studio.models.describe() if r["name"] == name)["footprint_bytes"]


def _fp8_params(module) -> int:
    import torch

    return sum(p.numel() for p in module.parameters() if p.dtype == torch.float8_e4m3fn)


@pytest.mark.parametrize("checkpoint,slot", [(FOLDER, "text_encoder_2"), (SD3, "text_encoder_3")])
@pytest.mark.parametrize("t5", ["int8", "fp8"])
def test_t5_int8_and_fp8_shrink_the_footprint_and_generate_close_to_fp32(studio, checkpoint, slot, t5):
    _load(studio, checkpoint)
    full = _footprint(studio, checkpoint)
    reference = _image(studio, checkpoint)
    loaded = _load(studio, checkpoint, t5=t5)
    try:
        encoder = loaded.pipe.components[slot]
        if t5 == "int8":
            assert any(type(m).__module__.startswith("bitsandbytes") for m in encoder.modules())
        else:
            assert _fp8_params(encoder) > 0
        assert loaded.t5_storage == t5
        assert _footprint(studio, checkpoint) < full
        image = _image(studio, checkpoint)
        diff = np.abs(image - reference).mean()
        assert not np.array_equal(image, reference) and diff < TOLERANCE, diff
    finally:
        _load(studio, checkpoint)  # back to fp32 T5 for the other tests


def test_an_fp8_t5_file_keeps_its_fp8_storage_and_generates_close_to_the_fp32_folder(studio):
    import torch

    reference = _image(studio, FOLDER)
    folder_footprint = _footprint(studio, FOLDER)
    loaded = _load(studio, BFL)
    t5 = loaded.pipe.text_encoder_2
    linears = [m for m in t5.modules() if type(m) is torch.nn.Linear]
    assert linears and all(m.weight.dtype == torch.float8_e4m3fn for m in linears)  # stored fp8, never upcast
    assert t5.shared.weight.dtype == torch.float32 and t5.encoder.embed_tokens.weight is t5.shared.weight
    assert loaded.t5_storage == "fp8" and _footprint(studio, BFL) < folder_footprint
    image = _image(studio, BFL)
    diff = np.abs(image - reference).mean()
    assert not np.array_equal(image, reference) and diff < TOLERANCE, diff
    # t5 int8 takes the fp8 file's weights upcast, then quantized: bitsandbytes' layers, no fp8 left
    int8 = _load(studio, BFL, t5="int8").pipe.text_encoder_2
    assert _fp8_params(int8) == 0 and any(type(m).__module__.startswith("bitsandbytes") for m in int8.modules())
    _load(studio, BFL)


def test_t5_is_refused_by_field_where_there_is_no_t5(studio):
    from modules.models.demo_lm import DEMOS

    job = studio.jobs.run("load_checkpoint", {"name": DEMO_NAME, "options": {"t5": "fp8"}}, timeout=120)
    assert job.state.value == "failed" and 400 <= job.error_status < 500 and job.error_field == "t5", job.error
    assert studio.models.options.get(DEMO_NAME).t5 == "none"  # a refused option is not remembered
    studio.jobs.run("load_checkpoint", DEMO_NAME, timeout=120).raise_for_error()
    kind, name, _ = DEMOS[0]
    job = studio.jobs.run("load_model", {"kind": kind, "name": name, "options": {"t5": "int8"}}, timeout=120)
    assert job.state.value == "failed" and 400 <= job.error_status < 500 and job.error_field == "t5", job.error
    job = studio.jobs.run("load_checkpoint", {"name": FOLDER, "options": {"t5": "fp4"}}, timeout=60)
    assert job.state.value == "failed" and job.error_field == "t5", job.error


@pytest.mark.parametrize("device,t5", [("mps", "fp8"), ("mps", "int8"), ("cuda", "int8")])
def test_what_a_device_cannot_do_is_refused_by_field(device, t5):
    from modules.errors import InvalidRequest
    from modules.models import t5_storage
    from modules.models.quant import LoadOptions

    with pytest.raises(InvalidRequest) as refused:
        t5_storage.check(LoadOptions(t5=t5), "flux", device)
    assert refused.value.field == "t5" and device in refused.value.message
    t5_storage.check(LoadOptions(t5="fp8"), "flux", "cuda")  # fp8 storage runs on CUDA


def test_the_models_tab_loads_t5_fp8_and_shows_it_with_the_smaller_footprint(studio):
    from modules.errors import AtelierError
    from webui.checkpoints import switch_checkpoint
    from webui.ui.models import rows

    def row(name):
        return next(r for r in rows(studio, "checkpoint") if r[0] == name)

    switch_checkpoint(studio, FOLDER, {"t5": "none"})  # the tab's Load: the A1111 switch with its options
    full = _footprint(studio, FOLDER)
    assert "T5" not in row(FOLDER)[6]
    switch_checkpoint(studio, FOLDER, {"t5": "fp8"})
    try:
        assert "T5 fp8" in row(FOLDER)[6] and _footprint(studio, FOLDER) < full, row(FOLDER)  # the Options column
    finally:
        switch_checkpoint(studio, FOLDER, {"t5": "none"})
    with pytest.raises(AtelierError) as refused:
        switch_checkpoint(studio, DEMO_NAME, {"t5": "int8"})
    assert refused.value.field == "t5" and studio.models.options.get(DEMO_NAME).t5 == "none"

"""VAE selection, textual-inversion embeddings and quantized loads on the demo architecture; VAE and
embedding pickles whose payload would run are refused and never run."""
from __future__ import annotations

import numpy as np
import pytest

from tests.support import assert_payloads_fire, save_malicious_pickle

PICKLED_VAE, PICKLED_EMBEDDINGS = "payload.vae.pt", ("payload-pt.pt", "payload-bin.bin")


@pytest.fixture(scope="module")
def markers(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("markers")
    return {name: folder / f"PWNED-{name}" for name in (PICKLED_VAE, *PICKLED_EMBEDDINGS)}


@pytest.fixture(scope="module")
def studio(tmp_path_factory, demo_checkpoint, markers):
    import torch
    from safetensors.torch import save_file

    from modules.models.demo import build_sd15_pipeline
    from modules.models.singlefile import ldm_state_dict
    from modules.studio import Studio, StudioOptions
    from tests.conftest import make_data_dir

    data = make_data_dir(tmp_path_factory.mktemp("extras-data"), demo_checkpoint)
    for sub in ("VAE", "embeddings"):
        (data / "models" / sub).mkdir(parents=True, exist_ok=True)
    ldm = ldm_state_dict(build_sd15_pipeline(5))
    vae = {k.removeprefix("first_stage_model."): v for k, v in ldm.items() if k.startswith("first_stage_model.")}
    save_file(vae, str(data / "models" / "VAE" / "other.vae.safetensors"))  # A1111/LDM key layout
    from tests.fixtures_models import save_demo_lora

    save_demo_lora(data / "models" / "Lora" / "tiny.safetensors", "kohya", seed=1, alpha=4.0, rank=4)
    emb = torch.randn(2, 32, generator=torch.Generator().manual_seed(3))
    save_file({"emb_params": emb}, str(data / "models" / "embeddings" / "mystyle.safetensors"))
    # Pickles shaped like a real VAE / A1111 embedding, each carrying a payload shown to fire when loaded unsafely.
    planted = {save_malicious_pickle(data / "models" / "VAE" / PICKLED_VAE, markers[PICKLED_VAE],
                                     {"state_dict": vae}): markers[PICKLED_VAE]}
    for name in PICKLED_EMBEDDINGS:
        layout = {"string_to_param": {"*": torch.randn(1, 32)}, "name": name}
        path = save_malicious_pickle(data / "models" / "embeddings" / name, markers[name], layout)
        planted[path] = markers[name]
    assert_payloads_fire(planted)
    s = Studio(StudioOptions(data_dir=data, device="cpu", build_demo=False))
    s.load()
    assert s.load_error is None, s.load_error
    s.test_embedding = emb
    yield s
    s.shutdown()


def _txt2img(studio, prompt="a red cat", **extra):
    from modules.diffusion.params import Txt2ImgRequest

    req = Txt2ImgRequest(prompt=prompt, steps=3, width=64, height=64, seed=2, save_images=False, **extra)
    job = studio.jobs.run("txt2img", req, timeout=300)
    job.raise_for_error()
    return np.asarray(job.result.images[0].image), job.result.images[0].infotext


def test_vae_from_models_vae_changes_the_decode_and_none_restores_it(studio):
    base, _ = _txt2img(studio)
    studio.settings.update({"sd_vae": "other.vae.safetensors"}, save=False)
    try:
        other, info = _txt2img(studio)
        assert not np.array_equal(base, other)
        assert studio.models.active.vae_name == "other.vae" and len(studio.models.active.vae_hash) == 10
        assert "VAE: other.vae" in info
    finally:
        studio.settings.update({"sd_vae": "None"}, save=False)
    again, _ = _txt2img(studio)
    assert np.array_equal(base, again) and studio.models.active.vae is None
    studio.settings.update({"sd_vae": "Automatic"}, save=False)


def test_footprint_follows_what_is_loaded_into_the_checkpoint(studio):
    """The footprint is counted again only when the loaded parts change (not every job): a LoRA's tensors and a
    VAE swap must still show in it, equal to a fresh count of the pipeline."""
    from modules.models import memory

    _txt2img(studio)
    ckpt = studio.models.active
    before = ckpt.footprint
    assert before == memory.footprint_bytes(ckpt.pipe)
    _txt2img(studio, prompt="a red cat <lora:tiny:1>")
    _txt2img(studio)  # counted when the next job readies the checkpoint; the LoRA stays loaded (unfused) for later
    assert ckpt.footprint > before and ckpt.footprint == memory.footprint_bytes(ckpt.pipe), "the LoRA was not counted"
    studio.settings.update({"sd_vae": "other.vae.safetensors"}, save=False)
    try:
        _txt2img(studio)
        assert ckpt.footprint == memory.footprint_bytes(ckpt.pipe)
    finally:
        studio.settings.update({"sd_vae": "Automatic"}, save=False)


def test_embedding_is_loaded_under_its_file_name(studio):
    ckpt = studio.models.active
    assert "mystyle" in ckpt.embedding_names
    entry = studio.registry.get("embedding", "mystyle")
    assert entry.metadata == {"vectors": 2, "shape": 32}
    tok = ckpt.pipe.tokenizer
    ids = [tok.convert_tokens_to_ids(t) for t in ("mystyle", "mystyle_1")]
    rows = ckpt.pipe.text_encoder.get_input_embeddings().weight[ids].detach()
    np.testing.assert_allclose(rows.numpy(), studio.test_embedding.numpy(), atol=1e-6)
    with_emb, _ = _txt2img(studio, prompt="a cat, mystyle")
    plain, _ = _txt2img(studio, prompt="a cat")
    assert not np.array_equal(with_emb, plain)


@pytest.mark.parametrize("quantization", ["nf4", "int8"])
def test_quantized_load_runs_txt2img_on_the_cpu(studio, quantization):
    base, _ = _txt2img(studio)
    try:
        job = studio.jobs.run("load_checkpoint", {"name": "atelier-demo-sd15", "options": {
            "quantization": quantization, "double_quant": quantization == "nf4"}}, timeout=300)
        job.raise_for_error()
        ckpt = studio.models.active
        label = "nf4 double quant" if quantization == "nf4" else "int8"
        assert ckpt.quantization == label
        import bitsandbytes as bnb

        layers = [m for m in ckpt.pipe.unet.modules() if isinstance(m, (bnb.nn.Linear4bit, bnb.nn.Linear8bitLt))]
        assert layers, "the UNet's Linear layers were not quantized"
        image, info = _txt2img(studio)
        assert image.shape == base.shape and image.std() > 0
        assert np.abs(image.astype(int) - base.astype(int)).mean() < 20, "quantized output strays far from fp32"
        assert f"Quantization: {label}" in info, info
        row = next(r for r in studio.models.describe() if r["name"] == "atelier-demo-sd15")
        assert row["quantization"] == label and row["footprint_bytes"] > 0
    finally:
        job = studio.jobs.run("load_checkpoint", {"name": "atelier-demo-sd15", "options": {}}, timeout=300)
        job.raise_for_error()
    assert studio.models.active.quantization is None
    restored, _ = _txt2img(studio)
    assert np.array_equal(restored, base)


def test_bad_load_options_name_the_field(studio):
    for options, field in (({"quantization": "int3"}, "quantization"), ({"dtype": "fp12"}, "dtype")):
        job = studio.jobs.run("load_checkpoint", {"name": "atelier-demo-sd15", "options": options}, timeout=60)
        assert job.state.value == "failed" and 400 <= job.error_status < 500, job.error
        assert job.error_field is not None and job.error_field.split(".")[-1] == field, (job.error_field, job.error)
    assert studio.models.active.quantization is None, "a refused load changed the loaded model"


def test_vae_and_embedding_pickles_are_refused_and_never_run(studio, markers):
    from modules.diffusion.params import Txt2ImgRequest

    skipped = studio.models.active.skipped_embeddings  # embeddings load with the checkpoint
    for name in PICKLED_EMBEDDINGS:
        (reason,) = [why for path, why in skipped.items() if path.endswith(name)]
        assert "refused" in reason and "nothing was executed" in reason, reason
    assert not {"payload-pt", "payload-bin"} & set(studio.models.active.embedding_names)
    studio.settings.update({"sd_vae": PICKLED_VAE}, save=False)
    try:
        req = Txt2ImgRequest(prompt="a cat", steps=2, width=64, height=64, seed=2, save_images=False)
        job = studio.jobs.run("txt2img", req, timeout=120)
        assert job.state.value == "failed" and job.error_field == "sd_vae" and 400 <= job.error_status < 500
        assert PICKLED_VAE in job.error and "refused" in job.error, job.error
    finally:
        studio.settings.update({"sd_vae": "Automatic"}, save=False)
    assert [m for m in markers.values() if m.exists()] == [], "a pickle's code ran"
    _txt2img(studio)  # still serving

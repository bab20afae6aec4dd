"""Upscaler models (spandrel) through the one model manager: the Extras job, hires fix, tile-wise inference,
and the weights-only guard. The models are tiny 4x RRDBNets with random weights in Real-ESRGAN's layout."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from tests.fixtures_models import save_demo_upscaler
from tests.support import assert_payloads_fire, save_malicious_pickle


def noise(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


@pytest.fixture
def upscale_studio(data_dir):
    from modules.studio import Studio, StudioOptions

    save_demo_upscaler(data_dir / "models" / "ESRGAN" / "tiny-x4.safetensors")
    save_demo_upscaler(data_dir / "models" / "RealESRGAN" / "tiny-real.pth", "pth", seed=1)  # {"params_ema": …}
    s = Studio(StudioOptions(data_dir=data_dir, device="cpu"))
    s.load()
    assert s.load_error is None, s.load_error
    yield s
    s.shutdown()


def extras(studio, **fields):
    from modules.postprocess.params import ExtrasRequest

    job = studio.submit("extras", ExtrasRequest(**fields))
    job.wait(120)
    job.raise_for_error()
    return job.result


def test_extras_upscales_with_safetensors_and_pth_models_and_blends_upscaler_2(upscale_studio):
    from modules.models import upscalers

    assert upscalers.names(upscale_studio.registry) == ["None", "Lanczos", "Nearest", "tiny-x4", "tiny-real"]
    source = noise(40, 24)
    first = extras(upscale_studio, images=[source], upscaler_1="tiny-x4", upscaling_resize=4, save_images=False)
    second = extras(upscale_studio, images=[source], upscaler_1="tiny-real", upscaling_resize=4, save_images=False)
    a, b = (np.asarray(r.images[0].image, dtype=np.float32) for r in (first, second))
    assert a.shape == b.shape == (96, 160, 3)
    assert np.abs(a - b).mean() > 5  # two different random networks: both really ran

    blended = extras(upscale_studio, images=[source], upscaler_1="tiny-x4", upscaler_2="tiny-real",
                     extras_upscaler_2_visibility=0.5, upscaling_resize=4)
    mixed = np.asarray(blended.images[0].image, dtype=np.float32)
    assert np.abs(mixed - (a + b) / 2).max() <= 1.0  # PIL's blend of the two, rounded

    saved = blended.images[0].path
    assert saved.parent.parent.name == "extras-images" and saved.suffix == ".png"
    with Image.open(saved) as im:
        assert im.size == (160, 96)
        assert im.info["parameters"] == ("Postprocess upscale by: 4, Postprocess upscaler: tiny-x4, Postprocess "
                                         "upscaler 2: tiny-real, Postprocess upscaler 2 visibility: 0.5")
    kinds = {(row["kind"], row["name"]) for row in upscale_studio.models.describe() if row["location"] != "disk"}
    assert {("esrgan", "tiny-x4.safetensors"), ("realesrgan", "tiny-real.pth")} <= kinds  # the one manager holds them


def test_scale_to_with_crop_and_a_folder_batch_keeping_the_source_parameters(upscale_studio):
    folder = upscale_studio.paths.root / "to-upscale"
    folder.mkdir()
    from modules.images import encode_image

    (folder / "b.png").write_bytes(encode_image(noise(30, 20, 1), "a cat\nSteps: 20, Seed: 5"))
    (folder / "a.png").write_bytes(encode_image(noise(20, 20, 2)))
    (folder / "broken.png").write_bytes(b"not an image")
    result = extras(upscale_studio, folder="to-upscale", resize_mode=1, upscaling_resize_w=64, upscaling_resize_h=48,
                    upscaler_1="tiny-x4")
    assert [d.name for d in result.images] == ["a.png", "b.png"]
    assert all(d.image.size == (64, 48) for d in result.images)
    assert result.skipped and result.skipped[0].startswith("broken.png")
    assert result.images[1].infotext == ("a cat\nSteps: 20, Seed: 5, Postprocess upscale to: 64x48, Postprocess crop "
                                         "to: 64x48, Postprocess upscaler: tiny-x4")


def test_tiles_blend_without_seams(upscale_studio):
    """The tiled result matches the whole-image one: the seams are blended."""
    with upscale_studio.models.use("esrgan", "tiny-x4.safetensors") as model:
        image = noise(72, 56, 3)
        whole = np.asarray(model.upscale_once(image, tile=0, overlap=0), dtype=np.float32)
        seen = []
        tiled = np.asarray(model.upscale_once(image, tile=32, overlap=8, on_tile=lambda d, t: seen.append((d, t))),
                           dtype=np.float32)
    assert whole.shape == tiled.shape == (224, 288, 3)
    assert seen[-1] == (6, 6)  # 2 rows x 3 columns of 32-pixel tiles overlapping by 8
    assert np.abs(whole - tiled).mean() < 1.0  # the receptive field differs only near the tiles' edges


def test_a_pickle_that_runs_code_is_refused(upscale_studio, tmp_path):
    from modules.postprocess.params import ExtrasRequest
    from tests.fixtures_models import realesrgan_state_dict

    marker = tmp_path / "pwned"
    bad = save_malicious_pickle(upscale_studio.paths.root / "models" / "ESRGAN" / "evil-x4.pth", marker,
                                {"params_ema": realesrgan_state_dict()})
    assert_payloads_fire({bad: marker})
    upscale_studio.registry.refresh("esrgan")
    job = upscale_studio.submit("extras", ExtrasRequest(images=[noise(16, 16)], upscaler_1="evil-x4"))
    job.wait(60)
    assert job.state.value == "failed" and "needs code to run" in job.error and "safetensors" in job.error
    assert not marker.exists()


def test_hires_fix_uses_an_upscaler_model(upscale_studio):
    from modules.diffusion.params import Txt2ImgRequest
    from modules.errors import InvalidRequest

    req = Txt2ImgRequest(prompt="a lighthouse", steps=2, width=64, height=64, seed=3, enable_hr=True, hr_scale=2,
                         hr_upscaler="tiny-x4", denoising_strength=0.0, save_images=False)
    job = upscale_studio.submit("txt2img", req)
    job.wait(300)
    job.raise_for_error()
    hires = job.result.images[0].image
    assert hires.size == (128, 128)
    # Denoising 0 keeps the upscaled first pass: exactly the model's 4x, Lanczos-resized to 128.
    base = upscale_studio.submit("txt2img", req.model_copy(update={"enable_hr": False}))
    base.wait(300)
    with upscale_studio.models.use("esrgan", "tiny-x4.safetensors") as model:
        expected = model.resize(base.result.images[0].image, 128, 128, 192, 8)
    assert np.abs(np.asarray(hires, dtype=np.float32) - np.asarray(expected, dtype=np.float32)).max() <= 1
    with pytest.raises(InvalidRequest) as refused:
        upscale_studio.submit("txt2img", req.model_copy(update={"hr_upscaler": "no-such-model"}))
    assert refused.value.field == "hr_upscaler" and "tiny-x4" in refused.value.message

"""Tiling: circular padding in every UNet and VAE Conv2d for the job only, restored after; the picture wraps
around (a circularly padded generator is shift-equivariant: rolled noise gives the rolled picture)."""
import numpy as np
import pytest
import torch

from modules.diffusion import infotext, tiling
from modules.diffusion.params import Img2ImgRequest, Txt2ImgRequest
from modules.jobs import JobState


@pytest.fixture(scope="module")
def pipe():
    from modules.models.demo import build_sd15_pipeline

    p = build_sd15_pipeline()
    p.set_progress_bar_config(disable=True)
    return p


def modes(pipe) -> set[str]:
    return {m.padding_mode for model in (pipe.unet, pipe.vae) for m in model.modules() if isinstance(m, torch.nn.Conv2d)}


def test_circular_during_the_block_and_zeros_after_even_on_error(pipe):
    pipe.vae.use_tiling = True
    assert modes(pipe) == {"zeros"}
    with tiling.circular(pipe):
        assert modes(pipe) == {"circular"} and pipe.vae.use_tiling is False
    assert modes(pipe) == {"zeros"} and pipe.vae.use_tiling is True
    with pytest.raises(RuntimeError):
        with tiling.circular(pipe):
            raise RuntimeError("a job failing half-way")
    assert modes(pipe) == {"zeros"} and pipe.vae.use_tiling is True
    pipe.vae.use_tiling = False


def _generate(pipe, latents):
    from diffusers import EulerDiscreteScheduler

    pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
    return pipe(prompt="a brick wall", num_inference_steps=4, latents=latents.clone(), output_type="np",
                width=64, height=64).images[0]


def test_a_tiled_picture_wraps_around(pipe):
    """Noise rolled by k latent pixels gives the picture rolled by 8k pixels, exactly (up to float rounding) —
    only possible if the edges continue each other; without tiling the rolled noise makes another picture.
    (k even: the demo UNet halves the latent once, so it can only be equivariant to even shifts.)"""
    noise = torch.randn((1, 4, 8, 8), generator=torch.Generator("cpu").manual_seed(0))
    rolled = torch.roll(noise, shifts=(2, 4), dims=(2, 3))
    with tiling.circular(pipe):
        a, b = _generate(pipe, noise), _generate(pipe, rolled)
    assert np.abs(np.roll(a, shift=(16, 32), axis=(0, 1)) - b).max() < 1e-3
    plain_a, plain_b = _generate(pipe, noise), _generate(pipe, rolled)
    assert np.abs(np.roll(plain_a, shift=(16, 32), axis=(0, 1)) - plain_b).max() > 0.05
    assert not np.allclose(a, plain_a, atol=1e-3)


def _seam_ratio(image) -> float:
    """The jump across the wrap-around seam (last column -> first) over the mean jump between neighbour columns."""
    x = np.asarray(image, dtype=float)
    inner = np.abs(np.diff(x, axis=1)).mean()
    return float(np.abs(x[:, 0] - x[:, -1]).mean() / inner)


def test_a_tiling_job_is_circular_while_it_runs_then_restored(studio):
    pipe = studio.models.active.pipe
    conv = pipe.unet.conv_in
    seen = []
    handle = conv.register_forward_pre_hook(lambda m, args: seen.append(m.padding_mode))
    try:
        base = dict(prompt="a seamless stone texture", steps=4, width=64, height=64, seed=4, save_images=False)
        tiled = studio.jobs.run("txt2img", Txt2ImgRequest(tiling=True, **base), timeout=120)
        assert tiled.state == JobState.DONE, tiled.error
        assert seen and set(seen) == {"circular"}
        assert modes(studio.models.active.pipe) == {"zeros"}
        seen.clear()
        plain = studio.jobs.run("txt2img", Txt2ImgRequest(**base), timeout=120)
        assert set(seen) == {"zeros"}
    finally:
        handle.remove()
    g = tiled.result.images[0]
    assert "Tiling: True" in g.infotext and "Tiling" not in plain.result.images[0].infotext
    assert infotext.to_request_fields(infotext.parse(g.infotext))["tiling"] is True
    assert _seam_ratio(g.image) < _seam_ratio(plain.result.images[0].image)
    init = plain.result.images[0].image
    img2img = studio.jobs.run("img2img", Img2ImgRequest(init_images=[init], tiling=True, denoising_strength=0.5, **base),
                              timeout=120)
    assert img2img.state == JobState.DONE and "Tiling: True" in img2img.result.images[0].infotext
    assert modes(studio.models.active.pipe) == {"zeros"}

"""A1111 options that act: samples_format / jpeg_quality (the infotext inside JPEG and WebP too),
img2img_fix_steps, send_seed / send_size; variation seeds in img2img and inpaint."""
import numpy as np
import pytest
import torch
from PIL import Image

from modules.diffusion import variation
from modules.diffusion.params import Img2ImgRequest, Txt2ImgRequest
from modules.diffusion.seeds import SeedPlan, slerp
from modules.errors import InvalidRequest
from modules.images import encode_image, read_infotext
from modules.jobs import JobState
from webui.ui.sendto import without_unsent

INIT = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))


def small(**kw):
    return {**dict(prompt="a red cat", steps=4, width=64, height=64, seed=11), **kw}


@pytest.mark.parametrize("fmt", ["png", "jpg", "webp"])
def test_every_format_carries_the_infotext(fmt):
    import io

    text = "a cät, (red:1.2)\nNegative prompt: blurry\nSteps: 4, Seed: 1, Size: 64x64"
    with Image.open(io.BytesIO(encode_image(INIT, text, fmt, 90))) as im:
        assert im.format == {"png": "PNG", "jpg": "JPEG", "webp": "WEBP"}[fmt]
        assert read_infotext(im) == text


def test_samples_format_and_quality_act_on_saved_images(studio):
    try:
        sizes = {}
        for fmt, quality in (("jpg", 95), ("jpg", 20), ("webp", 80)):
            studio.settings.update({"samples_format": fmt, "jpeg_quality": quality}, save=False)
            g = studio.jobs.run("txt2img", Txt2ImgRequest(**small(save_images=True)), timeout=120).result.images[0]
            assert g.path.suffix == f".{fmt}"
            with Image.open(g.path) as im:
                assert read_infotext(im) == g.infotext
            sizes[(fmt, quality)] = g.path.stat().st_size
        assert sizes[("jpg", 20)] < sizes[("jpg", 95)]
    finally:
        studio.settings.update({"samples_format": "png", "jpeg_quality": 80}, save=False)
    for bad in ({"samples_format": "avif"}, {"jpeg_quality": 0}, {"img2img_fix_steps": "often"}):
        with pytest.raises(InvalidRequest) as err:
            studio.settings.update(bad, save=False)
        assert err.value.field == next(iter(bad))


def _unet_calls(studio, r, kind="img2img") -> int:
    calls = []
    handle = studio.models.active.pipe.unet.register_forward_hook(lambda m, a, o: calls.append(1))
    try:
        job = studio.jobs.run(kind, r, timeout=120)
    finally:
        handle.remove()
    assert job.state == JobState.DONE, job.error
    return len(calls)


def test_img2img_fix_steps_runs_exactly_the_steps_asked(studio):
    r = Img2ImgRequest(init_images=[INIT], denoising_strength=0.5, sampler_name="Euler", **small(steps=6, save_images=False))
    assert _unet_calls(studio, r) == 3  # A1111's default: about steps x denoising
    studio.settings.update({"img2img_fix_steps": True}, save=False)
    try:
        assert _unet_calls(studio, r) == 6
        hires = Txt2ImgRequest(enable_hr=True, hr_scale=1.5, denoising_strength=0.4, sampler_name="Euler",
                               **small(steps=5, save_images=False))
        assert _unet_calls(studio, hires, "txt2img") == 5 + 5  # the hires pass too, as in A1111
    finally:
        studio.settings.update({"img2img_fix_steps": False}, save=False)


def test_send_seed_and_send_size():
    class S:
        send_seed, send_size = True, True

    fields = {"prompt": "a", "seed": 5, "subseed": 6, "subseed_strength": 0.2, "width": 96, "height": 64, "steps": 3}
    assert without_unsent(fields, S()) == fields
    S.send_seed = False
    assert "seed" not in without_unsent(fields, S()) and without_unsent(fields, S())["width"] == 96
    S.send_seed, S.send_size = True, False
    assert "width" not in without_unsent(fields, S()) and without_unsent(fields, S())["seed"] == 5


def test_the_varied_scheduler_adds_the_blended_noise():
    from diffusers import EulerDiscreteScheduler

    base = EulerDiscreteScheduler()
    base.set_timesteps(10)
    plan = SeedPlan([1, 2], [7, 8], 0.4)
    varied = variation.varied(base, plan, range(2))
    varied.set_timesteps(10)
    x, noise, t = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8), base.timesteps[3:4]
    sub = torch.cat([torch.randn((1, 4, 8, 8), generator=torch.Generator().manual_seed(s)) for s in (7, 8)])
    want = base.add_noise(x, torch.cat([slerp(0.4, noise[i:i + 1], sub[i:i + 1]) for i in range(2)]), t)
    assert torch.allclose(varied.add_noise(x, noise, t), want)
    assert isinstance(varied, EulerDiscreteScheduler) and dict(varied.config) == dict(base.config)


@pytest.mark.parametrize("masked", [False, True])
def test_variation_seeds_act_in_img2img_and_inpaint(studio, masked):
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (0, 0, 32, 64))
    extra = {"mask": mask, "mask_blur": 0, "inpainting_fill": 1} if masked else {}

    def run(strength, denoise=0.6, subseed=99):
        r = Img2ImgRequest(init_images=[INIT], denoising_strength=denoise, subseed=subseed, subseed_strength=strength,
                           sampler_name="Euler", **extra, **small(save_images=False))
        job = studio.jobs.run("img2img", r, timeout=120)
        assert job.state == JobState.DONE, job.error
        return job.result.images[0]

    for denoise in (0.6, 1.0):
        plain, half, again = run(0.0, denoise), run(0.5, denoise), run(0.5, denoise)
        other = run(0.5, denoise, subseed=100)
        a = lambda g: np.asarray(g.image).astype(int)  # noqa: E731
        assert not np.array_equal(a(half), a(plain)) and not np.array_equal(a(half), a(other))
        assert np.array_equal(a(half), a(again))  # reproducible from its infotext
        assert "Variation seed: 99" in half.infotext and "Variation seed strength: 0.5" in half.infotext
        if masked:  # outside the mask the picture stays the original
            assert np.abs(a(half)[:, 40:] - np.asarray(INIT).astype(int)[:, 40:]).max() <= 3

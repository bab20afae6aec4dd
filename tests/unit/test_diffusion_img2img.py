"""img2img and inpaint on the demo model: equal to plain diffusers, resize modes, denoising 0, masks that
leave the outside untouched."""
import numpy as np
import pytest
import torch
from PIL import Image, ImageFilter

from modules.diffusion.resize import resize_image
from modules.diffusion.params import Img2ImgRequest
from modules.errors import InvalidRequest
from modules.jobs import JobState
from tests.conftest import make_data_dir
from tests.support import A1111_SAMPLERS, reference_scheduler


@pytest.fixture(scope="module")
def studio(tmp_path_factory, demo_checkpoint):
    from modules.studio import Studio, StudioOptions

    s = Studio(StudioOptions(data_dir=make_data_dir(tmp_path_factory.mktemp("i2i"), demo_checkpoint), device="cpu"))
    s.load()
    assert s.load_error is None, s.load_error
    yield s
    s.shutdown()


@pytest.fixture(scope="module")
def picture():
    return Image.fromarray((np.random.RandomState(0).rand(64, 64, 3) * 255).astype("uint8"))


@pytest.fixture(scope="module")
def mask():
    m = Image.new("L", (64, 64))
    m.paste(255, (24, 24, 40, 40))
    return m


def run(studio, **kw):
    base = dict(prompt="a red cat", steps=4, width=64, height=64, seed=5, save_images=False, denoising_strength=0.8)
    job = studio.jobs.run("img2img", Img2ImgRequest(**{**base, **kw}), timeout=120)
    assert job.state == JobState.DONE, job.error
    return job.result


def px(image):
    return np.asarray(image.convert("RGB")).astype(int)


@pytest.fixture(scope="module")
def plain_img2img(demo_checkpoint):
    """The reference: diffusers' own from_pretrained of the demo folder, nothing of Atelier's in it."""
    from diffusers import StableDiffusionImg2ImgPipeline

    pipe = StableDiffusionImg2ImgPipeline.from_pretrained(str(demo_checkpoint), local_files_only=True,
                                                          safety_checker=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    pipe.folder_scheduler_config = pipe.scheduler.config
    return pipe


@pytest.mark.parametrize("sampler", list(A1111_SAMPLERS))
def test_img2img_equals_plain_diffusers(studio, plain_img2img, picture, sampler):
    ours = run(studio, init_images=[picture], sampler_name=sampler, steps=6, denoising_strength=0.5).images[0].image
    ref = plain_img2img
    ref.scheduler = reference_scheduler(sampler, ref.folder_scheduler_config, seed=5)
    out = ref(prompt="a red cat", image=picture, strength=0.5, num_inference_steps=6, guidance_scale=7.0,
              generator=[torch.Generator("cpu").manual_seed(5)], output_type="np")
    assert np.isfinite(out.images).all(), f"{sampler}: plain diffusers made NaN/inf"
    theirs = px(ref.numpy_to_pil(out.images)[0])
    assert theirs.std() > 5 and not np.array_equal(theirs, px(picture))
    assert np.array_equal(px(ours), theirs), f"{sampler}: differs from plain diffusers by up to " \
                                             f"{np.abs(px(ours) - theirs).max()}"


def test_denoising_zero_returns_the_input(studio, picture):
    out = run(studio, init_images=[picture], denoising_strength=0.0).images[0].image
    assert np.array_equal(px(out), px(picture))


def test_img2img_changes_the_picture_and_is_reproducible(studio, picture):
    a = run(studio, init_images=[picture], denoising_strength=0.5, batch_size=2)
    b = run(studio, init_images=[picture], denoising_strength=0.5, batch_size=2)
    assert not np.array_equal(px(a.images[0].image), px(picture))
    assert np.array_equal(px(a.images[1].image), px(b.images[1].image))
    assert a.info["all_seeds"] == [5, 6] and "Denoising strength: 0.5" in a.images[0].infotext


@pytest.mark.parametrize("mode", [0, 1, 2, 3])
def test_resize_modes_give_the_requested_size(studio, mode):
    wide = Image.new("RGB", (96, 48), (200, 30, 30))
    res = run(studio, init_images=[wide], resize_mode=mode, steps=2, denoising_strength=0.3)
    assert res.images[0].image.size == (64, 64)


def test_resize_mode_geometry():
    wide = Image.new("RGB", (96, 48), (255, 0, 0))
    wide.paste((0, 0, 255), (0, 0, 24, 48))  # blue left quarter
    cropped = resize_image(1, wide, 64, 64)  # crop and resize: covers, the sides are cut
    assert cropped.size == (64, 64) and cropped.getpixel((2, 32))[0] > 200
    filled = resize_image(2, wide, 64, 64)  # resize and fill: fits, bands stretched from the edges
    assert filled.size == (64, 64) and filled.getpixel((40, 2)) == filled.getpixel((40, 20))


@pytest.mark.parametrize("fill", [0, 1, 2, 3])
@pytest.mark.parametrize("full_res", [False, True])
def test_inpaint_leaves_pixels_outside_the_mask_exactly(studio, picture, mask, fill, full_res):
    res = run(studio, init_images=[picture], mask=mask, inpainting_fill=fill, inpaint_full_res=full_res,
              inpaint_full_res_padding=8, mask_blur=2)
    out, orig = px(res.images[0].image), px(picture)
    assert out.shape == orig.shape
    # Every pixel the blurred mask does not touch is the original's, exactly.
    blurred = np.asarray(mask.filter(ImageFilter.GaussianBlur(2)))
    outside = blurred == 0
    assert np.array_equal(out[outside], orig[outside])
    if full_res:
        # "Only masked" works on a crop (blurred mask + padding) and pastes it back: the band between the
        # blurred mask and the crop's edge was re-sampled twice, yet must be exact too.
        ys, xs = np.nonzero(blurred)
        x1, y1, x2, y2 = max(xs.min() - 8, 0), max(ys.min() - 8, 0), min(xs.max() + 9, 64), min(ys.max() + 9, 64)
        band = outside.copy()
        band[:y1], band[y2:], band[:, :x1], band[:, x2:] = False, False, False, False
        assert band.sum() > 200, "the band between the blurred mask and the crop edge is where this test looks"
        assert np.array_equal(out[band], orig[band])
    assert np.abs(out[26:38, 26:38] - orig[26:38, 26:38]).mean() > 5
    assert "Mask blur: 2" in res.images[0].infotext
    if full_res:
        from modules.diffusion import infotext

        fields = infotext.to_request_fields(infotext.parse(res.images[0].infotext))
        assert fields["inpaint_full_res"] and fields["inpaint_full_res_padding"] == 8 and fields["mask_blur"] == 2


def test_inverted_rgba_mask(studio, picture, mask):
    rgba = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    rgba.putalpha(mask)  # the mask travels as alpha, as painted masks do
    res = run(studio, init_images=[picture], mask=rgba, inpainting_mask_invert=1, mask_blur=0)
    out, orig = px(res.images[0].image), px(picture)
    assert np.array_equal(out[24:40, 24:40], orig[24:40, 24:40])  # now the square is what is kept
    assert np.abs(out[:16] - orig[:16]).mean() > 5


def test_a_mask_of_another_shape_is_refused(studio, picture):
    with pytest.raises(InvalidRequest) as err:
        studio.submit("img2img", Img2ImgRequest(init_images=[picture], mask=Image.new("L", (64, 32)), width=64, height=64))
    assert err.value.field == "mask"


def test_inpaint_is_saved_under_img2img_outputs(studio, picture, mask):
    res = run(studio, init_images=[picture], mask=mask, save_images=True)
    path = res.images[0].path
    assert path.exists() and "img2img" in str(path.relative_to(studio.paths.outputs))

"""Flux.1 and SD3 checkpoints (tiny random-weight diffusers folders from the real classes, modules/models/demo_flow.py)
load through the model manager like any checkpoint, and txt2img through the studio's job equals the plain
diffusers pipeline on the same folder and seed; what they cannot do yet is refused by its field."""
from __future__ import annotations

import numpy as np
import pytest

from modules.models.demo import DEMO_NAME

FLUX, SD3 = "tiny-flux-dev", "tiny-sd3"


@pytest.fixture(scope="module")
def studio(tmp_path_factory, demo_checkpoint):
    from modules.models.demo_flow import save_demo_flow
    from modules.studio import Studio, StudioOptions
    from tests.conftest import make_data_dir

    data = make_data_dir(tmp_path_factory.mktemp("flow-data"), demo_checkpoint)
    save_demo_flow(data / "models" / "Stable-diffusion" / FLUX, "flux", seed=1)
    save_demo_flow(data / "models" / "Stable-diffusion" / SD3, "sd3", seed=2)
    s = Studio(StudioOptions(data_dir=data, device="cpu", build_demo=False))
    s.load()
    assert s.load_error is None, s.load_error
    yield s
    s.shutdown()


def _job(studio, kind="txt2img", **fields):
    from modules.diffusion.params import Img2ImgRequest, Txt2ImgRequest

    body = {"prompt": "a red fox", "steps": 3, "width": 64, "height": 64, "seed": 5, "sampler_name": "Euler",
            "save_images": False, **fields}
    request = (Txt2ImgRequest if kind == "txt2img" else Img2ImgRequest)(**body)
    return studio.jobs.run(kind, request, timeout=300)


def _image(studio, checkpoint, **fields):
    job = _job(studio, override_settings={"sd_model_checkpoint": checkpoint}, **fields)
    job.raise_for_error()
    generated = job.result.images[0]
    return np.asarray(generated.image.convert("RGB")), generated.infotext


def _plain(studio, checkpoint, prompt="a red fox", **kwargs):
    import torch
    from diffusers import DiffusionPipeline

    folder = studio.registry.get("checkpoint", checkpoint).path
    pipe = DiffusionPipeline.from_pretrained(str(folder), local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    out = pipe(prompt, num_inference_steps=3, height=64, width=64, generator=torch.Generator().manual_seed(5), **kwargs)
    return np.asarray(out.images[0].convert("RGB"))


def test_flux_and_sd3_folders_are_listed_with_their_architecture(studio):
    assert studio.registry.get("checkpoint", FLUX).arch == "flux"
    assert studio.registry.get("checkpoint", SD3).arch == "sd3"


def test_flux_txt2img_equals_plain_diffusers_with_distilled_guidance_and_true_cfg(studio):
    ours, info = _image(studio, FLUX, cfg_scale=1, distilled_cfg_scale=2.5)
    assert np.array_equal(ours, _plain(studio, FLUX, guidance_scale=2.5))
    assert "Distilled CFG Scale: 2.5" in info and "Sampler: Euler" in info
    # cfg_scale above 1 is true CFG with the negative prompt (Forge's mapping): 2 passes a step, another image.
    cfg, _ = _image(studio, FLUX, cfg_scale=3, negative_prompt="blurry")
    assert np.array_equal(cfg, _plain(studio, FLUX, guidance_scale=3.5, true_cfg_scale=3, negative_prompt="blurry"))
    assert not np.array_equal(cfg, ours)


def test_sd3_txt2img_equals_plain_diffusers(studio):
    ours, info = _image(studio, SD3, cfg_scale=4, negative_prompt="dark")
    assert np.array_equal(ours, _plain(studio, SD3, guidance_scale=4, negative_prompt="dark"))
    assert "Distilled CFG Scale" not in info


@pytest.mark.parametrize("checkpoint,guidance", [(FLUX, {"guidance_scale": 3.5}), (SD3, {"guidance_scale": 1})])
def test_hires_fix_equals_plain_diffusers_first_pass_latents_upscaled_and_denoised(studio, checkpoint, guidance):
    import diffusers
    import torch
    import torch.nn.functional as F

    ours, info = _image(studio, checkpoint, cfg_scale=1, enable_hr=True, hr_scale=1.5, hr_upscaler="Latent",
                        denoising_strength=0.6, hr_second_pass_steps=3)
    assert ours.shape == (96, 96, 3) and "Hires upscale: 1.5" in info
    folder = studio.registry.get("checkpoint", checkpoint).path
    pipe = diffusers.DiffusionPipeline.from_pretrained(str(folder), local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    latents = pipe("a red fox", num_inference_steps=3, height=64, width=64, generator=torch.Generator().manual_seed(5),
                   output_type="latent", **guidance).images
    if checkpoint == FLUX:
        latents = pipe._unpack_latents(latents, 64, 64, pipe.vae_scale_factor)
    image = F.interpolate(latents, size=(12, 12), mode="bilinear", antialias=False)  # A1111's "Latent"
    second = diffusers.AutoPipelineForImage2Image.from_pipe(pipe)
    plain = second("a red fox", image=image, strength=0.6, num_inference_steps=3, height=96, width=96,
                   generator=torch.Generator().manual_seed(5), **guidance).images[0]
    assert np.array_equal(ours, np.asarray(plain.convert("RGB")))


def test_emphasis_markup_is_taken_out_of_the_text_for_t5(studio):
    plain, _ = _image(studio, SD3, cfg_scale=1)
    marked, _ = _image(studio, SD3, cfg_scale=1, prompt="(a red:1.3) [fox]")
    assert np.array_equal(plain, marked)


def test_a_long_prompt_reaches_t5_whole(studio):
    # 300 tokens for the demo T5 (one per character): CLIP's 75-token chunks would cut or split it; T5 reads it
    # whole, as plain diffusers' pipeline does, and a change at its end still changes the picture.
    long = "a red fox in a snowy forest at dawn, " * 8
    ours, _ = _image(studio, FLUX, cfg_scale=1, prompt=long)
    assert np.array_equal(ours, _plain(studio, FLUX, prompt=long, guidance_scale=3.5))
    changed, _ = _image(studio, FLUX, cfg_scale=1, prompt=long + "blue")
    assert not np.array_equal(ours, changed)


def test_the_infotext_round_trips_distilled_guidance(studio):
    from modules.diffusion.infotext import parse, to_request_fields

    _, info = _image(studio, FLUX, cfg_scale=1, distilled_cfg_scale=4)
    assert to_request_fields(parse(info))["distilled_cfg_scale"] == 4.0  # PNG Info → send to txt2img


@pytest.mark.parametrize("fields,field", [
    ({"sampler_name": "Euler a"}, "sampler_name"),
    ({"scheduler": "SGM Uniform"}, "scheduler"),
    ({"enable_hr": True, "hr_scale": 1.4}, "hr_scale"),  # 88 px: 8 off the 16 grid
    ({"width": 72}, "width"),
    ({"tiling": True}, "tiling"),
    ({"prompt": "a [fox:cat:2]"}, "prompt"),  # Flux's loop takes no pooled embeddings back per step
    ({"prompt": "a [fox|cat]"}, "prompt"),
])
def test_what_flux_cannot_do_yet_is_refused_by_field(studio, fields, field):
    job = _job(studio, override_settings={"sd_model_checkpoint": FLUX}, **fields)
    assert job.state.value == "failed" and 400 <= job.error_status < 500, job.error
    assert job.error_field == field, (job.error_field, job.error)


def test_distilled_guidance_is_refused_where_there_is_none(studio):
    for checkpoint in (SD3, DEMO_NAME):
        job = _job(studio, distilled_cfg_scale=2, override_settings={"sd_model_checkpoint": checkpoint})
        assert job.state.value == "failed" and job.error_field == "distilled_cfg_scale", (checkpoint, job.error)


def _gradient():
    from PIL import Image

    img = Image.new("RGB", (64, 64))
    img.putdata([(x * 4, y * 4, 128) for y in range(64) for x in range(64)])
    return img


def _half_mask():
    from PIL import Image, ImageDraw

    mask = Image.new("L", (64, 64), 0)
    ImageDraw.Draw(mask).rectangle((0, 0, 31, 63), fill=255)
    return mask


def _plain_mode(studio, checkpoint, cls_name, **kwargs):
    import diffusers
    import torch

    folder = studio.registry.get("checkpoint", checkpoint).path
    pipe = getattr(diffusers, cls_name).from_pretrained(str(folder), local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    out = pipe("a red fox", height=64, width=64, generator=torch.Generator().manual_seed(5), **kwargs)
    return out.images[0].convert("RGB")


@pytest.mark.parametrize("checkpoint,cls_name,ours,theirs", [
    (FLUX, "FluxImg2ImgPipeline", {"cfg_scale": 1}, {"guidance_scale": 3.5}),
    (SD3, "StableDiffusion3Img2ImgPipeline", {"cfg_scale": 4}, {"guidance_scale": 4}),
])
def test_img2img_equals_plain_diffusers(studio, checkpoint, cls_name, ours, theirs):
    init = _gradient()
    made = _job(studio, "img2img", init_images=[init], denoising_strength=0.6, steps=4,
                override_settings={"sd_model_checkpoint": checkpoint}, **ours)
    made.raise_for_error()
    plain = _plain_mode(studio, checkpoint, cls_name, image=init, strength=0.6, num_inference_steps=4, **theirs)
    assert np.array_equal(np.asarray(made.result.images[0].image.convert("RGB")), np.asarray(plain))


def test_flux_inpaint_keeps_every_pixel_outside_the_mask_and_equals_plain_diffusers_inside(studio):
    from PIL import Image

    init, mask = _gradient(), _half_mask()
    made = _job(studio, "img2img", init_images=[init], mask=mask, mask_blur=0, inpainting_fill=1,
                denoising_strength=0.8, steps=4, cfg_scale=1, override_settings={"sd_model_checkpoint": FLUX})
    made.raise_for_error()
    ours = np.asarray(made.result.images[0].image.convert("RGB"))
    plain = _plain_mode(studio, FLUX, "FluxInpaintPipeline", image=init, mask_image=mask, strength=0.8,
                        num_inference_steps=4, guidance_scale=3.5)
    assert np.array_equal(ours, np.asarray(Image.composite(plain, init, mask)))
    assert np.array_equal(ours[:, 32:], np.asarray(init)[:, 32:]) and not np.array_equal(ours[:, :32], np.asarray(init)[:, :32])


def test_variation_seeds_reach_flow_img2img(studio):
    fields = {"init_images": [_gradient()], "denoising_strength": 0.6, "steps": 4, "cfg_scale": 1,
              "override_settings": {"sd_model_checkpoint": FLUX}}
    base = _job(studio, "img2img", **fields)
    varied = _job(studio, "img2img", subseed=9, subseed_strength=0.5, **fields)
    again = _job(studio, "img2img", subseed=9, subseed_strength=0.5, **fields)
    images = [np.asarray(j.result.images[0].image) for j in (base, varied, again)]
    assert not np.array_equal(images[0], images[1]) and np.array_equal(images[1], images[2])


def _plain_latents(pipe, image, generator=None):
    """What plain diffusers' VAE makes of `image`: sampled with `generator` (default seed 5), shifted and scaled as
    the pipelines do."""
    import torch

    pixels = pipe.image_processor.preprocess(image)
    latents = pipe.vae.encode(pixels).latent_dist.sample(generator=generator or torch.Generator().manual_seed(5))
    return (latents - pipe.vae.config.shift_factor) * pipe.vae.config.scaling_factor


@pytest.mark.parametrize("checkpoint,cls_name,ours,theirs", [
    (FLUX, "FluxImg2ImgPipeline", {"cfg_scale": 1}, {"guidance_scale": 3.5}),
    (SD3, "StableDiffusion3Img2ImgPipeline", {"cfg_scale": 4}, {"guidance_scale": 4}),
])
def test_img2img_latent_upscale_equals_plain_diffusers_on_the_resized_latents(studio, checkpoint, cls_name, ours, theirs):
    import diffusers
    import torch
    import torch.nn.functional as F

    made = _job(studio, "img2img", init_images=[_gradient()], resize_mode=3, width=96, height=96, denoising_strength=0.6,
                steps=4, override_settings={"sd_model_checkpoint": checkpoint}, **ours)
    made.raise_for_error()
    pipe = getattr(diffusers, cls_name).from_pretrained(str(studio.registry.get("checkpoint", checkpoint).path),
                                                         local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    with torch.no_grad():
        latents = F.interpolate(_plain_latents(pipe, _gradient()), size=(12, 12), mode="bilinear")  # 64 → 96 px
    plain = pipe("a red fox", image=latents, strength=0.6, num_inference_steps=4, height=96, width=96,
                 generator=torch.Generator().manual_seed(5), **theirs).images[0]
    assert np.array_equal(np.asarray(made.result.images[0].image.convert("RGB")), np.asarray(plain.convert("RGB")))


def test_flux_inpaint_latent_nothing_equals_plain_diffusers_and_latent_noise_keeps_the_outside(studio):
    import torch
    from diffusers import FluxInpaintPipeline
    from PIL import Image

    init, mask = _gradient(), _half_mask()
    # strength 0.5 of 4 steps starts at sigma 0.6 (0.8 would start at 1: pure noise, the latents under the mask unread)
    fields = {"init_images": [init], "mask": mask, "mask_blur": 0, "denoising_strength": 0.5, "steps": 4,
              "cfg_scale": 1, "override_settings": {"sd_model_checkpoint": FLUX}}
    images = {}
    for fill in (1, 2, 3):
        job = _job(studio, "img2img", inpainting_fill=fill, **fields)
        job.raise_for_error()
        images[fill] = np.asarray(job.result.images[0].image.convert("RGB"))
        assert np.array_equal(images[fill][:, 32:], np.asarray(init)[:, 32:]), fill  # outside the mask: the original
    for a, b in ((1, 2), (1, 3), (2, 3)):
        assert not np.array_equal(images[a][:, :32], images[b][:, :32]), (a, b)
    pipe = FluxInpaintPipeline.from_pretrained(str(studio.registry.get("checkpoint", FLUX).path), local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    gen = torch.Generator().manual_seed(5)  # one generator: the encode's draw, then the pipeline's noise
    with torch.no_grad():
        latents = _plain_latents(pipe, init, gen)
        keep = 1 - torch.nn.functional.interpolate(torch.from_numpy(np.asarray(mask, dtype=np.float32) / 255)[None, None],
                                                   size=latents.shape[-2:], mode="bilinear").round()
        nothing = latents * keep  # A1111's latent nothing: zeros under the mask
    plain = pipe("a red fox", image=nothing, mask_image=mask, masked_image_latents=nothing, strength=0.5, height=64,
                 width=64, num_inference_steps=4, guidance_scale=3.5, generator=gen).images[0]
    assert np.array_equal(images[3], np.asarray(Image.composite(plain.convert("RGB"), init, mask)))


@pytest.mark.parametrize("fields,field", [
    ({"mask": "half", "subseed": 3, "subseed_strength": 0.5, "denoising_strength": 1.0}, "subseed_strength"),
])
def test_what_flow_img2img_cannot_do_yet_is_refused_by_field(studio, fields, field):
    if fields.get("mask") == "half":
        fields = {**fields, "mask": _half_mask()}
    job = _job(studio, "img2img", **{"init_images": [_gradient()], "denoising_strength": 0.6, **fields},
               override_settings={"sd_model_checkpoint": SD3})
    assert job.state.value == "failed" and job.error_field == field, (job.error_field, job.error)


@pytest.mark.parametrize("fill", [2, 3])
def test_sd3_inpaint_latent_noise_and_nothing_keep_the_outside_and_change_the_inside(studio, fill):
    init = _gradient()
    fields = {"init_images": [init], "mask": _half_mask(), "mask_blur": 0, "denoising_strength": 0.5, "steps": 4,
              "cfg_scale": 4, "override_settings": {"sd_model_checkpoint": SD3}}
    original = _job(studio, "img2img", inpainting_fill=1, **fields)
    filled = _job(studio, "img2img", inpainting_fill=fill, **fields)
    filled.raise_for_error()
    ours, base = (np.asarray(j.result.images[0].image.convert("RGB")) for j in (filled, original))
    assert np.array_equal(ours[:, 32:], np.asarray(init)[:, 32:]) and not np.array_equal(ours[:, :32], base[:, :32])


def test_sd3_prompt_editing_and_alternation_change_the_image_and_a_late_edit_is_the_plain_prompt(studio):
    args = {"cfg_scale": 4, "negative_prompt": "dark"}
    plain, _ = _image(studio, SD3, prompt="a red fox", **args)
    assert np.array_equal(plain, _plain(studio, SD3, guidance_scale=4, negative_prompt="dark"))
    edited, info = _image(studio, SD3, prompt="[a red fox:a blue bird:1]", **args)
    assert not np.array_equal(edited, plain) and "[a red fox:a blue bird:1]" in info
    # The edit after the last of 3 steps: every step has the plain prompt, the embeddings of the pipeline's own.
    late, _ = _image(studio, SD3, prompt="[a red fox:a blue bird:10]", **args)
    assert np.array_equal(late, plain)
    alternated, _ = _image(studio, SD3, prompt="a [red|blue] fox", **args)
    assert not np.array_equal(alternated, plain)
    assert not np.array_equal(alternated, _image(studio, SD3, prompt="a blue fox", **args)[0])
    # The negative prompt is scheduled too.
    negative, _ = _image(studio, SD3, prompt="a red fox", cfg_scale=4, negative_prompt="[dark:bright:1]")
    assert not np.array_equal(negative, plain)

"""txt2img on the demo model: equal to plain diffusers, seeds, hires fix, hooks, interrupt/skip, refusals."""
import threading

import numpy as np
import pytest
import torch

from modules.diffusion import infotext
from modules.diffusion.params import Txt2ImgRequest
from modules.errors import InvalidRequest
from modules.jobs import JobState
from tests.conftest import make_data_dir


@pytest.fixture(scope="module")
def studio(tmp_path_factory, demo_checkpoint):
    from modules.studio import Studio, StudioOptions

    s = Studio(StudioOptions(data_dir=make_data_dir(tmp_path_factory.mktemp("gen"), demo_checkpoint), device="cpu"))
    s.load()
    assert s.load_error is None, s.load_error
    yield s
    s.shutdown()


def req(**kw) -> Txt2ImgRequest:
    base = dict(prompt="a red cat", negative_prompt="blurry", steps=6, width=64, height=64, seed=1234, save_images=False)
    return Txt2ImgRequest(**{**base, **kw})


def run(studio, r):
    job = studio.jobs.run("txt2img", r, timeout=120)
    assert job.state in (JobState.DONE, JobState.INTERRUPTED), job.error
    return job


def pixels(generated):
    return np.asarray(generated.image).astype(int)


@pytest.mark.parametrize("sampler,cls,opts", [
    ("Euler a", "EulerAncestralDiscreteScheduler", {}),
    ("Euler", "EulerDiscreteScheduler", {}),
    ("DPM++ 2M Karras", "DPMSolverMultistepScheduler", {"use_karras_sigmas": True, "algorithm_type": "dpmsolver++"}),
])
def test_txt2img_equals_plain_diffusers(studio, sampler, cls, opts):
    import diffusers

    job = run(studio, req(sampler_name=sampler, batch_size=2))
    pipe = studio.models.active.pipe
    plain = diffusers.StableDiffusionPipeline(**pipe.components, requires_safety_checker=False)
    plain.set_progress_bar_config(disable=True)
    plain.scheduler = getattr(diffusers, cls).from_config(pipe.scheduler.config, **opts)
    out = plain(prompt=["a red cat"] * 2, negative_prompt=["blurry"] * 2, num_inference_steps=6, guidance_scale=7.0,
                width=64, height=64, generator=[torch.Generator("cpu").manual_seed(s) for s in (1234, 1235)])
    for ours, theirs in zip(job.result.images, out.images):
        assert np.abs(pixels(ours) - np.asarray(theirs).astype(int)).max() <= 1


def test_seeds_batches_and_info(studio):
    job = run(studio, req(batch_size=2, n_iter=2, seed=10))
    info = job.result.info
    assert info["all_seeds"] == [10, 11, 12, 13] and info["seed"] == 10
    assert [g.seed for g in job.result.images] == [10, 11, 12, 13]
    for key in ("prompt", "all_prompts", "negative_prompt", "all_negative_prompts", "subseed", "all_subseeds",
                "subseed_strength", "width", "height", "sampler_name", "cfg_scale", "steps", "batch_size",
                "sd_model_name", "sd_model_hash", "denoising_strength", "clip_skip", "infotexts",
                "index_of_first_image", "job_timestamp"):
        assert key in info, key
    assert len(info["infotexts"]) == 4 and "Seed: 12" in info["infotexts"][2]
    random_job = run(studio, req(seed=-1, batch_size=2))
    s = random_job.result.info["all_seeds"]
    assert s[0] >= 0 and s[1] == s[0] + 1
    # image i of a batch is the picture of seed+i alone (batched float math may differ in the last bit)
    assert np.abs(pixels(run(studio, req(seed=11)).result.images[0]) - pixels(job.result.images[1])).max() <= 2


def test_variation_seed(studio):
    sampler = dict(sampler_name="Euler")
    plain = pixels(run(studio, req(seed=5, **sampler)).result.images[0])
    of_subseed = pixels(run(studio, req(seed=99, **sampler)).result.images[0])
    at0 = pixels(run(studio, req(seed=5, subseed=99, subseed_strength=0.0, **sampler)).result.images[0])
    at1 = pixels(run(studio, req(seed=5, subseed=99, subseed_strength=1.0, **sampler)).result.images[0])
    half = run(studio, req(seed=5, subseed=99, subseed_strength=0.5, **sampler)).result.images[0]
    assert np.array_equal(at0, plain)
    assert np.abs(at1 - of_subseed).max() <= 1
    assert not np.array_equal(pixels(half), plain) and not np.array_equal(pixels(half), of_subseed)
    parsed = infotext.parse(half.infotext)
    assert parsed["Variation seed"] == "99" and parsed["Variation seed strength"] == "0.5"


def test_infotext_of_a_real_job_round_trips(studio):
    r = req(sampler_name="DPM++ 2M Karras", clip_skip=2, cfg_scale=6.5, enable_hr=True, hr_scale=1.5,
            hr_second_pass_steps=3, hr_upscaler="Latent (nearest)", denoising_strength=0.6, seed=77)
    g = run(studio, r).result.images[0]
    assert g.image.size == (96, 96)
    parsed = infotext.parse(g.infotext)
    fields = infotext.to_request_fields(parsed)
    assert fields["sampler_name"] == "DPM++ 2M" and fields["scheduler"] == "Karras"
    for name in ("prompt", "negative_prompt", "steps", "cfg_scale", "seed", "width", "height", "clip_skip",
                 "hr_scale", "hr_second_pass_steps", "hr_upscaler", "denoising_strength"):
        assert fields[name] == getattr(r, name), name
    assert parsed["Version"] == "atelier" and parsed["Model"] == studio.models.active.entry.stem
    # the parsed fields make the same picture again
    again = run(studio, Txt2ImgRequest(**{**fields, "save_images": False, "override_settings": {}}))
    assert np.array_equal(pixels(again.result.images[0]), pixels(g))


@pytest.mark.parametrize("upscaler", ["Latent", "Latent (bicubic antialiased)", "Lanczos", "Nearest", "None"])
def test_hires_fix_upscalers(studio, upscaler):
    job = run(studio, req(steps=3, enable_hr=True, hr_upscaler=upscaler, hr_resize_x=96, hr_resize_y=80))
    assert job.result.images[0].image.size == (96, 80)
    assert job.progress.parts == 2 and job.progress.part == 1  # the hires pass is the second part


def test_hooks_change_the_request_and_post_process_before_saving(studio):
    from PIL import ImageOps

    saved = []
    studio.hooks.add("before_generate", lambda r: r.model_copy(update={"prompt": "a blue dog"}), owner="t")
    studio.hooks.add("after_generate", lambda res: [setattr(g, "image", ImageOps.invert(g.image)) for g in res.images] and None,
                     owner="t")
    studio.hooks.add("on_image_saved", saved.append, owner="t")
    try:
        job = run(studio, req(save_images=True, seed=3))
    finally:
        studio.hooks.remove_owner("t")
    g = job.result.images[0]
    assert g.infotext.startswith("a blue dog")
    assert saved == [g] and g.path.exists()
    from PIL import Image

    with Image.open(g.path) as im:
        assert np.array_equal(np.asarray(im.convert("RGB")), np.asarray(g.image))
    plain = run(studio, req(prompt="a blue dog", seed=3)).result.images[0]
    assert np.array_equal(np.asarray(g.image), 255 - np.asarray(plain.image))


def _watch(job, when, action):
    """Call action() once `when(progress)` holds; return the step seen right after acting."""
    seen = {}

    def loop():
        version = -1
        while not job.state.finished:
            version = job.wait_for_change(version, 1.0)
            if when(job.progress):
                action()
                seen["step"], seen["part"] = job.progress.step, job.progress.part
                return

    t = threading.Thread(target=loop)
    t.start()
    return t, seen


def test_interrupt_stops_within_a_step_and_keeps_finished_images(studio):
    job = studio.submit("txt2img", req(steps=40, n_iter=3, seed=50, sampler_name="Euler"))
    t, seen = _watch(job, lambda p: p.part == 1 and p.step >= 3, lambda: studio.jobs.interrupt(job.id))
    job.wait(120)
    t.join(5)
    assert job.state == JobState.INTERRUPTED and job.result.interrupted
    assert job.progress.part == 1 and job.progress.step <= seen["step"] + 1
    images = job.result.images
    assert len(images) == 2  # the finished first batch and the interrupted one, decoded
    full = run(studio, req(steps=40, seed=50, sampler_name="Euler")).result.images[0]
    assert np.array_equal(pixels(images[0]), pixels(full))


def test_skip_finishes_the_current_batch_early_and_goes_on(studio):
    job = studio.submit("txt2img", req(steps=40, n_iter=2, seed=60, sampler_name="Euler"))
    t, seen = _watch(job, lambda p: p.part == 0 and p.step >= 3, lambda: studio.jobs.skip(job.id))
    job.wait(120)
    t.join(5)
    assert job.state == JobState.DONE
    images = job.result.images
    assert [g.seed for g in images] == [60, 61]
    full60 = run(studio, req(steps=40, seed=60, sampler_name="Euler")).result.images[0]
    full61 = run(studio, req(steps=40, seed=61, sampler_name="Euler")).result.images[0]
    assert not np.array_equal(pixels(images[0]), pixels(full60))  # cut short
    assert np.array_equal(pixels(images[1]), pixels(full61))  # the next batch ran whole


def test_progress_every_step_and_preview_every_n_steps(studio):
    studio.settings.update({"show_progress_every_n_steps": 2}, save=False)
    steps = []
    job = studio.submit("txt2img", req(steps=6))
    t, _ = _watch(job, lambda p: steps.append(p.step) or p.step >= 6, lambda: None)
    job.wait(60)
    t.join(5)
    assert job.progress.step == 6 and job.progress.total == 6
    latent_side = 64 // studio.models.active.pipe.vae_scale_factor
    assert job.preview is not None and job.preview.size == (latent_side, latent_side)  # latent size: no VAE decode
    studio.settings.update({"show_progress_every_n_steps": 0}, save=False)
    off = studio.submit("txt2img", req(steps=4)).wait(60)
    assert off.preview is None


def test_bad_parameters_are_refused_before_queueing(studio):
    cases = [(dict(sampler_name="Euler z"), "sampler_name"), (dict(scheduler="Karras", sampler_name="Euler a"), "scheduler"),
             (dict(scheduler="Sideways"), "scheduler"), (dict(enable_hr=True, hr_upscaler="ESRGAN_9x"), "hr_upscaler"),
             (dict(prompt="<lora:x:strong>"), "prompt")]
    for fields, field in cases:
        pending = len(studio.jobs._jobs)
        with pytest.raises(InvalidRequest) as err:
            studio.submit("txt2img", req(**fields))
        assert err.value.field == field
        assert len(studio.jobs._jobs) == pending  # nothing was queued
    job = studio.jobs.run("txt2img", req(clip_skip=12), timeout=60)  # depends on the model: refused by the job
    assert job.state == JobState.FAILED and job.error_field == "clip_skip" and job.error_status == 422


def test_an_unknown_lora_is_an_error_never_a_silent_no_op(studio):
    job = studio.jobs.run("txt2img", req(prompt="a cat <lora:no-such-lora:0.7>"), timeout=60)
    assert job.state == JobState.FAILED and 400 <= job.error_status < 500
    assert "no-such-lora" in job.error


def test_hires_pass_sampler_and_prompt(studio):
    r = req(steps=3, enable_hr=True, hr_scale=1.5, hr_sampler_name="DPM++ 2M", hr_scheduler="Karras",
            hr_prompt="a red cat, sharp", seed=8)
    g = run(studio, r).result.images[0]
    fields = infotext.to_request_fields(infotext.parse(g.infotext))
    assert (fields["hr_sampler_name"], fields["hr_scheduler"], fields["hr_prompt"]) == ("DPM++ 2M", "Karras", "a red cat, sharp")
    same = run(studio, req(steps=3, enable_hr=True, hr_scale=1.5, seed=8)).result.images[0]
    assert "Hires sampler" not in same.infotext
    assert not np.array_equal(pixels(g), pixels(same))
    with pytest.raises(InvalidRequest) as err:
        studio.submit("txt2img", req(enable_hr=True, hr_sampler_name="Nope"))
    assert err.value.field == "hr_sampler_name"


def test_lora_tags_in_the_prompt_apply_the_lora_and_are_recorded(studio):
    from tests.fixtures_models import save_demo_lora

    save_demo_lora(studio.paths.model_dir("lora") / "grain.safetensors", "kohya", seed=1, alpha=4.0, rank=4)
    studio.registry.refresh("lora")
    base = run(studio, req(prompt="a red cat", seed=21)).result.images[0]
    on = run(studio, req(prompt="a red cat <lora:grain:1>", seed=21)).result.images[0]
    zero = run(studio, req(prompt="a red cat <lora:grain:0>", seed=21)).result.images[0]
    assert not np.array_equal(pixels(on), pixels(base))
    assert np.array_equal(pixels(zero), pixels(base))  # weight 0, and the tag never reaches the text encoder
    parsed = infotext.parse(on.infotext)
    assert parsed["Prompt"] == "a red cat <lora:grain:1>"  # the infotext keeps the tag, as A1111 does
    hashes = infotext.parse_lora_hashes(parsed["Lora hashes"])
    assert list(hashes) == ["grain"] and len(hashes["grain"]) == 10
    after = run(studio, req(prompt="a red cat", seed=21)).result.images[0]
    assert np.array_equal(pixels(after), pixels(base))

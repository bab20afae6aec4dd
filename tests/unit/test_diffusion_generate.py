"""txt2img on the demo model: equal to plain diffusers, seeds, hires fix, hooks, interrupt/skip, refusals."""
import threading
import time

import numpy as np
import pytest
import torch

from modules.diffusion import infotext
from modules.diffusion.params import Txt2ImgRequest
from modules.errors import InvalidRequest
from modules.jobs import JobState
from tests.conftest import make_data_dir
from tests.support import A1111_SAMPLERS, reference_scheduler


@pytest.fixture(scope="module")
def studio(tmp_path_factory, demo_checkpoint):
    from modules.studio import Studio, StudioOptions

    s = Studio(StudioOptions(data_dir=make_data_dir(tmp_path_factory.mktemp("gen"), demo_checkpoint), device="cpu"))
    s.load()
    assert s.load_error is None, s.load_error
    yield s
    s.shutdown()


@pytest.fixture(scope="module")
def plain_diffusers(demo_checkpoint):
    """The reference: diffusers' own from_pretrained of the demo folder, nothing of Atelier's in it."""
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(str(demo_checkpoint), local_files_only=True, safety_checker=None,
                                                   requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    pipe.folder_scheduler_config = pipe.scheduler.config  # each test sets its own scheduler from this one
    return pipe


def req(**kw) -> Txt2ImgRequest:
    base = dict(prompt="a red cat", negative_prompt="blurry", steps=6, width=64, height=64, seed=1234, save_images=False)
    return Txt2ImgRequest(**{**base, **kw})


def run(studio, r):
    job = studio.jobs.run("txt2img", r, timeout=120)
    assert job.state in (JobState.DONE, JobState.INTERRUPTED), job.error
    return job


def pixels(generated):
    return np.asarray(generated.image).astype(int)


@pytest.mark.parametrize("sampler", list(A1111_SAMPLERS))
def test_txt2img_equals_plain_diffusers(studio, plain_diffusers, sampler):
    """Every sampler, a batch of two: the very pixels plain diffusers makes (the CPU path is deterministic)."""
    job = run(studio, req(sampler_name=sampler, batch_size=2))
    ref = plain_diffusers
    ref.scheduler = reference_scheduler(sampler, ref.folder_scheduler_config, seed=1234)
    out = ref(prompt=["a red cat"] * 2, negative_prompt=["blurry"] * 2, num_inference_steps=6, guidance_scale=7.0,
              width=64, height=64, generator=[torch.Generator("cpu").manual_seed(s) for s in (1234, 1235)],
              output_type="np")
    assert np.isfinite(out.images).all(), f"{sampler}: plain diffusers made NaN/inf"
    for ours, theirs in zip(job.result.images, ref.numpy_to_pil(out.images)):
        theirs = np.asarray(theirs).astype(int)
        assert theirs.std() > 5, f"{sampler}: a flat picture says nothing"
        assert np.array_equal(pixels(ours), theirs), \
            f"{sampler}: differs from plain diffusers by up to {np.abs(pixels(ours) - theirs).max()}"


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


PIXEL_UPSCALERS = {"Lanczos": "LANCZOS", "Nearest": "NEAREST", "None": "LANCZOS"}  # A1111's plain resizes


@pytest.mark.parametrize("upscaler", ["Latent", "Latent (bicubic antialiased)", "Lanczos", "Nearest", "None"])
def test_hires_fix_upscalers(studio, upscaler):
    from PIL import Image

    # 6 steps: diffusers' img2img runs the last int(6 * 0.6) of them, from a real noise level (with 3 steps it
    # would run one step at almost no noise, which changes next to nothing).
    r = req(enable_hr=True, hr_upscaler=upscaler, hr_resize_x=96, hr_resize_y=80, denoising_strength=0.6)
    job = run(studio, r)
    hires = pixels(job.result.images[0])
    assert hires.shape == (80, 96, 3)
    # The same first pass, upscaled and not denoised again (denoising 0): the hires pass must change it.
    upscaled = pixels(run(studio, r.model_copy(update={"denoising_strength": 0.0})).result.images[0])
    assert upscaled.shape == hires.shape
    assert np.abs(hires - upscaled).mean() > 5, "the hires pass left the upscaled first pass as it was"
    assert job.progress.parts == 2 and job.progress.part == 1  # the hires pass is the second part
    if upscaler in PIXEL_UPSCALERS:  # and the upscale is the one named: the first pass resized by PIL
        first = run(studio, req()).result.images[0].image
        resized = first.resize((96, 80), getattr(Image.Resampling, PIXEL_UPSCALERS[upscaler]))
        assert np.array_equal(upscaled, np.asarray(resized).astype(int)), f"{upscaler} is not the upscale used"


def test_latent_upscale_modes_differ(studio):
    made = {mode: pixels(run(studio, req(steps=3, enable_hr=True, hr_upscaler=mode, hr_scale=1.5,
                                         denoising_strength=0.0)).result.images[0])
            for mode in ("Latent", "Latent (nearest)", "Latent (bicubic antialiased)")}
    assert not np.array_equal(made["Latent"], made["Latent (nearest)"])
    assert not np.array_equal(made["Latent"], made["Latent (bicubic antialiased)"])


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


def _watch(job, when, action, timeout: float = 120):
    """Call action() once `when(progress)` holds; return the step seen right after acting."""
    seen = {}

    def loop():
        version = -1
        deadline = time.monotonic() + timeout
        while not job.state.finished and time.monotonic() < deadline:
            version = job.wait_for_change(version, 1.0)
            if when(job.progress):
                action()
                seen["step"], seen["part"] = job.progress.step, job.progress.part
                return

    t = threading.Thread(target=loop, daemon=True)
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


class RecordingContext:
    """The job's own context, recording each progress report and preview the generator makes through it."""

    def __init__(self, ctx):
        self._ctx = ctx
        self.steps: list[tuple] = []
        self.previews: list[tuple] = []

    def __getattr__(self, name):
        return getattr(self._ctx, name)

    def progress(self, step, total, part=None, text=None):
        self.steps.append((part, step, total))
        self._ctx.progress(step, total, part=part, text=text)

    def preview(self, image):
        self.previews.append((self._ctx.job.progress.step, image.size))
        self._ctx.preview(image)


def test_progress_every_step_and_preview_every_n_steps(studio):
    from modules.diffusion import generate

    recorded = []
    services = studio.jobs.services_of("txt2img")  # the kind's own services, for a kind that wraps it

    def recording_txt2img(ctx, r):
        recorded.append(RecordingContext(ctx))
        return generate.run_txt2img(recorded[-1], r)

    studio.jobs.register_kind("recorded-txt2img", recording_txt2img, services=services)
    latent_side = 64 // studio.models.active.pipe.vae_scale_factor
    try:
        studio.settings.update({"show_progress_every_n_steps": 2}, save=False)
        job = studio.jobs.run("recorded-txt2img", req(steps=6, n_iter=2), timeout=120)
        assert job.state == JobState.DONE, job.error
        seen = recorded[-1]
        assert seen.steps == [(part, step, 6) for part in (0, 1) for step in range(1, 7)], "one report per step"
        assert seen.previews == [(step, (latent_side, latent_side)) for _ in (0, 1) for step in (2, 4, 6)]
        assert job.preview is not None and job.preview.size == (latent_side, latent_side)  # latents: no VAE decode
        studio.settings.update({"show_progress_every_n_steps": 0}, save=False)
        off = studio.jobs.run("recorded-txt2img", req(steps=4), timeout=120)
        assert off.state == JobState.DONE and off.preview is None and recorded[-1].previews == []
        assert [s for _, s, _ in recorded[-1].steps] == [1, 2, 3, 4]
    finally:
        studio.settings.update({"show_progress_every_n_steps": 2}, save=False)


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

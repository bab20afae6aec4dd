"""Prompt editing and alternation in real jobs: equal to plain diffusers with the prompt swapped at the step
A1111 swaps it (diffusers' own encode_prompt, a callback of the test's own), counted per pass."""
import numpy as np
import pytest
import torch
from PIL import Image

from modules.diffusion import conditioning, infotext
from modules.diffusion.params import Img2ImgRequest, Txt2ImgRequest
from modules.jobs import JobState
from tests.conftest import make_data_dir


@pytest.fixture(scope="module")
def studio(tmp_path_factory, demo_checkpoint):
    from modules.studio import Studio, StudioOptions

    s = Studio(StudioOptions(data_dir=make_data_dir(tmp_path_factory.mktemp("edit"), demo_checkpoint), device="cpu"))
    s.load()
    assert s.load_error is None, s.load_error
    yield s
    s.shutdown()


def req(**kw) -> Txt2ImgRequest:
    base = dict(negative_prompt="blurry", steps=8, width=64, height=64, seed=99, sampler_name="Euler", save_images=False)
    return Txt2ImgRequest(**{**base, **kw})


def run(studio, r, kind="txt2img"):
    job = studio.jobs.run(kind, r, timeout=300)
    assert job.state == JobState.DONE, job.error
    return job.result.images


def pixels(image) -> np.ndarray:
    return np.asarray(image).astype(int)


def reference(studio, texts, negatives, steps, sampler="EulerDiscreteScheduler", seed=99, size=64):
    """Plain diffusers: step s is conditioned on texts[s] / negatives[s] (diffusers' encode_prompt), swapped by
    a callback — "prompt a for k steps, then b" written without any of Atelier's code."""
    import diffusers

    pipe = studio.models.active.pipe
    plain = diffusers.StableDiffusionPipeline(**pipe.components, requires_safety_checker=False)
    plain.set_progress_bar_config(disable=True)
    plain.scheduler = getattr(diffusers, sampler).from_config(pipe.scheduler.config)
    encoded = {}

    def cond(step):
        key = (texts[min(step, len(texts) - 1)], negatives[min(step, len(negatives) - 1)])
        if key not in encoded:
            encoded[key] = plain.encode_prompt(key[0], "cpu", 1, True, key[1])
        return encoded[key]

    def swap(p, i, t, tensors):
        pos, neg = cond(i + 1)
        tensors["prompt_embeds"] = torch.cat([neg, pos])
        return tensors

    pos, neg = cond(0)
    out = plain(prompt_embeds=pos, negative_prompt_embeds=neg, num_inference_steps=steps, guidance_scale=7.0,
                width=size, height=size, generator=torch.Generator("cpu").manual_seed(seed),
                callback_on_step_end=swap, callback_on_step_end_tensor_inputs=["prompt_embeds"])
    return pixels(out.images[0])


def test_from_to_when_is_a_for_the_first_steps_then_b(studio):
    """[a:b:0.5] with 8 steps: A1111 switches after step 4 counted from 0 — a for steps 0..4, b for 5..7."""
    edited = run(studio, req(prompt="a red cat [in a forest:on the moon:0.5]"))[0]
    want = reference(studio, ["a red cat in a forest"] * 5 + ["a red cat on the moon"] * 3, ["blurry"], 8)
    assert np.array_equal(pixels(edited.image), want)
    only_a = run(studio, req(prompt="a red cat in a forest"))[0]
    only_b = run(studio, req(prompt="a red cat on the moon"))[0]
    assert not np.array_equal(pixels(edited.image), pixels(only_a.image))
    assert not np.array_equal(pixels(edited.image), pixels(only_b.image))
    # the never-switching and the switching-at-once forms are the plain prompts themselves
    assert np.array_equal(pixels(run(studio, req(prompt="a red cat [in a forest:on the moon:8]"))[0].image), pixels(only_a.image))
    assert np.array_equal(pixels(run(studio, req(prompt="a red cat [in a forest:on the moon:0]"))[0].image), pixels(only_b.image))
    # the infotext keeps the prompt as written
    parsed = infotext.parse(edited.infotext)
    assert parsed["Prompt"] == "a red cat [in a forest:on the moon:0.5]"


def test_a_step_number_and_the_short_forms(studio):
    got = run(studio, req(prompt="a dog[ wearing a hat:2]", negative_prompt="[ugly::3]"))[0]
    want = reference(studio, ["a dog"] * 3 + ["a dog wearing a hat"] * 5, ["ugly"] * 4 + [""] * 4, 8)
    assert np.array_equal(pixels(got.image), want)


def test_alternation_changes_the_prompt_every_step(studio):
    got = run(studio, req(prompt="a [cat|dog] portrait", sampler_name="Euler a"))[0]
    texts = ["a cat portrait" if (max(s, 1) - 1) % 2 == 0 else "a dog portrait" for s in range(8)]
    assert texts[:4] == ["a cat portrait", "a cat portrait", "a dog portrait", "a cat portrait"]  # A1111's count
    want = reference(studio, texts, ["blurry"], 8, sampler="EulerAncestralDiscreteScheduler")
    assert np.array_equal(pixels(got.image), want)


def test_second_order_samplers_count_every_model_evaluation(studio):
    """Heun evaluates the model 2 x 4 - 1 = 7 times; A1111 counts those: [a:b:0.5] switches after evaluation 3."""
    got = run(studio, req(prompt="[a cat:a dog:0.5]", sampler_name="Heun", steps=4))[0]
    want = reference(studio, ["a cat"] * 4 + ["a dog"] * 3, ["blurry"], 4, sampler="HeunDiscreteScheduler")
    assert np.array_equal(pixels(got.image), want)


def test_the_hires_pass_counts_its_own_steps(studio):
    """`[a:b:N]` with N = the first pass's steps, or `[a:b:1.0]`: a for the whole first pass, b for the whole
    hires pass — exactly the job with prompt a and hires prompt b."""
    hires = dict(steps=4, enable_hr=True, hr_scale=1.5, hr_second_pass_steps=4, denoising_strength=0.6, seed=12)
    want = pixels(run(studio, req(prompt="a red cat", hr_prompt="a blue dog", **hires))[0].image)
    for prompt in ("[a red cat:a blue dog:4]", "[a red cat:a blue dog:1.0]"):
        assert np.array_equal(pixels(run(studio, req(prompt=prompt, **hires))[0].image), want), prompt
    # a fraction below 1 is the first pass's: the hires pass is all b
    mid = pixels(run(studio, req(prompt="[a red cat:a blue dog:0.5]", **hires))[0].image)
    assert not np.array_equal(mid, want)


def test_img2img_runs_the_start_of_the_schedule(studio):
    """As in A1111: the schedule spans the request's steps; denoising 0.5 of 8 runs steps 0..3, all before 0.5."""
    init = Image.new("RGB", (64, 64), (40, 120, 200))
    base = dict(init_images=[init], steps=8, denoising_strength=0.5, width=64, height=64, seed=3, save_images=False)
    plain = run(studio, Img2ImgRequest(prompt="a cat", **base), "img2img")[0]
    edited = run(studio, Img2ImgRequest(prompt="[a cat:a dog:0.5]", **base), "img2img")[0]
    assert np.array_equal(pixels(edited.image), pixels(plain.image))
    early = run(studio, Img2ImgRequest(prompt="[a cat:a dog:0.2]", **base), "img2img")[0]
    assert not np.array_equal(pixels(early.image), pixels(plain.image))


def test_each_distinct_text_is_encoded_once_and_swapped_only_when_it_changes(studio):
    pipe = studio.models.active.pipe
    calls = []
    original = pipe.text_encoder.forward
    handle = pipe.text_encoder.register_forward_hook(lambda m, a, o: calls.append(1))
    try:
        cond = conditioning.build(pipe, ["[a|b] x", "[a|b] x"], ["", ""], 1, "sd1", steps=10)
    finally:
        handle.remove()
    assert pipe.text_encoder.forward == original
    assert len(calls) == 3  # "a x", "b x", "" — for a batch of two
    assert cond.varies and len(cond.variants) == 2 and cond.tensor_inputs == ["prompt_embeds"]
    assert cond.segments[0] == (1, 0) and cond.segments[1] == (2, 1)
    plain = conditioning.build(pipe, ["a cat"], [""], 1, "sd1", steps=10)
    assert not plain.varies and plain.tensor_inputs == []

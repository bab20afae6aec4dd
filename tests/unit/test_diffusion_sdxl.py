"""SDXL on the tiny SDXL from the demo factory: prompt encoding (two encoders + pooled) and whole txt2img
jobs equal to plain diffusers."""
import pytest
import torch

from modules.diffusion import prompts


@pytest.fixture(scope="module")
def xl():
    from tests.fixtures_models import build_sdxl_pipeline

    pipe = build_sdxl_pipeline(seed=0)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_sdxl_plain_prompt_encodes_exactly_as_diffusers(xl):
    cond = prompts.encode(xl, ["a red cat"], ["blurry"], arch="sdxl").kwargs
    pos, neg, pooled, neg_pooled = xl.encode_prompt("a red cat", device="cpu", num_images_per_prompt=1,
                                                    do_classifier_free_guidance=True, negative_prompt="blurry")
    assert torch.equal(cond["prompt_embeds"], pos) and torch.equal(cond["negative_prompt_embeds"], neg)
    assert torch.equal(cond["pooled_prompt_embeds"], pooled)
    assert torch.equal(cond["negative_pooled_prompt_embeds"], neg_pooled)
    assert pos.shape[-1] == 64  # both encoders, concatenated


def test_sdxl_empty_negative_is_zeros_and_long_prompts_chunk(xl):
    cond = prompts.encode(xl, ["a red cat, " * 20], [""], arch="sdxl").kwargs
    assert cond["prompt_embeds"].shape[1] == 3 * 77 and cond["negative_prompt_embeds"].shape == cond["prompt_embeds"].shape
    assert not cond["negative_prompt_embeds"].any()  # force_zeros_for_empty_prompt, as diffusers does
    out = xl(**cond, num_inference_steps=2, width=64, height=64, generator=torch.Generator("cpu").manual_seed(0),
             output_type="latent")
    assert out.images.shape[0] == 1


@pytest.fixture(scope="module")
def xl_folder(tmp_path_factory):
    from tests.fixtures_models import save_demo_sdxl_checkpoint

    return save_demo_sdxl_checkpoint(tmp_path_factory.mktemp("xl") / "models" / "Stable-diffusion" / "tiny-xl")


@pytest.fixture(scope="module")
def xl_studio(xl_folder):
    from modules.studio import Studio, StudioOptions

    s = Studio(StudioOptions(data_dir=xl_folder.parents[2], device="cpu", build_demo=False))
    s.load()
    assert s.load_error is None and s.models.active.arch == "sdxl", s.load_error
    yield s
    s.shutdown()


@pytest.mark.parametrize("sampler", ["Euler a", "DPM++ 2M", "DPM++ 2M SDE"])
def test_sdxl_txt2img_equals_plain_diffusers(xl_studio, xl_folder, sampler):
    """Through the whole studio (loader, prompt encoding, noise, scheduler) against diffusers' own from_pretrained."""
    import numpy as np
    from diffusers import StableDiffusionXLPipeline

    from modules.diffusion.params import Txt2ImgRequest
    from tests.support import reference_scheduler

    r = Txt2ImgRequest(prompt="a red cat", negative_prompt="blurry", steps=5, width=64, height=64, seed=77,
                       sampler_name=sampler, save_images=False)
    job = xl_studio.jobs.run("txt2img", r, timeout=120)
    job.raise_for_error()
    ref = StableDiffusionXLPipeline.from_pretrained(str(xl_folder), local_files_only=True)
    ref.set_progress_bar_config(disable=True)
    ref.scheduler = reference_scheduler(sampler, ref.scheduler.config, seed=77)
    out = ref(prompt="a red cat", negative_prompt="blurry", num_inference_steps=5, guidance_scale=7.0, width=64,
              height=64, generator=[torch.Generator("cpu").manual_seed(77)], output_type="np")
    assert np.isfinite(out.images).all()
    theirs = np.asarray(ref.numpy_to_pil(out.images)[0]).astype(int)
    ours = np.asarray(job.result.images[0].image).astype(int)
    assert theirs.std() > 5, "a flat picture says nothing"
    assert np.array_equal(ours, theirs), f"differs from plain diffusers by up to {np.abs(ours - theirs).max()}"


def test_sdxl_prompt_editing_swaps_the_pooled_embeddings_too(xl):
    """[a:b:0.5] over 4 steps: a for steps 0..2, then b — text and pooled embeddings both, as diffusers'
    own encode_prompt gives them."""
    from modules.diffusion import conditioning

    def gen():
        return torch.Generator("cpu").manual_seed(3)

    cond = conditioning.build(xl, ["[a red cat:a blue dog:0.5]"], ["blurry"], 1, "sdxl", steps=4)
    assert cond.tensor_inputs == ["prompt_embeds", "add_text_embeds"]
    swap = cond.swapper()

    def ours_cb(p, i, t, tensors):
        swap(p, i + 1, tensors)
        return tensors

    ours = xl(**cond.initial, num_inference_steps=4, width=64, height=64, generator=gen(), output_type="latent",
              callback_on_step_end=ours_cb, callback_on_step_end_tensor_inputs=cond.tensor_inputs).images
    enc = {t: xl.encode_prompt(t, device="cpu", num_images_per_prompt=1, do_classifier_free_guidance=True,
                               negative_prompt="blurry") for t in ("a red cat", "a blue dog")}

    def ref_cb(p, i, t, tensors):
        pos, neg, pooled, neg_pooled = enc["a red cat" if i + 1 <= 2 else "a blue dog"]
        tensors["prompt_embeds"] = torch.cat([neg, pos])
        tensors["add_text_embeds"] = torch.cat([neg_pooled, pooled])
        return tensors

    pos, neg, pooled, neg_pooled = enc["a red cat"]
    ref = xl(prompt_embeds=pos, negative_prompt_embeds=neg, pooled_prompt_embeds=pooled,
             negative_pooled_prompt_embeds=neg_pooled, num_inference_steps=4, width=64, height=64, generator=gen(),
             output_type="latent", callback_on_step_end=ref_cb,
             callback_on_step_end_tensor_inputs=["prompt_embeds", "add_text_embeds"]).images
    assert torch.equal(ours, ref)
    plain = xl(**prompts.encode(xl, ["a red cat"], ["blurry"], arch="sdxl").kwargs, num_inference_steps=4, width=64,
               height=64, generator=gen(), output_type="latent").images
    assert not torch.equal(ours, plain)

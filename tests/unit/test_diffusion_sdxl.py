"""SDXL prompt encoding (two encoders + pooled) on the tiny SDXL from the demo factory."""
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

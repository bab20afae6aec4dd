"""SDXL prompt encoding (two encoders + pooled) on a tiny SDXL built from diffusers/transformers classes."""
import pytest
import torch

from modules.diffusion import prompts


@pytest.fixture(scope="module")
def xl(tmp_path_factory):
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    from modules.models.demo import write_clip_tokenizer

    torch.manual_seed(0)
    tok_dir = tmp_path_factory.mktemp("tok")
    write_clip_tokenizer(tok_dir)
    tok = CLIPTokenizer.from_pretrained(str(tok_dir), local_files_only=True)
    cfg = dict(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
               hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=3,
               vocab_size=len(tok), max_position_embeddings=77, projection_dim=32, layer_norm_eps=1e-5)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=1, sample_size=16, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4), use_linear_projection=True, addition_embed_type="text_time",
        addition_time_embed_dim=8, transformer_layers_per_block=(1, 1), projection_class_embeddings_input_dim=6 * 8 + 32,
        cross_attention_dim=64, norm_num_groups=1)
    vae = AutoencoderKL(block_out_channels=(32, 64), in_channels=3, out_channels=3, latent_channels=4,
                        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                        norm_num_groups=32, sample_size=32)
    pipe = StableDiffusionXLPipeline(
        vae=vae, text_encoder=CLIPTextModel(CLIPTextConfig(**cfg)), text_encoder_2=CLIPTextModelWithProjection(CLIPTextConfig(**cfg)),
        tokenizer=tok, tokenizer_2=tok, unet=unet,
        scheduler=EulerDiscreteScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, steps_offset=1))
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

"""A1111 prompt syntax: parsing, LoRA tags, 75-token chunks, emphasis, CLIP skip, equality with diffusers."""
import pytest
import torch

from modules.diffusion import prompts
from modules.diffusion.prompts import parse_attention
from modules.errors import InvalidRequest


@pytest.fixture(scope="module")
def pipe():
    from modules.models.demo import build_sd15_pipeline

    return build_sd15_pipeline()


def test_a1111_documented_examples():
    # The examples in A1111's modules/prompt_parser.py docstring.
    assert parse_attention("normal text") == [("normal text", 1.0)]
    assert parse_attention("an (important) word") == [("an ", 1.0), ("important", 1.1), (" word", 1.0)]
    assert parse_attention("(unbalanced") == [("unbalanced", 1.1)]
    assert parse_attention("\\(literal\\]") == [("(literal]", 1.0)]
    assert parse_attention("(unnecessary)(parens)") == [("unnecessaryparens", 1.1)]
    got = parse_attention("a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).")
    want = [("a ", 1.0), ("house", 1.3 * 1.1 * 1.1), (" ", 1.1), ("on", 1.0), (" a ", 1.1), ("hill", 0.55),
            (", sun, ", 1.1), ("sky", 1.1 ** 4), (".", 1.1)]
    assert [t for t, _ in got] == [t for t, _ in want]
    assert [w for _, w in got] == pytest.approx([w for _, w in want])


def test_brackets_escapes_and_break():
    assert parse_attention("[faded]") == [("faded", pytest.approx(1 / 1.1))]
    assert parse_attention("((a))") == [("a", pytest.approx(1.21))]
    assert parse_attention("(a:0.5)") == [("a", 0.5)]
    assert parse_attention("a BREAK b") == [("a", 1.0), ("BREAK", -1.0), ("b", 1.0)]
    assert parse_attention("\\\\ and \\)") == [("\\ and )", 1.0)]
    assert parse_attention("") == [("", 1.0)]


def test_lora_tags_are_taken_out_of_the_text():
    text, loras = prompts.extract_loras("a cat <lora:film grain:0.6>, <lora:detail> <lyco:x:0.3:0.2>")
    assert "<" not in text and "lora" not in text
    assert loras == [("film grain", 0.6), ("detail", 1.0), ("x", 0.3)]
    with pytest.raises(InvalidRequest) as err:
        prompts.extract_loras("<lora:x:strong>")
    assert err.value.field == "prompt"


def test_plain_prompt_encodes_exactly_as_diffusers(pipe):
    cond = prompts.encode(pipe, ["a red cat"], ["blurry"])
    pos, neg = pipe.encode_prompt("a red cat", "cpu", 1, True, "blurry")
    assert torch.equal(cond.kwargs["prompt_embeds"], pos)
    assert torch.equal(cond.kwargs["negative_prompt_embeds"], neg)
    assert cond.chunks == 1


def test_weights_change_the_embedding_and_weight_one_does_not(pipe):
    base = prompts.encode(pipe, ["a red cat"], [""]).kwargs["prompt_embeds"]
    assert torch.equal(prompts.encode(pipe, ["a (red:1) cat"], [""]).kwargs["prompt_embeds"], base)
    up = prompts.encode(pipe, ["a (red:1.5) cat"], [""]).kwargs["prompt_embeds"]
    down = prompts.encode(pipe, ["a [red] cat"], [""]).kwargs["prompt_embeds"]
    assert not torch.allclose(up, base) and not torch.allclose(down, base)
    assert abs(up.mean().item() - base.mean().item()) < 1e-6  # A1111 restores the mean


def test_long_prompts_are_encoded_in_75_token_chunks(pipe):
    long = "a red cat, " * 20  # ~160 tokens with this tokenizer
    chunks = prompts.tokenize_chunks(pipe.tokenizer, long)
    assert len(chunks) == 3 and all(len(c.tokens) <= 75 for c in chunks)
    assert all(pipe.tokenizer.convert_ids_to_tokens(c.tokens[-1]) == ",</w>" for c in chunks[:-1])  # cut after commas
    cond = prompts.encode(pipe, [long], ["short"])
    assert cond.kwargs["prompt_embeds"].shape[1] == 3 * 77
    assert cond.kwargs["negative_prompt_embeds"].shape == cond.kwargs["prompt_embeds"].shape  # padded to match
    # each chunk is encoded on its own: the first chunk equals encoding its text alone
    first_alone = prompts._encode_chunks(pipe.tokenizer, pipe.text_encoder, [chunks[0]], None, True)[0]
    assert torch.allclose(cond.kwargs["prompt_embeds"][:, :77], first_alone)


def test_break_starts_a_new_chunk(pipe):
    assert len(prompts.tokenize_chunks(pipe.tokenizer, "a cat BREAK a dog")) == 2
    assert prompts.encode(pipe, ["a cat BREAK a dog"], [""]).kwargs["prompt_embeds"].shape[1] == 2 * 77


def test_clip_skip_uses_an_earlier_layer_through_the_final_norm(pipe):
    skip2 = prompts.encode(pipe, ["a red cat"], [""], clip_skip=2).kwargs["prompt_embeds"]
    ids = pipe.tokenizer("a red cat", padding="max_length", max_length=77, return_tensors="pt").input_ids
    with torch.no_grad():
        hidden = pipe.text_encoder(ids, output_hidden_states=True).hidden_states[-2]
        want = pipe.text_encoder.final_layer_norm(hidden)
    assert torch.allclose(skip2, want)
    with pytest.raises(InvalidRequest) as err:
        prompts.encode(pipe, ["a"], [""], clip_skip=12)  # the demo encoder has 5 layers
    assert err.value.field == "clip_skip"


def test_batch_of_prompts_stacks(pipe):
    cond = prompts.encode(pipe, ["a cat", "a cat"], ["", ""])
    assert cond.kwargs["prompt_embeds"].shape[0] == 2
    assert torch.equal(cond.kwargs["prompt_embeds"][0], cond.kwargs["prompt_embeds"][1])


def test_textual_inversion_tokens_expand_as_diffusers_does():
    from modules.models.demo import build_sd15_pipeline

    pipe = build_sd15_pipeline()
    pipe.load_textual_inversion({"emb_params": torch.randn(3, 32)}, token="mystyle")  # a 3-vector embedding
    cond = prompts.encode(pipe, ["a mystyle cat"], [""])
    pos, _ = pipe.encode_prompt("a mystyle cat", "cpu", 1, True, "")
    assert torch.equal(cond.kwargs["prompt_embeds"], pos)
    assert not torch.equal(pos, prompts.encode(pipe, ["a cat"], [""]).kwargs["prompt_embeds"])


def test_weighted_prompt_with_break_makes_a_real_image(studio):
    """Regression: emphasis + BREAK on an encoder whose output mean is near zero gave NaN (a black image)."""
    import numpy as np

    from modules.diffusion.params import Txt2ImgRequest

    for prompt in ("a (cat:1.2) BREAK dog", "(a:1.5) [cat] BREAK (dog:0.5)"):
        job = studio.submit("txt2img", Txt2ImgRequest(prompt=prompt, steps=4, width=64, height=64, seed=5)).wait(120)
        pixels = np.asarray(job.result.images[0].image, dtype=float)
        assert pixels.std() > 1.0, f"{prompt!r} gave a flat image"

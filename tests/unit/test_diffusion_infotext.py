"""Infotext in A1111's format, and parse() reads back what build() wrote (and what A1111 writes)."""
from modules.diffusion import infotext

A1111_SAMPLE = (
    "masterpiece, (best quality:1.2), 1girl, <lora:add_detail:0.6>\n"
    "Negative prompt: lowres, bad anatomy\n"
    "Steps: 28, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 3184112145, Size: 512x768, "
    "Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, VAE hash: 735e4c3a44, VAE: vae-ft-mse-840000-ema-pruned.safetensors, "
    "Denoising strength: 0.45, Clip skip: 2, Hires upscale: 2, Hires steps: 15, Hires upscaler: Latent, "
    'Lora hashes: "add_detail: 7c6bad76eb54", Version: v1.10.1'
)


def test_parses_a1111_infotext():
    p = infotext.parse(A1111_SAMPLE)
    assert p["Prompt"] == "masterpiece, (best quality:1.2), 1girl, <lora:add_detail:0.6>"
    assert p["Negative prompt"] == "lowres, bad anatomy"
    assert p["Steps"] == "28" and p["Sampler"] == "DPM++ 2M" and p["Schedule type"] == "Karras"
    assert (p["Size-1"], p["Size-2"]) == ("512", "768")
    assert infotext.parse_lora_hashes(p["Lora hashes"]) == {"add_detail": "7c6bad76eb54"}
    fields = infotext.to_request_fields(p)
    assert fields["seed"] == 3184112145 and fields["width"] == 512 and fields["height"] == 768
    assert fields["clip_skip"] == 2 and fields["enable_hr"] and fields["hr_scale"] == 2.0
    assert fields["override_settings"]["sd_model_checkpoint"] == "v1-5-pruned-emaonly"


def test_build_then_parse_round_trips():
    params = {
        "Steps": 20, "Sampler": "Euler a", "Schedule type": "Automatic", "CFG scale": 7.5, "Seed": 42,
        "Size": "64x64", "Model hash": "abcdef0123", "Model": "demo", "Variation seed": 7,
        "Variation seed strength": 0.3, "Denoising strength": 0.7, "Clip skip": 2, "Hires upscale": 1.5,
        "Hires steps": 4, "Hires upscaler": "Latent (nearest)", "Mask blur": 4,
        "Lora hashes": "a: 0123456789, b c: 9876543210", "Version": "atelier",
    }
    text = infotext.build("a (cat:1.2), multi\nline", "ugly, bad", params)
    assert 'Lora hashes: "a: 0123456789, b c: 9876543210"' in text  # quoted as A1111 does
    parsed = infotext.parse(text)
    assert parsed["Prompt"] == "a (cat:1.2), multi\nline" and parsed["Negative prompt"] == "ugly, bad"
    for key, value in params.items():
        assert parsed[key] == str(value), key
    assert infotext.parse_lora_hashes(parsed["Lora hashes"]) == {"a": "0123456789", "b c": "9876543210"}


def test_prompt_only_text_has_no_parameters():
    assert infotext.parse("just a prompt") == {"Prompt": "just a prompt", "Negative prompt": ""}

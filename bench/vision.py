"""Figures: PaliGemma caption through Atelier vs plain generate; box + mask decoding of 100 objects
against the generation that writes them; a batch of 16 images.

The model is a random-weights PaliGemma of pt-224's shapes (google/paligemma-3b-pt-224's config.json:
SigLIP So400m/14 at 224 — hidden 1152, 27 layers, 16 heads, MLP 4304, 256 image tokens — and Gemma 2B —
hidden 2048, 18 layers, 8 heads, 1 KV head, head_dim 256, MLP 16384, vocabulary 257,216; 2.9 B
parameters), in bf16 as published, built once into the bench cache. --quick keeps every width and the
vocabulary and takes 3 vision and 2 text layers (0.8 B parameters): the full model (5.8 GB on disk) took
17 minutes for this group on 2 busy cores (16-43 s a 16-token caption), far over --quick's two minutes. Both sides run the same model
object, so the figure is the path's cost (job queue, validation, the model manager, the processor,
decoding, the JSON) and not a second load.
"""
from __future__ import annotations

import shutil
import statistics
import tempfile
import time
from pathlib import Path

from bench.common import Figure, ratios, side_by_side, timed

NAME = "bench-paligemma-224-random"
_VERSION = "1"
CAPTION_TOKENS = 16
TITLE_CAPTION = "PaliGemma caption through Atelier vs plain generate (pt-224 shapes, bf16)"
TARGET_CAPTION = ">= 0.95x plain generate (speed: plain time / Atelier time)"
TITLE_DECODE = "Box + mask decoding of 100 objects vs generating them"
TITLE_BATCH = "Batch of 16 images (caption), images/s"

VISION_224 = dict(hidden_size=1152, intermediate_size=4304, num_hidden_layers=27, num_attention_heads=16,
                  image_size=224, patch_size=14, vision_use_head=False, hidden_act="gelu_pytorch_tanh")
GEMMA_2B = dict(hidden_size=2048, intermediate_size=16384, num_hidden_layers=18, num_attention_heads=8,
                num_key_value_heads=1, head_dim=256, vocab_size=257_216, max_position_embeddings=8192,
                hidden_activation="gelu_pytorch_tanh")
QUICK_LAYERS = {"vision": 3, "text": 2}


def ensure_paligemma_folder(quick: bool, log=print) -> Path:
    """The cached folder of the random model (full depth, or --quick's shallow one); built when missing."""
    from bench.sd15 import cache_root

    folder = cache_root() / f"{NAME}-{'shallow' if quick else 'full'}-v{_VERSION}"
    if (folder / "config.json").exists():
        return folder
    log(f"building a random-weights PaliGemma of pt-224's shapes ({'shallow' if quick else 'full depth'}) "
        f"in {folder} (once) …")
    import torch
    from transformers import (GemmaConfig, GenerationConfig, PaliGemmaConfig, PaliGemmaForConditionalGeneration,
                              PaliGemmaProcessor, SiglipImageProcessor, SiglipVisionConfig)

    from modules.models.demo_lm import gemma_tokenizer

    images = SiglipImageProcessor(size={"height": 224, "width": 224}, image_mean=[0.5] * 3, image_std=[0.5] * 3)
    images.image_seq_length = 256
    processor = PaliGemmaProcessor(image_processor=images, tokenizer=gemma_tokenizer(400))
    tok = processor.tokenizer
    vision, text = dict(VISION_224), dict(GEMMA_2B)
    if quick:
        vision["num_hidden_layers"], text["num_hidden_layers"] = QUICK_LAYERS["vision"], QUICK_LAYERS["text"]
    torch.manual_seed(0)
    config = PaliGemmaConfig(vision_config=SiglipVisionConfig(**vision),
                             text_config=GemmaConfig(**text, bos_token_id=tok.bos_token_id,
                                                     eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id),
                             projection_dim=2048, image_token_index=processor.image_token_id)
    config.text_config.num_image_tokens = 256
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)  # built in bf16: the full model's fp32 copy would need 12 GB more
    try:
        model = PaliGemmaForConditionalGeneration(config)
    finally:
        torch.set_default_dtype(before)
    model.generation_config = GenerationConfig(bos_token_id=tok.bos_token_id, pad_token_id=tok.pad_token_id,
                                               eos_token_id=tok.eos_token_id)
    tmp = folder.with_name(folder.name + ".building")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(str(tmp), safe_serialization=True)
    processor.save_pretrained(str(tmp))
    del model
    tmp.rename(folder)
    return folder


def _image(i: int = 0):
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (640, 480), (30 + 10 * i % 200, 120, 200))
    ImageDraw.Draw(image).ellipse([100 + i, 80, 400, 380], fill=(240, 200, 40))
    return image


def run(device: str, quick: bool, log=print) -> list[Figure]:
    try:
        return _measure(device, quick, log)
    except Exception as exc:  # report why, never a made-up number
        why = f"{type(exc).__name__}: {exc}"[:400]
        return [Figure.missing("vision_caption", TITLE_CAPTION, why, TARGET_CAPTION),
                Figure.missing("vision_decode", TITLE_DECODE, why, "< 1 %"),
                Figure.missing("vision_batch", TITLE_BATCH, why)]


def _measure(device: str, quick: bool, log) -> list[Figure]:
    from bench.sd15 import link_copy
    from bench.studio_setup import open_studio

    src = ensure_paligemma_folder(quick, log)
    root = Path(tempfile.mkdtemp(prefix="atelier-bench-vision-"))
    studio = None
    try:
        link_copy(src, root / "models" / "VLM" / src.name)
        from modules.vision.vqvae import FILE_NAME, write_random_decoder

        write_random_decoder(root / "models" / "VLM" / FILE_NAME)
        studio = open_studio(root, device)
        studio.models.set_options(src.name, {"dtype": "bf16"}, kind="vlm")
        lm = studio.models.load(src.name, kind="vlm")  # loaded once; both sides run this object
        params = sum(p.numel() for p in lm.model.parameters())
        figures = [_caption(studio, src.name, quick, log, params)]
        figures.append(_decode(studio, src.name, figures[0], log))
        figures.append(_batch(studio, src.name, log))
        return figures
    finally:
        if studio is not None:
            studio.shutdown()
        shutil.rmtree(root, ignore_errors=True)


def _plain(studio, name: str, image, new_tokens: int, min_tokens: bool = False):
    """PaliGemmaForConditionalGeneration.generate as its model card shows it, on the manager's model object
    (resident and idle: nothing evicts it during the bench), without any of Atelier's machinery."""
    import torch

    lm = studio.models.active_of("vlm")
    inputs = lm.processor(images=image, text="<image>caption en", return_tensors="pt").to(lm.model.device)
    inputs["pixel_values"] = inputs["pixel_values"].to(lm.model.dtype)
    extra = {"min_new_tokens": new_tokens} if min_tokens else {}
    with torch.inference_mode():
        out = lm.model.generate(**inputs, max_new_tokens=new_tokens, do_sample=False, **extra)
    return lm.processor.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True).strip()


def _atelier(studio, name: str, image):
    from modules.vision.params import VisionRequest

    req = VisionRequest(model=name, task="caption", image=image, max_new_tokens=CAPTION_TOKENS, overlay=False)
    job = studio.jobs.run("vision", req, timeout=900)
    job.raise_for_error()
    return job.result.text


def _caption(studio, name: str, quick: bool, log, params: int) -> Figure:
    image = _image()
    reps = 3 if quick else 6
    log(f"  vision caption: {reps} Atelier jobs alternating with {reps} plain generate calls ({params / 1e9:.2f} B "
        f"parameters, {CAPTION_TOKENS} new tokens) …")
    same = _atelier(studio, name, image) == _plain(studio, name, image, CAPTION_TOKENS)
    ta, tb = side_by_side(lambda: _atelier(studio, name, image), lambda: _plain(studio, name, image, CAPTION_TOKENS),
                          reps, warmup=0)
    speed = [1 / r for r in ratios(ta, tb)]  # plain / Atelier: 1.0 = as fast, above 0.95 met
    spread = lambda xs: {"median": round(statistics.median(xs), 3), "min": round(min(xs), 3), "max": round(max(xs), 3)}
    return Figure.from_samples("vision_caption", TITLE_CAPTION, speed, target=TARGET_CAPTION, ok=lambda s: s >= 0.95,
                               atelier_s=spread(ta), plain_s=spread(tb), same_text=same, parameters=params,
                               depth="shallow (3 vision, 2 text layers)" if quick else "full (27 vision, 18 text)",
                               new_tokens=CAPTION_TOKENS)


def _decode(studio, name: str, caption: Figure, log) -> Figure:
    """Decoding 100 segmented objects vs the generation that would write them (100 x 20 tokens), the
    latter from two plain generations of 8 and 24 tokens: prefill + per-token time."""
    import random

    from modules.vision.decode import objects_from_text
    from modules.vision.vqvae import FILE_NAME, MaskDecoder

    rng = random.Random(0)
    parts = []
    for _ in range(100):
        y1, x1 = rng.randrange(0, 700), rng.randrange(0, 700)
        locs = (y1, x1, y1 + rng.randrange(50, 320), x1 + rng.randrange(50, 320))
        parts.append("".join(f"<loc{b:04d}>" for b in locs) + "".join(f"<seg{rng.randrange(128):03d}>"
                                                                      for _ in range(16)) + " thing")
    text = " ; ".join(parts)
    decoder = MaskDecoder(studio.paths.model_dir("vlm") / FILE_NAME)
    image = _image()
    log("  vision decode: 100 objects (boxes + VQ-VAE masks) vs the generation of 2,000 tokens …")
    samples = [timed(lambda: objects_from_text(text, 640, 480, True, ["thing"], decoder)) for _ in range(3)]
    decode_s = statistics.median(samples)
    short = statistics.median(timed(lambda: _plain(studio, name, image, 8, True)) for _ in range(2))
    long = statistics.median(timed(lambda: _plain(studio, name, image, 24, True)) for _ in range(2))
    per_token = max(1e-6, (long - short) / 16)
    generation_s = max(0.0, short - 8 * per_token) + 100 * 20 * per_token
    share = [100 * s / generation_s for s in samples]
    return Figure.from_samples("vision_decode", TITLE_DECODE, share, unit="%", target="< 1 % of the generation",
                               ok=lambda p: p < 1.0, decode_s=round(decode_s, 4),
                               generation_s_estimated=round(generation_s, 2), per_token_s=round(per_token, 4),
                               objects=100, image="640x480")


def _batch(studio, name: str, log) -> Figure:
    from modules.vision.params import VisionBatchRequest

    images = [_image(i) for i in range(16)]
    log("  vision batch: 16 images, caption …")
    req = VisionBatchRequest(model=name, task="caption", images=images, max_new_tokens=8)
    started = time.perf_counter()
    job = studio.jobs.run("vision_batch", req, timeout=1800)
    seconds = time.perf_counter() - started
    job.raise_for_error()
    result = job.result
    lost = 16 - result["done"]
    rate = result["done"] / seconds
    return Figure("vision_batch", TITLE_BATCH, "images/s", rate, rate, rate, "all 16 done, none lost",
                  lost == 0 and result["failed"] == 0, None,
                  {"done": result["done"], "failed": result["failed"], "seconds": round(seconds, 2),
                   "new_tokens": 8, "jsonl": result["jsonl"]})

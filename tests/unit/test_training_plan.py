"""The training task's pure parts: step math, buckets that never upscale, the dataset scan (repeats,
captions, unreadable images listed), the memory estimate, the launcher the studio picks."""
from __future__ import annotations

import pytest

from modules.training.buckets import bucket_counts, bucket_for, crop_box
from modules.training.dataset import scan_dataset
from modules.training.launch import accelerate_launcher, processes_for
from modules.training.memory import estimate_sd_lora
from modules.training.plan import epochs_needed, step_math


def test_step_math_images_repeats_epochs_batch_accumulation():
    m = step_math(images=3, samples_per_epoch=30, epochs=2, batch_size=2)
    assert (m.batches_per_epoch, m.steps_per_epoch, m.total_steps) == (15, 15, 30)
    assert m.formula == "3 images x 10 repeats x 2 epochs / batch 2 = 30 steps"
    assert step_math(3, 30, 2, 2, gradient_accumulation=4).total_steps == 2 * 4  # ceil(15 / 4) per epoch
    prior = step_math(3, 30, 2, 2, class_images=True)  # each batch: 2 instance samples + 2 class images
    assert (prior.samples_per_epoch, prior.total_steps) == (60, 30)
    assert prior.formula == "3 images x 10 repeats x 2 (class images) x 2 epochs / batch 4 (2 instance + 2 class) = 30 steps"
    assert step_math(3, 30, 2, 2, max_steps=7).total_steps == 7
    assert step_math(3, 30, 1, 2, processes=2).steps_per_epoch == 8  # 15 batches over two GPUs


def test_step_math_makes_batches_within_buckets():
    m = step_math(images=4, samples_per_epoch=30, epochs=1, batch_size=3, bucket_samples=[20, 10])
    assert m.batches_per_epoch == 7 + 4  # each bucket's last batch is short
    assert epochs_needed(step_math(4, 30, 1, 3, bucket_samples=[20, 10], max_steps=25)) == 3


@pytest.mark.parametrize("size", [(100, 80), (1024, 512), (4000, 3000), (512, 512), (300, 2000), (64, 64)])
def test_buckets_never_upscale_and_keep_the_area(size):
    w, h = size
    bw, bh = bucket_for(w, h, 512)
    assert bw % 64 == 0 and bh % 64 == 0 and bw * bh <= 512 * 512
    (rw, rh), (top, left) = crop_box(w, h, (bw, bh))
    assert rw <= w and rh <= h, "resized above the image's own size"
    assert rw >= bw and rh >= bh and top >= 0 and left >= 0


def test_bucket_aspect_ratio_and_counts():
    assert bucket_for(1024, 512, 512) == (704, 320)
    assert bucket_for(512, 512, 512, bucketing=False) == (512, 512)
    assert bucket_counts([(512, 512, 2), (640, 640, 3), (1024, 512, 1)], 512) == {(512, 512): 5, (704, 320): 1}


def test_dataset_scan_repeats_captions_and_skipped_files(tmp_path):
    from PIL import Image

    (tmp_path / "10_sks dog").mkdir()
    (tmp_path / "misc").mkdir()
    Image.new("RGB", (128, 96)).save(tmp_path / "top.png")
    (tmp_path / "top.txt").write_text("  a photo,\n of a cat ", encoding="utf-8")
    Image.new("RGB", (96, 128)).save(tmp_path / "10_sks dog" / "a.jpg")
    Image.new("RGB", (96, 128)).save(tmp_path / "10_sks dog" / "b.webp")
    (tmp_path / "10_sks dog" / "b.caption").write_text("sks dog running", encoding="utf-8")
    Image.new("RGB", (32, 128)).save(tmp_path / "misc" / "tiny.png")
    (tmp_path / "misc" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    (tmp_path / "misc" / "notes.md").write_text("not an image")
    scan = scan_dataset(tmp_path, default_caption="fallback")
    items = {i.path: i for i in scan.items}
    assert set(items) == {"top.png", "10_sks dog/a.jpg", "10_sks dog/b.webp"}
    assert items["top.png"].caption == "a photo, of a cat" and items["top.png"].repeats == 1
    assert items["10_sks dog/a.jpg"].caption == "sks dog" and items["10_sks dog/a.jpg"].repeats == 10
    assert items["10_sks dog/b.webp"].caption == "sks dog running"
    assert (items["top.png"].width, items["top.png"].height) == (128, 96)
    assert scan.samples_per_epoch == 21
    skipped = dict(scan.skipped)
    assert "unreadable" in skipped["misc/broken.png"] and "smaller than 64" in skipped["misc/tiny.png"]
    assert scan.folders == {".": {"n_repeats": 1, "img_count": 1}, "10_sks dog": {"n_repeats": 10, "img_count": 2}}
    digest = scan.digest()
    (tmp_path / "top.txt").write_text("another caption", encoding="utf-8")
    assert scan_dataset(tmp_path).digest() != digest


def test_memory_estimate_follows_the_options():
    sd15 = dict(model_bytes=4_270_000_000, unet_fraction=0.8, resolution=512, batch_size=1, precision="fp16",
                rank=16, train_text_encoder=False, gradient_checkpointing=False, cache_latents=True,
                optimizer="adamw")
    base = estimate_sd_lora(**sd15)["total_bytes"]
    assert 2 * 1024**3 < base < 12 * 1024**3
    assert estimate_sd_lora(**{**sd15, "batch_size": 4})["total_bytes"] > base
    assert estimate_sd_lora(**{**sd15, "gradient_checkpointing": True})["total_bytes"] < base
    assert estimate_sd_lora(**{**sd15, "precision": "no"})["total_bytes"] > base
    assert estimate_sd_lora(**{**sd15, "resolution": 1024})["total_bytes"] > base


def test_the_launcher_is_the_cpu_one_gpu_or_all_gpus():
    cpu = accelerate_launcher("cpu", 0, "no")
    assert cpu[1:3] == ["-m", "accelerate.commands.launch"] and "--cpu" in cpu
    one = accelerate_launcher("cuda", 1, "bf16")
    assert "--cpu" not in one and "--multi_gpu" not in one and one[one.index("--mixed_precision") + 1] == "bf16"
    every = accelerate_launcher("cuda", 4, "fp16")
    assert "--multi_gpu" in every and every[every.index("--num_processes") + 1] == "4"
    assert "--multi_gpu" not in accelerate_launcher("cuda", 4, "fp16", gpus="one")
    assert (processes_for("cuda", 4), processes_for("cuda", 4, "one"), processes_for("cpu", 0)) == (4, 1, 1)

"""SD LoRA training end to end on the demo model, in a child process under accelerate: the output is
a kohya-format file the studio lists at once and applies with <lora:name:1> (plain diffusers gives
the same image from the same file); resume is exact; Stop saves a checkpoint; a crashing training
fails its job with the reason and the studio serves on; SDXL and the uncached / other-option paths run."""
from __future__ import annotations

import shutil
import time

import numpy as np
import pytest

from modules.jobs import JobState
from modules.training.params import parse
from tests.conftest import make_data_dir
from tests.training_support import DEADLINE_S, make_dataset, open_training_studio, run_training, sd_request


@pytest.fixture(scope="module")
def studio(tmp_path_factory, demo_checkpoint):
    data = make_data_dir(tmp_path_factory.mktemp("train"), demo_checkpoint)
    make_dataset(data / "datasets" / "cats")
    s = open_training_studio(data)
    yield s
    s.shutdown()


def train(studio, request: dict):
    return run_training(studio, "sd_lora", request)


def lora_tensors(path):
    from safetensors.torch import load_file

    return load_file(str(path))


@pytest.fixture(scope="module")
def straight(studio):
    """6 steps without a stop: the reference of the resume tests and the LoRA the generation tests use."""
    return train(studio, sd_request("straight", save_every=3, sample_prompts=["a red cat"], sample_steps=2))


def _txt2img(studio, prompt: str):
    from modules.diffusion.params import Txt2ImgRequest

    job = studio.jobs.run("txt2img", Txt2ImgRequest(prompt=prompt, negative_prompt="blurry", steps=4, width=64,
                                                    height=64, seed=11, sampler_name="Euler", save_images=False),
                          timeout=120)
    job.raise_for_error()
    return np.asarray(job.result.images[0].image).astype(int)


def test_the_trained_lora_is_kohya_format_with_metadata_and_listed_at_once(studio, straight):
    from safetensors import safe_open

    result = straight.result
    assert result["outcome"] == "done" and result["steps"] == 6
    path = studio.paths.model_dir("lora") / "straight.safetensors"
    assert result["output"] == str(path)
    keys = set(lora_tensors(path))
    assert keys and all(k.startswith("lora_unet_") for k in keys)
    downs = [k for k in keys if k.endswith(".lora_down.weight")]
    assert downs and all(k.replace(".lora_down.weight", ".lora_up.weight") in keys for k in downs)
    assert all(k.split(".")[0] + ".alpha" in keys for k in downs)
    assert "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q.lora_down.weight" in keys
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    entry = studio.registry.get("checkpoint", "atelier-demo-sd15")
    assert meta["ss_network_dim"] == "4" and meta["ss_network_alpha"] == "4.0"
    assert meta["ss_sd_model_hash"] == entry.short_hash and meta["ss_new_sd_model_hash"] == entry.sha256
    assert meta["ss_base_model_version"] == "sd_v1" and meta["ss_steps"] == "6"
    assert meta["ss_num_train_images"] == "6"  # 3 images x 2 repeats
    assert '"2_red cat"' in meta["ss_dataset_dirs"]
    listed = {e.name for e in studio.registry._entries.get("lora", {}).values()}
    assert "straight.safetensors" in listed, "the registry was not refreshed when the training finished"
    assert [m[0] for m in straight.metrics["loss"]] == [1, 2, 3, 4, 5, 6]
    assert straight.files and straight.files[-1].endswith("step-000006-0.png")
    assert (studio.paths.training / "straight" / "checkpoints" / "step-000003").is_dir()


def test_the_lora_changes_the_image_and_plain_diffusers_gives_the_same_image(studio, straight):
    import diffusers
    import torch

    base = _txt2img(studio, "a red cat")
    with_lora = _txt2img(studio, "a red cat <lora:straight:1>")
    assert np.abs(with_lora - base).max() > 8, "the trained LoRA did nothing"
    folder = studio.paths.model_dir("checkpoint") / "atelier-demo-sd15"
    plain = diffusers.StableDiffusionPipeline.from_pretrained(str(folder), safety_checker=None,
                                                              requires_safety_checker=False, local_files_only=True)
    plain.set_progress_bar_config(disable=True)
    plain.scheduler = diffusers.EulerDiscreteScheduler.from_config(plain.scheduler.config)
    plain.load_lora_weights(str(studio.paths.model_dir("lora")), weight_name="straight.safetensors")
    out = plain(prompt="a red cat", negative_prompt="blurry", num_inference_steps=4, guidance_scale=7.0,
                width=64, height=64, generator=torch.Generator("cpu").manual_seed(11)).images[0]
    assert np.abs(np.asarray(out).astype(int) - with_lora).max() <= 1


def test_resume_after_stop_after_steps_is_bit_identical(studio, straight):
    first = train(studio, sd_request("resumed", stop_after_steps=3))
    assert first.result["outcome"] == "stopped" and first.result["steps"] == 3
    assert first.result["output"] is None
    assert not (studio.paths.model_dir("lora") / "resumed.safetensors").exists()
    second = train(studio, sd_request("resumed", resume=True))
    assert second.result["outcome"] == "done" and second.result["steps"] == 6
    assert "resumed from step-000003" in "\n".join(second.logs)
    ours, theirs = lora_tensors(second.result["output"]), lora_tensors(straight.result["output"])
    assert ours.keys() == theirs.keys()
    for key in ours:
        assert torch_equal(ours[key], theirs[key]), key
    assert [m[0] for m in second.metrics["loss"]] == [4, 5, 6]
    assert second.metrics["loss"] == [m for m in straight.metrics["loss"] if m[0] > 3]


def torch_equal(a, b) -> bool:
    import torch

    return torch.equal(a, b)


def test_stop_saves_a_checkpoint_and_the_resumed_run_ends_where_the_straight_one_did(studio, straight):
    job = studio.submit("train_sd_lora", parse(sd_request("stopped")))
    deadline = time.monotonic() + DEADLINE_S
    while job.progress.step < 2 and not job.state.finished and time.monotonic() < deadline:
        time.sleep(0.02)
    studio.jobs.interrupt(job.id)
    job.wait(DEADLINE_S)
    assert job.state == JobState.INTERRUPTED, job.error
    stopped_at = job.result["steps"]
    if stopped_at < 6:  # the stop landed before the last step (it nearly always does)
        assert job.result["outcome"] == "stopped"
        assert job.result["checkpoint"].endswith(f"step-{stopped_at:06d}")
        resumed = train(studio, sd_request("stopped", resume=True))
        ours, theirs = lora_tensors(resumed.result["output"]), lora_tensors(straight.result["output"])
        assert all(torch_equal(ours[k], theirs[k]) for k in theirs)
    listed = [r for r in studio.jobs.listing("train_sd_lora") if r["id"] == job.id]
    assert listed and listed[0]["state"] == "interrupted"


def test_a_resume_with_other_options_is_refused_naming_the_field(studio, straight):
    from modules.errors import InvalidRequest

    with pytest.raises(InvalidRequest) as info:
        studio.submit("train_sd_lora", parse(sd_request("straight", resume=True, rank=8)))
    assert info.value.field == "rank"


def test_a_crashing_training_fails_its_job_with_the_reason_and_the_studio_serves_on(studio):
    ckpt_dir = studio.paths.model_dir("checkpoint")
    broken = ckpt_dir / "broken-model"
    shutil.copytree(ckpt_dir / "atelier-demo-sd15", broken)
    (broken / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"this is not a safetensors file")
    studio.registry.refresh("checkpoint")
    job = studio.jobs.run("train_sd_lora", parse(sd_request("crash", base_model="broken-model")),
                          timeout=DEADLINE_S)
    assert job.state == JobState.FAILED
    assert "broken-model" in job.error and "could not be loaded" in job.error, job.error
    assert _txt2img(studio, "a red cat").shape == (64, 64, 3), "the studio stopped serving"


def test_sdxl_with_the_text_encoders_trains_and_applies(studio):
    from tests.fixtures_models import save_demo_sdxl_checkpoint

    save_demo_sdxl_checkpoint(studio.paths.model_dir("checkpoint") / "tiny-xl")
    studio.registry.refresh("checkpoint")
    job = train(studio, sd_request("xl-lora", base_model="tiny-xl", train_text_encoder=True, text_encoder_lr=1e-2,
                                   max_steps=3))
    keys = set(lora_tensors(job.result["output"]))
    assert any(k.startswith("lora_unet_input_blocks_") for k in keys), sorted(keys)[:5]  # kohya's SGM names
    assert any(k.startswith("lora_te1_text_model_") for k in keys) and any(k.startswith("lora_te2_") for k in keys)
    assert studio.registry.get("lora", "xl-lora").arch == "sdxl"
    import torch

    def xl(loras=()):
        with studio.models.checkpoint("tiny-xl") as ckpt, studio.models.loras(ckpt, list(loras)):
            return ckpt.pipe(prompt="a red cat", num_inference_steps=2, height=64, width=64, output_type="np",
                             generator=torch.Generator().manual_seed(1)).images

    assert np.abs(xl([("xl-lora", 1.0)]) - xl()).max() > 1e-3


def test_the_uncached_path_and_the_other_options_run(studio):
    job = train(studio, sd_request(
        "options", cache_latents=False, cache_text_encoder_outputs=False, train_text_encoder=True,
        min_snr_gamma=5.0, noise_offset=0.05, batch_size=2, gradient_accumulation=2, gradient_checkpointing=True,
        optimizer="adafactor", lr_scheduler="cosine", lr_warmup_steps=1, max_steps=None, epochs=2,
        bucketing=False, alpha=2.0))
    # 6 samples in one 128x128 bucket, batch 2 -> 3 batches, accumulation 2 -> 2 steps an epoch, 2 epochs
    assert job.result["steps"] == 4 and job.result["total_steps"] == 4
    keys = set(lora_tensors(job.result["output"]))
    assert any(k.startswith("lora_te_text_model_encoder_layers_") for k in keys)
    lrs = [v for _, v in job.metrics["lr"]]
    assert lrs[0] == pytest.approx(1e-2) and lrs[-1] < lrs[0]  # warm-up then cosine down
    tensors = lora_tensors(job.result["output"])
    assert float(next(v for k, v in tensors.items() if k.endswith(".alpha"))) == 2.0


def test_prodigy_runs(studio):
    job = train(studio, sd_request("prodigy", optimizer="prodigy", unet_lr=1.0, max_steps=2))
    assert job.result["steps"] == 2


def test_bf16_mixed_precision_on_the_cpu_keeps_the_lora_in_fp32_and_samples(studio):
    import math

    import torch

    job = train(studio, sd_request("bf16", mixed_precision="bf16", train_text_encoder=True, max_steps=2,
                                   sample_prompts=["a red cat"], sample_steps=2))
    assert all(math.isfinite(v) for _, v in job.metrics["loss"])
    tensors = lora_tensors(job.result["output"])
    assert all(v.dtype == torch.float32 and torch.isfinite(v).all() for v in tensors.values())
    assert job.files and job.files[-1].endswith(".png")

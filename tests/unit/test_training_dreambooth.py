"""DreamBooth end to end on the demo model, in a child process under accelerate: the step math counts
the class images; missing class images are made by the studio's own txt2img jobs (before the training
takes the device) and kept for the next run; the LoRA mode's file works with <lora:name:1>; the full
fine-tune's single file loads as a studio checkpoint and draws another image than the base (its
diffusers folder draws the same one); resume with class images is bit-identical; bad input names its field."""
from __future__ import annotations

import numpy as np
import pytest

from modules.errors import InvalidRequest
from modules.jobs import JobState
from modules.training.params import OutputExists, parse
from tests.conftest import make_data_dir
from tests.training_support import (
    DEADLINE_S,
    dreambooth_request,
    make_instance_images,
    open_training_studio,
    run_training,
)

CLASS_DIR = "class_images/a_photo_of_a_cat"


@pytest.fixture(scope="module")
def studio(tmp_path_factory, demo_checkpoint):
    data = make_data_dir(tmp_path_factory.mktemp("dreambooth"), demo_checkpoint)
    make_instance_images(data / "datasets" / "sks")
    s = open_training_studio(data)
    yield s
    s.shutdown()


def train(studio, request: dict):
    return run_training(studio, "dreambooth", request)


def txt2img_jobs(studio) -> list:
    """The class-image jobs (the tests' own txt2img jobs draw "a photo of sks cat")."""
    return [j for j in studio.jobs._jobs.values() if j.kind == "txt2img" and j.request.prompt == "a photo of a cat"]


def _txt2img(studio, prompt: str, checkpoint: str | None = None):
    from modules.diffusion.params import Txt2ImgRequest

    overrides = {"sd_model_checkpoint": checkpoint} if checkpoint else {}
    job = studio.jobs.run("txt2img", Txt2ImgRequest(prompt=prompt, steps=4, width=64, height=64, seed=11,
                                                    sampler_name="Euler", save_images=False,
                                                    override_settings=overrides), timeout=120)
    job.raise_for_error()
    return np.asarray(job.result.images[0].image).astype(int)


@pytest.fixture(scope="module")
def straight(studio):
    """4 steps of DreamBooth-LoRA with prior preservation; its 3 class images are made on the way."""
    return train(studio, dreambooth_request("db-straight", rank=4))


def test_the_step_math_counts_the_class_images_and_the_plan_says_what_txt2img_will_make(studio):
    from modules.training import runs

    services = studio.jobs.services_of("train_dreambooth")
    plan = runs.plan(dreambooth_request("db-plan", max_steps=None, epochs=2, class_dataset="class_images/plan"),
                     services)
    # 3 instance images (buckets 128x128: 2, 128x64: 1), each batch of 1 beside 1 class image
    steps = plan["steps"]
    assert (steps["samples_per_epoch"], steps["steps_per_epoch"], steps["total_steps"]) == (6, 3, 6)
    assert steps["formula"] == ("3 images x 1 repeats x 2 (class images) x 2 epochs / batch 2 (1 instance + 1 class)"
                                " = 6 steps")
    assert plan["class_images"] == {"folder": "class_images/plan", "have": 0, "wanted": 3, "to_make": 3}
    alone = runs.plan(dreambooth_request("db-plan", max_steps=None, prior_preservation=False), services)
    assert alone["steps"]["samples_per_epoch"] == 3 and alone["class_images"] is None
    lora = runs.plan(dreambooth_request("db-plan"), services)["memory"]["total_bytes"]
    assert runs.plan(dreambooth_request("db-plan", mode="full"), services)["memory"]["total_bytes"] > lora


def test_class_images_are_made_by_txt2img_jobs_kept_and_the_lora_is_kohya_format(studio, straight):
    from PIL import Image
    from safetensors import safe_open

    folder = studio.paths.root / CLASS_DIR
    made = sorted(folder.glob("*.png"))
    assert [p.name for p in made] == ["class-00000-7.png", "class-00001-8.png", "class-00002-9.png"]
    with Image.open(made[0]) as image:
        assert image.size == (128, 128) and "a photo of a cat" in image.text["parameters"]
    jobs = txt2img_jobs(studio)
    assert jobs and all(j.state == JobState.DONE for j in jobs)
    assert sum(j.request.batch_size for j in jobs) == 3
    log = "\n".join(straight.logs)
    assert "making 3 with txt2img" in log and "prior preservation: 3 class images" in log
    result = straight.result
    assert result["outcome"] == "done" and result["steps"] == 4
    assert result["output"] == str(studio.paths.model_dir("lora") / "db-straight.safetensors")
    with safe_open(result["output"], "pt") as f:
        keys, meta = list(f.keys()), f.metadata()
    assert keys and all(k.startswith("lora_unet_") for k in keys)
    assert meta["ss_num_reg_images"] == "3" and meta["ss_instance_prompt"] == "a photo of sks cat"
    assert "db-straight.safetensors" in {e.name for e in studio.registry.list("lora")}


def test_the_dreambooth_lora_changes_the_image_through_the_prompt_tag(studio, straight):
    base = _txt2img(studio, "a photo of sks cat")
    assert np.abs(_txt2img(studio, "a photo of sks cat <lora:db-straight:1>") - base).max() > 8


def test_resume_with_class_images_reuses_them_and_is_bit_identical(studio, straight):
    from safetensors.torch import load_file

    before = len(txt2img_jobs(studio))
    first = train(studio, dreambooth_request("db-resumed", rank=4, stop_after_steps=2))
    assert first.result["outcome"] == "stopped" and first.result["steps"] == 2
    assert len(txt2img_jobs(studio)) == before, "the kept class images were made again"
    assert "none to make" in "\n".join(first.logs)
    second = train(studio, dreambooth_request("db-resumed", rank=4, resume=True))
    assert "resumed from step-000002" in "\n".join(second.logs)
    ours, theirs = load_file(second.result["output"]), load_file(straight.result["output"])
    assert ours.keys() == theirs.keys()
    assert all(np.array_equal(ours[k].numpy(), theirs[k].numpy()) for k in ours)
    assert second.metrics["loss"] == [m for m in straight.metrics["loss"] if m[0] > 2]


FULL = {"mode": "full", "unet_lr": 1e-3, "max_steps": 3}


@pytest.fixture(scope="module")
def full(studio, straight):
    return train(studio, dreambooth_request("db-full", **FULL))


def test_a_full_fine_tune_is_a_single_file_checkpoint_the_studio_loads_and_a_diffusers_folder(studio, full):
    import diffusers
    import torch
    from safetensors import safe_open

    job = full
    ckpts = studio.paths.model_dir("checkpoint")
    single, folder = ckpts / "db-full.safetensors", ckpts / "db-full"
    assert job.result["files"] == [str(single), str(folder), str(ckpts / "db-full.config")]
    with safe_open(str(single), "pt") as f:
        keys = set(f.keys())
    assert "model.diffusion_model.input_blocks.0.0.weight" in keys  # the original SD layout A1111 reads
    assert any(k.startswith("cond_stage_model.transformer.text_model.") for k in keys)
    listed = {e.name for e in studio.registry.list("checkpoint")}
    assert {"db-full.safetensors", "db-full"} <= listed, listed  # at once, without a refresh
    base = _txt2img(studio, "a photo of sks cat")
    tuned = _txt2img(studio, "a photo of sks cat", checkpoint="db-full.safetensors")
    assert np.abs(tuned - base).max() > 8, "the fine-tuned checkpoint draws the base model's image"
    plain = diffusers.StableDiffusionPipeline.from_pretrained(str(folder), local_files_only=True)
    plain.set_progress_bar_config(disable=True)
    plain.scheduler = diffusers.EulerDiscreteScheduler.from_config(plain.scheduler.config)
    out = plain(prompt="a photo of sks cat", num_inference_steps=4, guidance_scale=7.0, width=64, height=64,
                generator=torch.Generator("cpu").manual_seed(11)).images[0]
    assert np.abs(np.asarray(out).astype(int) - tuned).max() <= 1


def test_a_full_fine_tune_resumes_exactly(studio, full):
    from safetensors.torch import load_file

    first = train(studio, dreambooth_request("db-full-resumed", **FULL, stop_after_steps=1))
    assert first.result["outcome"] == "stopped" and first.result["steps"] == 1
    assert not (studio.paths.model_dir("checkpoint") / "db-full-resumed.safetensors").exists()
    second = train(studio, dreambooth_request("db-full-resumed", **FULL, resume=True))
    assert second.result["steps"] == 3 and "resumed from step-000001" in "\n".join(second.logs)
    ours, theirs = load_file(second.result["output"]), load_file(full.result["output"])
    assert ours.keys() == theirs.keys()
    assert all(np.array_equal(ours[k].numpy(), theirs[k].numpy()) for k in ours)


def test_bad_input_is_refused_naming_the_field(studio, straight):
    def refused(**overrides) -> str:
        with pytest.raises(InvalidRequest) as info:
            studio.submit("train_dreambooth", parse(dreambooth_request("db-bad", **overrides)))
        return info.value.field

    assert refused(class_prompt="") == "class_prompt"
    assert refused(mode="full", rank=4) == "rank"
    assert refused(class_dataset="datasets/sks/class") == "class_dataset"
    assert refused(class_dataset="../outside") == "class_dataset"
    assert refused(dataset="datasets/none") == "dataset"
    with pytest.raises(OutputExists) as info:
        studio.submit("train_dreambooth", parse(dreambooth_request("db-straight", rank=4)))
    assert info.value.field == "output_name" and info.value.status == 409


def test_stop_while_class_images_are_made_keeps_the_finished_ones_and_trains_nothing(studio, straight):
    import time

    folder = studio.paths.root / "class_images" / "slow"
    job = studio.submit("train_dreambooth", parse(dreambooth_request(
        "db-stop-early", class_dataset="class_images/slow", num_class_images=12, class_steps=40)))
    deadline = time.monotonic() + DEADLINE_S
    while not (len(list(folder.glob("*.png"))) >= 4 or job.state.finished) and time.monotonic() < deadline:
        time.sleep(0.05)  # the first txt2img job's 4 images are in
    assert job.progress.text.startswith("class images:"), job.progress.text
    studio.jobs.interrupt(job.id)
    job.wait(DEADLINE_S)
    assert job.state == JobState.INTERRUPTED, job.error
    kept = sorted(folder.glob("*.png"))
    assert job.result == {"outcome": "stopped", "class_images": len(kept)} and 4 <= len(kept) < 12
    assert len(kept) % 4 == 0, "an interrupted txt2img job's half-denoised images were kept"
    slow = [j for j in txt2img_jobs(studio) if j.request.steps == 40]
    assert slow[-1].state in (JobState.INTERRUPTED, JobState.DONE) and all(j.state.finished for j in slow)
    assert not (studio.paths.training / "db-stop-early").exists(), "the training started after Stop"

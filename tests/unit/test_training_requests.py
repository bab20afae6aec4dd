"""Training requests are refused at submit, before they wait in a queue, with the field at fault:
the dataset (empty, unreadable, outside the data dir), rank, learning rates, the base model's kind,
an existing output, options the device cannot run. A refused request leaves no run folder."""
from __future__ import annotations

import pytest

from modules.errors import AtelierError
from modules.jobs.child_failures import ChildFailed
from modules.training.params import SdLoraRequest, parse
from modules.training.runner import memory_hint, run_training
from tests.conftest import make_data_dir
from tests.training_support import make_dataset, sd_request


@pytest.fixture(scope="module")
def studio(tmp_path_factory, demo_checkpoint):
    from modules.studio import Studio, StudioOptions

    data = make_data_dir(tmp_path_factory.mktemp("train-req"), demo_checkpoint)
    make_dataset(data / "datasets" / "cats")
    (data / "datasets" / "empty").mkdir(parents=True)
    (data / "datasets" / "junk").mkdir(parents=True)
    (data / "datasets" / "junk" / "a.png").write_bytes(b"not a png at all")
    (data / "datasets" / "junk" / "b.jpg").write_bytes(b"")
    s = Studio(StudioOptions(data_dir=data, device="cpu", build_demo=False))
    s.load()
    assert s.load_error is None, s.load_error
    yield s
    s.shutdown()


def refused(studio, **overrides) -> AtelierError:
    with pytest.raises(AtelierError) as info:
        studio.submit("train_sd_lora", parse(sd_request("refused", **overrides)) if "raw" not in overrides
                      else overrides["raw"])
    assert 400 <= info.value.status < 500
    return info.value


@pytest.mark.parametrize("overrides, field, words", [
    ({"dataset": "datasets/empty"}, "dataset", "no readable images"),
    ({"dataset": "datasets/junk"}, "dataset", "unreadable"),
    ({"dataset": "datasets/nothing-here"}, "dataset", "no folder"),
    ({"dataset": "../outside"}, "dataset", "outside"),
    ({"dataset": "/etc"}, "dataset", "outside the data dir"),
    ({"dataset": "datasets/cats/2_red cat/0.png"}, "dataset", "not a folder"),
    ({"base_model": "atelier-demo-gemma2"}, "base_model", "is a llm model"),
    ({"base_model": "no-such-model"}, "base_model", "no checkpoint named"),
    ({"optimizer": "adamw8bit"}, "optimizer", "CUDA"),
    ({"mixed_precision": "fp16"}, "mixed_precision", "GPU"),
    ({"resume": True}, "output_name", "no run"),
])
def test_refusals_that_need_the_data_dir_name_the_field(studio, overrides, field, words):
    err = refused(studio, **overrides)
    assert err.field == field and words in err.message, (err.field, err.message)
    assert not (studio.paths.training / "refused").exists()


@pytest.mark.parametrize("overrides, field", [
    ({"rank": 0}, "rank"),
    ({"rank": -3}, "rank"),
    ({"unet_lr": 0}, "unet_lr"),
    ({"unet_lr": -1e-4}, "unet_lr"),
    ({"unet_lr": "fast"}, "unet_lr"),
    ({"unet_lr": float("nan")}, "unet_lr"),
    ({"text_encoder_lr": 0.0}, "text_encoder_lr"),
    ({"resolution": 500}, "resolution"),
    ({"output_name": "../escape"}, "output_name"),
    ({"output_name": ""}, "output_name"),
    ({"optimizer": "sgd"}, "optimizer"),
    ({"learnig_rate": 1e-4}, "learnig_rate"),  # a typo is refused, never ignored
    ({"kind": "nope"}, "kind"),
])
def test_refusals_of_the_fields_themselves_name_the_field(overrides, field):
    with pytest.raises(AtelierError) as info:
        parse(sd_request("refused", **overrides))
    assert info.value.field == field and info.value.status == 422, (info.value.field, info.value.message)


def test_an_existing_output_is_refused_unless_overwrite(studio):
    lora = studio.paths.model_dir("lora") / "taken.safetensors"
    lora.write_bytes(b"x")
    err = refused(studio, output_name="taken")
    assert err.field == "output_name" and err.status == 409 and "overwrite" in err.message
    studio.jobs.kind("train_sd_lora").validate(parse(sd_request("taken", overwrite=True)))  # accepted


def test_the_job_kind_is_exclusive_persisted_and_on_the_training_queue(studio):
    kind = studio.jobs.kind("train_sd_lora")
    assert (kind.queue, kind.exclusive, kind.persist) == ("training", True, True)


def test_the_plan_shows_step_math_and_memory_before_start(studio):
    from modules.training import runs
    services = studio.jobs.services_of("train_sd_lora")
    plan = runs.plan(sd_request("planned", max_steps=None, epochs=3, batch_size=2), services)
    # 3 images x 2 repeats; buckets 128x128 (4 samples) and 128x64 (2): 2 + 1 batches of 2 an epoch
    assert plan["steps"]["total_steps"] == 9 and plan["images"] == 3
    assert plan["steps"]["formula"].startswith("3 images x 2 repeats x 3 epochs / batch 2")
    assert plan["memory"]["total_bytes"] > 0 and plan["base_model"] == "atelier-demo-sd15"


class _FailingContext:
    """A job context whose child process runs out of memory."""

    def __init__(self, services):
        self.services, self.lines = services, []

    def log(self, line):
        self.lines.append(line)

    def progress(self, *a, **k):
        pass

    def run_child(self, target, request, **options):
        assert target == "modules.training.sd_lora_main:train"
        assert "--cpu" in options["launcher"] and options["memory_limit_mb"] is None
        raise ChildFailed("the child process ran out of memory (OutOfMemoryError: CUDA out of memory)")


def test_out_of_memory_says_which_options_to_lower(studio):
    ctx = _FailingContext(studio.jobs.services_of("train_sd_lora"))
    with pytest.raises(ChildFailed) as info:
        run_training(ctx, parse(sd_request("oom", batch_size=4, resolution=512)))
    message = info.value.message
    assert "ran out of memory" in message and "batch_size (now 4" in message
    assert "resolution (now 512)" in message and "gradient_checkpointing" in message
    assert "mixed_precision" in memory_hint(SdLoraRequest(**sd_request("x")), "cuda")


def test_a_generation_job_waits_for_a_training_with_a_message_saying_so():
    import threading
    import time

    from modules.jobs import JobEngine, JobKind

    engine = JobEngine()
    release = threading.Event()
    engine.add_kind(JobKind("train", lambda ctx, req: release.wait(30), queue="training", exclusive=True))
    engine.add_kind(JobKind("draw", lambda ctx, req: "drawn", queue="images"))
    training = engine.submit("train", {})
    deadline = time.monotonic() + 30
    while training.state.value != "running" and time.monotonic() < deadline:
        time.sleep(0.01)
    drawing = engine.submit("draw", {})
    while "training job has the device" not in drawing.progress.text and time.monotonic() < deadline:
        time.sleep(0.01)
    assert drawing.state.value == "queued" and "training job has the device" in drawing.progress.text
    release.set()
    assert drawing.wait(30).result == "drawn"
    engine.shutdown()

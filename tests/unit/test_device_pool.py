"""Several devices: one image worker per device, a job goes where its checkpoint is, never two copies.

The pool is simulated on the CPU (`--device cpu,cpu`: two devices, cpu:0 and cpu:1), with the
real engine, model manager, diffusion task and the two tiny demo checkpoints. An after_generate
hook (an extension's entry point, run while the job holds its checkpoint) keeps chosen jobs
running until the test lets them go, so "at once" and "waits" are seen, not guessed from timing.
"""
from __future__ import annotations

import logging
import shutil
import threading
import time

import pytest

from modules.diffusion.params import Txt2ImgRequest
from modules.jobs import JobState
from modules.models.demo import DEMO_NAME
from tests.conftest import SECOND, wait_until

DEADLINE_S = 60
STAYS_QUEUED_S = 1.0  # how long a job is watched to stay queued while a free device could take it


class Holds:
    """Jobs whose prompt starts with a hold name stay running (checkpoint in hand) until released."""

    def __init__(self):
        self.events: dict[str, threading.Event] = {}
        self.reached: set[str] = set()  # holds whose job is there now: images made, checkpoint in hand

    def __call__(self, result):
        name = result.request.prompt.split()[0]
        if name in self.events:
            self.reached.add(name)
            assert self.events[name].wait(DEADLINE_S), f"hold {name} was never released"
        return result

    def add(self, name: str) -> str:
        self.events[name] = threading.Event()
        return name

    def release(self, name: str) -> None:
        self.events[name].set()


@pytest.fixture
def pool(data_dir, second_checkpoint, caplog):
    from modules.studio import Studio, StudioOptions

    shutil.copytree(second_checkpoint, data_dir / "models" / "Stable-diffusion" / SECOND)
    caplog.set_level(logging.INFO, logger="atelier.models")
    s = Studio(StudioOptions(data_dir=data_dir, device="cpu,cpu", build_demo=False))
    s.load()
    assert s.load_error is None, s.load_error
    s.holds = Holds()
    s.hooks.add("after_generate", s.holds, owner="test-holds")
    yield s
    for event in s.holds.events.values():
        event.set()
    s.shutdown()


def _submit(studio, prompt: str, checkpoint: str | None = None):
    override = {"sd_model_checkpoint": checkpoint} if checkpoint else {}
    return studio.submit("txt2img", Txt2ImgRequest(prompt=prompt, steps=2, width=64, height=64, seed=1,
                                                   save_images=False, override_settings=override))


def _loads(caplog, name: str) -> int:
    """How often `name` was loaded from disk, start-up included."""
    records = caplog.get_records("setup") + caplog.get_records("call")
    return sum(1 for r in records if r.getMessage().startswith(f"checkpoint {name} loaded on"))


def _held(studio, *names: str) -> None:
    wait_until(lambda: studio.holds.reached >= set(names), DEADLINE_S, f"jobs {names} at their hold")


def _stays_queued(job) -> None:
    end = time.monotonic() + STAYS_QUEUED_S
    while time.monotonic() < end:
        assert job.state == JobState.QUEUED, f"{job.id} left the queue on {job.device}"
        time.sleep(0.02)


def _done(job) -> None:
    job.wait(DEADLINE_S)
    assert job.state == JobState.DONE, job.error


def test_the_pool_has_two_devices_and_the_start_up_checkpoint_is_on_the_first(pool, caplog):
    assert [d.lane for d in pool.devices] == ["cpu:0", "cpu:1"]
    assert pool.models.lane_of(pool.models.model_key("checkpoint", DEMO_NAME)) == "cpu:0"
    assert _loads(caplog, DEMO_NAME) == 1


def test_two_checkpoints_run_on_two_devices_at_once(pool, caplog):
    first = _submit(pool, pool.holds.add("first"), DEMO_NAME)
    second = _submit(pool, pool.holds.add("second"), SECOND)
    _held(pool, "first", "second")  # both running together
    assert (first.device, second.device) == ("cpu:0", "cpu:1")  # the demo is where start-up put it
    assert pool.models.lane_of(pool.models.model_key("checkpoint", SECOND)) == "cpu:1"

    # cpu:0 is free, but SECOND is in use on cpu:1: a job for it waits there (no second copy on cpu:0).
    again = _submit(pool, "again", SECOND)
    pool.holds.release("first")
    _done(first)
    _stays_queued(again)
    pool.holds.release("second")
    _done(second)
    _done(again)
    assert again.device == "cpu:1"
    assert _loads(caplog, DEMO_NAME) == 1 and _loads(caplog, SECOND) == 1
    assert len([m for m in pool.models.resident() if m.kind == "checkpoint"]) == 2


def test_a_job_waits_for_the_device_holding_its_checkpoint_even_when_another_is_free(pool, caplog):
    busy = _submit(pool, pool.holds.add("busy"))  # the default checkpoint, resident on cpu:0
    _held(pool, "busy")
    assert busy.device == "cpu:0"
    waiting = _submit(pool, "waiting")
    _stays_queued(waiting)  # cpu:1 is idle all along
    pool.holds.release("busy")
    _done(busy)
    _done(waiting)
    assert waiting.device == "cpu:0"
    assert _loads(caplog, DEMO_NAME) == 1


def test_interrupting_one_job_stops_that_job_and_not_the_other(pool):
    kept = _submit(pool, pool.holds.add("kept"), DEMO_NAME)
    stopped = _submit(pool, pool.holds.add("stopped"), SECOND)
    _held(pool, "kept", "stopped")
    pool.jobs.interrupt(stopped.id)
    pool.holds.release("stopped")
    stopped.wait(DEADLINE_S)
    assert stopped.state == JobState.INTERRUPTED
    assert kept.state == JobState.RUNNING and not kept.interrupt_requested
    pool.holds.release("kept")
    _done(kept)
    assert len(kept.result.images) == 1


def test_the_engine_reports_each_device_job(pool):
    job = _submit(pool, pool.holds.add("shown"), SECOND)
    _held(pool, "shown")
    # SECOND is on no device: the least busy free one takes it (cpu:0 holds the demo checkpoint).
    assert pool.jobs.on_devices("images") == {"cpu:0": None, "cpu:1": job}
    assert job.snapshot()["device"] == "cpu:1"
    from webui.ui.progress import devices_text, progress_html, snapshot

    assert "on cpu:1" in progress_html(snapshot(job))  # the tab's progress line names the device
    queued = _submit(pool, "queued", SECOND)  # SECOND is busy on cpu:1: this one waits, and its line says why
    line = progress_html(snapshot(queued), devices=devices_text(pool.jobs.on_devices("images")))
    assert queued.state == JobState.QUEUED and "Waiting in the queue… (cpu:0: idle · cpu:1: txt2img step 2/2)" in line
    pool.holds.release("shown")
    _done(job)
    _done(queued)


def test_a_model_in_use_on_one_device_is_waited_for_then_moved_never_loaded_again(pool, caplog):
    models = pool.models
    key = models.model_key("checkpoint", DEMO_NAME)
    took = threading.Event()

    def on_the_other_device():
        with models.on_device("cpu:1"), models.checkpoint(DEMO_NAME):
            took.set()

    with models.checkpoint(DEMO_NAME):  # this thread is not bound: the first device, where it is
        other = threading.Thread(target=on_the_other_device)
        other.start()
        assert not took.wait(STAYS_QUEUED_S)  # in use on cpu:0: cpu:1 waits, it does not load a copy
        assert models.lane_of(key) == "cpu:0"
    other.join(DEADLINE_S)
    assert took.is_set() and models.lane_of(key) == "cpu:1"
    assert _loads(caplog, DEMO_NAME) == 1
    assert [row["location"] for row in models.describe() if row["name"] == DEMO_NAME] == ["cpu:1"]


# -- the flag -----------------------------------------------------------------------------------
@pytest.mark.parametrize("value", ["cuda", "cuda:0,cuda:2", "cpu", "auto", "mps", "cuda:1", "cpu,cpu"])
def test_device_lists_are_accepted_by_the_flag(value, tmp_path):
    from webui.flags import build_parser, check_args, options_from_args

    parser = build_parser()
    args = parser.parse_args(["--device", value])
    check_args(parser, args)
    assert options_from_args(args, tmp_path).device == value


@pytest.mark.parametrize("value", ["gpu", "cuda:", "cuda:0,", "cuda:a", "cuda:0;cuda:1", "mps,cpu"])
def test_a_malformed_device_is_a_usage_error(value, capsys):
    from webui.flags import build_parser, check_args

    parser = build_parser()
    args = parser.parse_args(["--device", value])
    with pytest.raises(SystemExit) as exc:
        check_args(parser, args)
    assert exc.value.code == 2 and "--device" in capsys.readouterr().err


def test_one_device_is_named_as_before_and_a_cpu_list_simulates_a_pool():
    from modules.devices import DeviceChoice, choose_devices

    assert choose_devices("cpu") == [DeviceChoice("cpu", "float32")]
    assert choose_devices("cpu")[0].lane == "cpu"
    assert [(d.name, d.lane) for d in choose_devices("cpu,cpu")] == [("cpu", "cpu:0"), ("cpu", "cpu:1")]


@pytest.mark.parametrize("value, words", [("cuda:0,cuda:0", "twice"), ("cuda:0,cuda:2", "torch sees")])
def test_gpus_that_are_not_there_or_listed_twice_are_refused_by_name(value, words):
    from modules.devices import choose_devices

    with pytest.raises(ValueError, match=words):
        choose_devices(value)

"""An extension's training kind (api.add_training_kind) on a Studio without a model: its request becomes a
Train-tab form laid out as it asks, its check refuses naming the field at submit, its child entry runs in a
child process (the extension's interpreter: here the studio's own) and its metrics arrive as the job's series
under the names its plots show; a Stop reaches it, a crash there fails only that job, and disabling the
extension removes the kind. The built-in kinds are in the same registry."""
from __future__ import annotations

import pytest

from modules.errors import AtelierError, InvalidRequest
from tests.unit.test_extensions_support import write_extension

MAIN = """
from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field


def setup(api):
    class CountRequest(api.types.TrainingRequest):
        \"\"\"Counting (a test kind).\"\"\"
        kind: Literal["count"] = "count"
        OUTPUT_KIND: ClassVar[str] = "counted"
        BASE_MODEL_KIND: ClassVar[str] = "counted"
        crash: bool = Field(False, description="the child exits hard")
        wait_for_stop: bool = False

    folder = api.add_model_kind("counted", "Counted")

    def check(req, data_root: Path):
        dataset = (data_root / req.dataset).resolve()
        if not dataset.is_dir():
            raise api.types.InvalidRequest(f"no folder {req.dataset!r}", "dataset")
        images = [(p.name, 8, 8) for p in sorted(dataset.iterdir())]
        return api.types.TrainingInputs(dataset, images, folder / f"{req.output_name}.safetensors", {"name": "nothing"},
                                        extra={"seen": len(images)})

    finished = []
    api.add_training_kind("count", CountRequest, check, "child.py:train",
                          plots=(("score", ("score",)), ("other", ("half",))), layout={"Basics": ("crash",)},
                          finish=lambda result: finished.append(result["output"]), stop_grace_s=20)
    api.finished = finished
"""

CHILD = """
import os
import time
from pathlib import Path


def train(ctx, job):
    req = job["request"]
    if req["crash"]:
        os._exit(3)
    for epoch in range(1, req["epochs"] + 1):
        ctx.progress(epoch, req["epochs"])
        ctx.metric("score", epoch * 10.0, epoch)
        ctx.metric("half", epoch / 2, epoch)
    deadline = time.monotonic() + 30
    while req["wait_for_stop"] and not ctx.interrupted and time.monotonic() < deadline:
        time.sleep(0.05)
    Path(job["output"]).write_text(f"{job['extra']['seen']} images, {job['base']['name']}")
    return {"output": job["output"], "steps": req["epochs"], "stopped": ctx.interrupted}
"""


@pytest.fixture
def studio(tmp_path):
    from modules.studio import Studio, StudioOptions

    s = Studio(StudioOptions(data_dir=tmp_path / "data", device="cpu", build_demo=False))
    s.load()
    folder = write_extension(tmp_path / "counter", MAIN)
    (folder / "child.py").write_text(CHILD)
    dataset = s.paths.root / "datasets" / "three"
    dataset.mkdir(parents=True)
    for i in range(3):
        (dataset / f"{i}.png").write_bytes(b"x")
    info = s.extensions.install(str(folder))
    assert info["status"] == "enabled", info["error"]
    yield s
    s.shutdown()


def request(**fields) -> dict:
    return {"kind": "count", "output_name": "counted-1", "dataset": "datasets/three", "epochs": 3, **fields}


def test_an_extensions_training_kind_trains_in_a_child_with_its_metrics_and_form(studio):
    from modules.jobs import JobState
    from modules.training import runs
    from modules.training.task import services_of
    from webui.ui.train_form import form_fields

    services = services_of(studio.jobs)
    assert services.kinds.names()[:4] == ["sd_lora", "lm_lora", "dreambooth", "paligemma_lora"]
    spec = services.kinds.get("count")
    specs = {s.name: s for s in form_fields("count", spec.request, spec.layout)}
    assert specs["crash"].group == "Basics" and specs["wait_for_stop"].group == "Options"
    assert "max_steps" not in specs and "optimizer" not in specs, "only the fields every kind shares, and its own"

    plan = runs.plan(request(), services)
    assert plan["steps"]["total_steps"] == 9 and plan["memory"] is None and plan["base_model"] == "nothing"
    with pytest.raises(InvalidRequest) as refused:
        studio.submit("train_count", request(dataset="datasets/none"))
    assert refused.value.field == "dataset"

    job = studio.jobs.run("train_count", request(), timeout=120)
    assert job.state == JobState.DONE, job.error
    assert job.metrics == {"score": [(1, 10.0), (2, 20.0), (3, 30.0)], "half": [(1, 0.5), (2, 1.0), (3, 1.5)]}
    output = studio.paths.model_dir("counted") / "counted-1.safetensors"
    assert output.read_text() == "3 images, nothing" and job.result["output"] == str(output)
    assert studio.extensions.get("counter").api.finished == [str(output)], "finish ran in the server"
    assert [e.name for e in studio.registry.list("counted")] == ["counted-1.safetensors"], "refreshed at the end"
    with pytest.raises(AtelierError) as taken:  # refused at submit: the result exists
        studio.submit("train_count", request())
    assert taken.value.field == "output_name"

    crashed = studio.jobs.run("train_count", request(output_name="crash", crash=True), timeout=120)
    assert crashed.state == JobState.FAILED and "status 3" in crashed.error, crashed.error

    stopping = studio.submit("train_count", request(output_name="stopped", wait_for_stop=True))
    from tests.conftest import wait_until

    wait_until(lambda: stopping.metrics.get("score"), 60, "the child's first metric", interval=0.05)
    studio.jobs.interrupt(stopping.id)
    stopping.wait(60)
    assert stopping.state == JobState.INTERRUPTED and stopping.result["stopped"] is True

    studio.extensions.disable("counter")
    assert "count" not in services.kinds.names()
    with pytest.raises(InvalidRequest, match="unknown training kind"):
        runs.plan(request(), services)
    studio.extensions.enable("counter")
    assert studio.jobs.run("train_count", request(output_name="counted-2"), timeout=120).state == JobState.DONE


def test_the_train_tab_has_its_form_and_its_live_plots(studio):
    import gradio as gr

    from modules.jobs import JobState
    from webui.ui import build_ui
    from webui.ui.train_live import watch

    tab = build_ui(studio).atelier_components["tab_train"]
    forms, start = tab["_forms"], tab["_handlers"]["start"]
    assert "count" in forms.models and "sd_lora" in forms.models
    flat = [(dict(output_name="tab-count", dataset="datasets/three", epochs=2).get(s.name, s.default)
             if k == "count" else s.default) for k, specs in forms.specs.items() for s in specs]
    job = studio.jobs.get(start("count", *flat)[0])
    plots = studio.training_kinds.get("count").plots
    panels = list(watch(job, 20.0, gr.skip, plots))
    assert job.state == JobState.DONE, job.error
    progress, metrics, first, second, *_ = panels[-1]
    sent = [p[2] for p in panels if not isinstance(p[2], type(gr.skip()))]
    assert list(sent[-1]["series"]) == ["score", "score"] and list(sent[-1]["value"]) == [10.0, 20.0]
    assert "score 20 (step 2)" in metrics and "half 1 (step 2)" in metrics


def test_the_yolo_kinds_form_round_trips_and_its_fields_that_would_not_act_are_refused():
    from types import SimpleNamespace

    from modules.training.kinds import TrainingKindRegistry, TrainingKindSpec
    from modules.training.params import BaseTrainingRequest, parse
    from tests.unit.test_yolo_extension import part
    from webui.ui.train_form import form_fields, to_form, to_request

    train_kind = part("train_kind")
    model = train_kind.request_model(SimpleNamespace(TrainingRequest=BaseTrainingRequest, InvalidRequest=InvalidRequest))
    kinds = TrainingKindRegistry()
    kinds.add(TrainingKindSpec("yolo", model, lambda *a: None, "train_main.py:train", owner="yolo"))
    specs = form_fields("yolo", model, train_kind.LAYOUT)
    by_name = {s.name: s for s in specs}
    assert by_name["imgsz"].group == "Basics" and by_name["optimizer"].widget == "choice"
    assert by_name["lr0"].zero_is_none and by_name["base_model"].default == "yolov8n.yaml"
    values = [{"output_name": "rects", "dataset": "datasets/rects"}.get(s.name, s.default) for s in specs]
    req = parse(to_request("yolo", specs, values), kinds)
    assert isinstance(req, model) and (req.imgsz, req.lr0, req.base_model) == (640, None, "yolov8n.yaml")
    back, unknown = to_form(specs, req.model_dump(mode="json"))
    assert not unknown and parse(to_request("yolo", specs, back), kinds) == req
    for fields, field in (({"lr0": 0.02}, "lr0"), ({"resume": True}, "resume"), ({"imgsz": 50}, "imgsz"),
                          ({"max_steps": 3}, "max_steps")):  # a built-in kinds' field: refused, not ignored
        with pytest.raises(InvalidRequest) as refused:
            parse({"kind": "yolo", "output_name": "r", "dataset": "d", **fields}, kinds)
        assert refused.value.field == field
    assert parse({"kind": "yolo", "output_name": "r", "dataset": "d", "optimizer": "SGD", "lr0": 0.02}, kinds).lr0 == 0.02


@pytest.mark.timeout(1800)
def test_yolo_enabled_at_start_has_its_form_in_the_train_tab_with_the_architectures(tmp_path):
    from tests.unit.test_yolo_extension import ENVS, enable_yolo, studio_with_envs
    from webui.ui import build_ui

    first = studio_with_envs(tmp_path / "data", ENVS)
    enable_yolo(first)  # remembered in the settings: the next start loads it before the UI is built
    first.shutdown()
    studio = studio_with_envs(tmp_path / "data", ENVS)
    try:
        tab = build_ui(studio).atelier_components["tab_train"]
        forms = tab["_forms"]
        assert "yolo" in forms.models and {"imgsz", "optimizer", "lr0", "workers"} <= {s.name for s in forms.specs["yolo"]}
        flat = [s.default for k in forms.models for s in forms.specs[k]]
        names = [(k, s.name) for k in forms.models for s in forms.specs[k]]
        shown = tab["_handlers"]["show"]("yolo", "", *flat)
        base = shown[names.index(("yolo", "base_model"))]
        choices = [c[1] if isinstance(c, (tuple, list)) else c for c in base.choices]
        assert "yolov8n.yaml" in choices and "yolo11s.yaml" in choices, choices
    finally:
        studio.shutdown()

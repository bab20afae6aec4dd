"""The Train tab without a browser: every kind's form (built from its request model) round-trips to a
valid request; a bad value is refused naming the field, in the plan panel and at Start; the plan is
/train/plan's step math; presets are saved in the data dir and load again in a new Studio (a restart);
the caption editor writes .txt captions inside datasets/ and refuses paths outside it."""
from __future__ import annotations

import time

import gradio as gr
import pytest

from modules.errors import AtelierError, InvalidRequest
from modules.training.params import KINDS, parse
from tests.training_support import make_dataset
from webui.ui.train_form import error_text, form_fields, to_form, to_request

FILL = {"text": "abc", "model": "", "dataset": "datasets/x", "lines": "a prompt", "words": "abc"}
# Fields a kind's defaults leave to the person, beside the required ones (DreamBooth's prior preservation,
# on by default, needs a class prompt).
KIND_FILL = {"dreambooth": {"class_prompt": "a photo of a dog"}}


def _required_values(specs, kind: str) -> list:
    """The form's defaults, with every required field filled in as a person would."""
    extra = KIND_FILL.get(kind, {})
    return [extra[s.name] if s.name in extra else FILL[s.widget] if s.required and s.widget in FILL else s.default
            for s in specs]


def _changed(spec, value):
    """A value other than the default that the field's type allows (no bounds needed)."""
    if spec.widget == "bool":
        return not value
    if spec.widget == "choice":
        return str(spec.choices[-1])
    if spec.widget == "lines":
        return "first prompt\nsecond prompt"
    return value


@pytest.mark.parametrize("kind", list(KINDS))
def test_every_kinds_form_round_trips_to_its_request(kind):
    model = KINDS[kind]
    specs = form_fields(kind, model)
    assert {s.name for s in specs} == set(model.model_fields) - {"kind"}, "every field has a widget"
    values = _required_values(specs, kind)
    req = parse(to_request(kind, specs, values))
    required = {s.name: req.model_dump()[s.name] for s in specs if s.required or s.name in KIND_FILL.get(kind, {})}
    assert isinstance(req, model) and req == model(**required), "the form's defaults are the model's"
    changed = [_changed(s, v) for s, v in zip(specs, values)]
    req2 = parse(to_request(kind, specs, changed))
    assert req2 != req or not any(s.widget in ("bool", "choice") for s in specs)
    back, unknown = to_form(specs, req2.model_dump(mode="json"))
    assert not unknown and parse(to_request(kind, specs, back)) == req2, "request → form → the same request"


def test_fields_get_widgets_by_type_and_groups_by_the_layout_table():
    specs = {s.name: s for s in form_fields("sd_lora", KINDS["sd_lora"])}
    assert specs["optimizer"].widget == "choice" and "adamw8bit" in specs["optimizer"].choices
    assert specs["bucketing"].widget == "bool" and specs["rank"].widget == "int"
    assert specs["unet_lr"].widget == "float" and specs["alpha"].optional
    assert specs["sample_prompts"].widget == "lines" and specs["base_model"].widget == "model"
    assert "network_dim" in specs["rank"].info and "≥ 1" in specs["rank"].info
    assert (specs["rank"].group, specs["unet_lr"].group, specs["dataset"].group) == ("Network", "Optimizer", "Basics")
    lm = {s.name: s for s in form_fields("lm_lora", KINDS["lm_lora"])}
    assert lm["target_modules"].widget == "words" and lm["quantization"].group == "Network"
    body = to_request("lm_lora", list(lm.values()), [("q_proj, v_proj" if s.name == "target_modules" else s.default)
                                                     for s in lm.values()])
    assert body["target_modules"] == ["q_proj", "v_proj"]


def test_a_field_the_layout_table_does_not_name_goes_to_the_default_group():
    from pydantic import Field

    from modules.training.params import SdLoraRequest
    from webui.ui.train_form import DEFAULT_GROUP

    class NewKind(SdLoraRequest):  # as a kind another package adds to KINDS
        """A new kind."""

        class_prompt: str = Field("", description="the class")
        prior_loss_weight: float = Field(1.0, ge=0)

    specs = {s.name: s for s in form_fields("new_kind", NewKind)}
    assert specs["class_prompt"].group == DEFAULT_GROUP and specs["class_prompt"].info == "class_prompt: the class"
    assert specs["prior_loss_weight"].widget == "float" and specs["rank"].group == "Network"


@pytest.mark.parametrize("field, value, word", [("rank", 0, "greater than or equal to 1"),
                                                 ("unet_lr", -1.0, "greater than 0"),
                                                 ("epochs", None, "empty"),
                                                 ("resolution", 100, "multiple of 64")])
def test_a_bad_value_is_refused_naming_the_field(field, value, word):
    specs = form_fields("sd_lora", KINDS["sd_lora"])
    values = [value if s.name == field else v for s, v in zip(specs, _required_values(specs, "sd_lora"))]
    with pytest.raises(InvalidRequest) as err:
        parse(to_request("sd_lora", specs, values))
    assert err.value.field == field and word in err.value.message
    label = next(s.label for s in specs if s.name == field)
    assert error_text(err.value, specs).startswith(f"{label} ({field}): ")


@pytest.fixture
def trained_studio(data_dir):
    from modules.studio import Studio, StudioOptions

    make_dataset(data_dir / "datasets" / "cats")
    s = Studio(StudioOptions(data_dir=data_dir, device="cpu", build_demo=False))
    s.load()
    assert s.load_error is None, s.load_error
    yield s
    s.shutdown()


def _tab(studio):
    from webui.ui import build_ui

    return build_ui(studio).atelier_components["tab_train"]


def _values(tab, kind: str, **fields) -> list:
    """The flat values of every kind's widgets: the kind's defaults with `fields`, the others' defaults."""
    forms = tab["_forms"]
    flat = []
    for k, specs in forms.specs.items():
        flat += [fields[s.name] if k == kind and s.name in fields else s.default for s in specs]
    return flat


def test_the_plan_panel_shows_the_step_math_and_names_a_bad_field(trained_studio):
    tab = _tab(trained_studio)
    plan, forms = tab["_handlers"]["plan"], tab["_forms"]
    good = dict(output_name="tab-plan", dataset="datasets/cats", resolution=128, epochs=2)
    text = plan("sd_lora", forms.values_of("sd_lora", _values(tab, "sd_lora", **good)))
    assert "3 images x 2 repeats x 2 epochs / batch 1 = 12 steps" in text and "12 steps" in text, text
    assert "GiB" in text and "atelier-demo-sd15" in text
    bad = plan("sd_lora", forms.values_of("sd_lora", _values(tab, "sd_lora", **good, rank=0)))
    assert bad.startswith("⚠️ Rank (rank):"), bad
    missing = plan("sd_lora", forms.values_of("sd_lora", _values(tab, "sd_lora", **{**good, "dataset": "datasets/no"})))
    assert "(dataset):" in missing and "no folder" in missing, missing
    with pytest.raises(gr.Error) as err:  # Start refuses the same way, nothing is queued
        tab["_handlers"]["start"]("sd_lora", *_values(tab, "sd_lora", **good, rank=0))
    assert "Rank (rank)" in err.value.message
    assert trained_studio.jobs.listing("train_sd_lora") == []


def test_presets_are_saved_in_the_data_dir_and_survive_a_restart(data_dir):
    from modules.studio import Studio, StudioOptions

    first = Studio(StudioOptions(data_dir=data_dir, device="cpu", build_demo=False))
    first.load()
    try:
        tab = _tab(first)
        h = tab["_handlers"]
        h["save_preset"]("cats 128", "sd_lora", *_values(tab, "sd_lora", output_name="p", dataset="datasets/cats",
                                                          rank=16, optimizer="prodigy", sample_prompts="a\nb"))
        with pytest.raises(gr.Error):
            h["save_preset"]("../escape", "sd_lora", *_values(tab, "sd_lora"))
    finally:
        first.shutdown()
    assert (data_dir / "presets" / "training" / "cats 128.json").is_file()
    assert not list((data_dir / "presets").rglob("*.tmp")) and not (data_dir.parent / "escape.json").exists()

    again = Studio(StudioOptions(data_dir=data_dir, device="cpu", build_demo=False))
    again.load()
    try:
        tab = _tab(again)
        forms, h = tab["_forms"], tab["_handlers"]
        kind, *values, status = h["load_preset"]("cats 128")
        assert kind == "sd_lora" and "Loaded" in status
        mine = dict(zip([s.name for s in forms.specs["sd_lora"]], values[:len(forms.specs["sd_lora"])]))
        assert (mine["rank"], mine["optimizer"], mine["sample_prompts"]) == (16, "prodigy", "a\nb")
        req = parse(forms.request("sd_lora", list(mine.values())))
        assert req.rank == 16 and req.sample_prompts == ["a", "b"] and req.output_name == "p"
        h["delete_preset"]("cats 128")
        assert not (data_dir / "presets" / "training" / "cats 128.json").exists()
        with pytest.raises(gr.Error):
            h["load_preset"]("cats 128")
    finally:
        again.shutdown()


def test_the_caption_editor_adds_images_and_writes_captions_inside_datasets(tmp_path):
    from modules.training import captions
    from modules.training.dataset import scan_dataset

    uploads = make_dataset(tmp_path / "uploads") / "2_red cat"
    root = tmp_path / "data"
    folder = captions.folder_path(root, "dogs/5_brown dog", create=True)
    written = captions.add_images(folder, [str(uploads / "0.png"), str(uploads / "1.png")])
    assert written == ["0.png", "1.png"]
    assert captions.add_images(folder, [str(uploads / "0.png")]) == ["0-1.png"], "an existing name is kept"
    assert captions.folders(root) == ["dogs", "dogs/5_brown dog"]
    captions.write_caption(folder, "0.png", "a brown dog,\n running")
    assert (folder / "0.txt").read_text(encoding="utf-8") == "a brown dog, running\n"
    assert captions.caption_of(folder / "0.png") == "a brown dog, running"
    scan = scan_dataset(root / "datasets" / "dogs")
    assert {i.path: (i.caption, i.repeats) for i in scan.items}["5_brown dog/0.png"] == ("a brown dog, running", 5)
    for bad in ("../outside", "/etc", "dogs/../../x"):
        with pytest.raises(AtelierError):
            captions.folder_path(root, bad, create=True)
    with pytest.raises(AtelierError):
        captions.write_caption(folder, "../../../x.png", "no")
    with pytest.raises(AtelierError):
        captions.add_images(folder, [str(tmp_path / "notes.exe")])
    assert not (tmp_path / "outside").exists() and not (root / "outside").exists()


def _drain(job, deadline_s: float = 600) -> list:
    from webui.ui.train_live import watch

    deadline = time.monotonic() + deadline_s
    panels = []
    for panel in watch(job, 5.0, gr.skip):
        panels.append(panel)
        assert time.monotonic() < deadline, "the training did not end in time"
    return panels


def _sent(panels, index: int) -> list:
    """What the panel sent at output `index` (the plots and the gallery are skipped when unchanged)."""
    return [p[index] for p in panels if not isinstance(p[index], type(gr.skip()))]


def test_start_stop_and_resume_through_the_tab_with_the_live_panel(trained_studio):
    from modules.jobs import JobState
    from tests.conftest import wait_until

    tab = _tab(trained_studio)
    h = tab["_handlers"]
    job_id, _ = h["start"]("sd_lora", *_values(tab, "sd_lora", output_name="tab-run", dataset="datasets/cats",
                                                 resolution=64, max_steps=8, sample_every=4, sample_steps=1,
                                                 sample_prompts="a red cat"))
    job = trained_studio.jobs.get(job_id)
    assert job.kind == "train_sd_lora" and job.request.output_name == "tab-run"
    wait_until(lambda: job.metrics.get("loss") or job.state.finished, 600, "the first step", interval=0.05)
    h["stop"](job_id)
    *_, result = _drain(job)[-1]
    assert job.state == JobState.INTERRUPTED and result.startswith("⏹ Stopped at step"), result
    assert "Checkpoint saved" in result and "tab-run/checkpoints/step-" in result
    stopped = job.result["steps"]
    assert h["show"]("sd_lora", "", *_values(tab, "sd_lora"))[-1] == job_id, "a page opened now shows it"

    again = trained_studio.jobs.get(h["resume"]("tab-run"))
    panels = _drain(again)
    assert again.state == JobState.DONE, again.error
    progress, metrics, loss, lr, samples, log, result = panels[-1]
    assert "Step 8/8" in progress and "loss points" in metrics
    assert list(_sent(panels, 2)[-1]["step"]) == list(range(stopped + 1, 9)), "the loss plot has every step"
    assert _sent(panels, 4)[-1][-1].endswith("samples/step-000008-0.png")
    assert "step math" in log and result.startswith("✅ Done: 8 steps") and "tab-run.safetensors" in result

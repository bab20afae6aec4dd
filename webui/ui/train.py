"""Train tab (kohya_ss / LLaMA-Factory style): a kind picker over the training kinds (modules/training/kinds.py:
the built-in ones of params.py's KINDS and those extensions loaded at start added), each kind's form built from
its request model (train_form.py); before Start the step math and memory
estimate of /atelier/v1/train/plan, updated as the form changes, with errors naming the field; Start
submits the same typed request POST /atelier/v1/train takes, as a training job; the live panel
(train_live.py) follows it — and finds the running training again after a page reload; Stop (a
checkpoint, then the end), Resume from a saved run; named presets (presets/training/ in the data dir);
the dataset caption editor (train_captions.py). `/train_start` and `/train_plan` are the public API."""
from __future__ import annotations

from modules.errors import AtelierError
from modules.extensions.tabs import TabSpec
from webui.ui.gradio_api import endpoint
from webui.ui.train_form import build_form, error_text, form_fields, to_form, to_request

STARTING = "The studio is still starting; the plan shows once it is ready."
_GIB = 1024**3


def kind_title(model) -> str:
    doc = (model.__doc__ or "").strip().splitlines()[0] if model.__doc__ else ""
    return doc.split(" (")[0].rstrip(".") or model.__name__


class TrainForms:
    """Every kind's field specs and widgets, and the flat list of widgets the events pass (kind by kind)."""

    def __init__(self, kinds: dict, layouts: dict | None = None):
        self.models = dict(kinds)
        own = layouts or {}
        self.specs = {kind: form_fields(kind, model, own.get(kind)) for kind, model in self.models.items()}
        self.widgets: dict[str, dict] = {}

    def flat(self) -> list:
        return [w for kind in self.models for w in self.widgets[kind].values()]

    def values_of(self, kind: str, flat_values) -> list:
        """The kind's values out of the flat list."""
        start = 0
        for k in self.models:
            n = len(self.specs[k])
            if k == kind:
                return list(flat_values[start:start + n])
            start += n
        raise AtelierError(f"unknown training kind {kind!r}; known: {', '.join(self.models)}", "kind")

    def request(self, kind: str, values) -> dict:
        return to_request(kind, self.specs[kind], values)


def plan_markdown(plan: dict) -> str:
    steps, memory = plan["steps"], plan["memory"]
    lines = [f"**Steps**: {steps['formula']}  → **{steps['total_steps']} steps** "
             f"({steps['steps_per_epoch']} per epoch)",
             f"**Memory**: about {memory['total_gib']} GiB (weights {memory['weights_bytes'] / _GIB:.2f}, "
             f"trainable {memory['trainable_bytes'] / _GIB:.2f}, activations {memory['activations_bytes'] / _GIB:.2f} GiB)"
             f" — {memory['note']}" if memory else "**Memory**: not estimated for this kind",
             f"Base model: `{plan['base_model']}` · {steps['images']} images or examples"
             + (f" · {plan['processes']} processes" if plan["processes"] > 1 else "")]
    if plan["skipped"]:
        shown = "; ".join(f"{path}: {why}" for path, why in plan["skipped"][:5])
        lines.append(f"⚠️ {len(plan['skipped'])} skipped: {shown}")
    if plan["run_exists"] or plan["output_exists"]:
        lines.append("⚠️ A result or run of this name exists: Start refuses it unless *Overwrite* or *Resume* is set.")
    return "\n\n".join(lines)


def _edit_ends(gr, widget) -> list:
    """The events that end an edit — a choice made, a box ticked, a box left or submitted — not every keystroke
    (a plan reads the dataset: the LM kinds load a tokenizer)."""
    if isinstance(widget, gr.Dropdown):
        return [widget.select, widget.blur] if widget.allow_custom_value else [widget.select]
    if isinstance(widget, gr.Checkbox):
        return [widget.input]
    return [widget.blur, widget.submit]


def build(studio) -> dict:
    import gradio as gr

    from modules.training import runs
    from modules.training.kinds import DEFAULT_PLOTS
    from modules.training.params import job_kind, parse
    from modules.training.presets import PresetStore
    from modules.training.task import QUEUE, TrainingServices, services_of
    from webui.ui import train_captions
    from webui.ui.progress import progress_html
    from webui.ui.train_live import watch

    services: TrainingServices = services_of(studio.jobs)
    presets = PresetStore(studio.paths.root)
    # The kinds known now: an extension enabled later trains over REST / train_start at once, its form after a restart.
    kinds = {k: services.kinds.get(k) for k in services.kinds.names()}
    forms = TrainForms({k: spec.request for k, spec in kinds.items()}, {k: spec.layout for k, spec in kinds.items()})
    first = next(iter(forms.models))
    c: dict = {"_forms": forms}
    with gr.Tabs(elem_id="train_tabs"):
        with gr.Tab("Training", id="train_training", elem_id="train_training_tab"):
            with gr.Row(equal_height=False):
                c["kind"] = gr.Dropdown([(f"{kind_title(m)} ({k})", k) for k, m in forms.models.items()], value=first,
                                        label="Training kind", elem_id="train_kind", scale=3)
                c["preset"] = gr.Dropdown(presets.names(), value=None, allow_custom_value=True,
                                          label="Preset (pick one, or type a new name to save)",
                                          elem_id="train_preset", scale=3)
                c["preset_load"] = gr.Button("Load", elem_id="train_preset_load", size="sm", scale=0, min_width=80)
                c["preset_save"] = gr.Button("💾 Save", elem_id="train_preset_save", size="sm", scale=0, min_width=80)
                c["preset_delete"] = gr.Button("🗑️ Delete", elem_id="train_preset_delete", size="sm", scale=0,
                                               min_width=80, variant="stop")
            c["preset_status"] = gr.Markdown("", elem_id="train_preset_status")
            with gr.Row(equal_height=False):
                with gr.Column(scale=5):
                    columns = {}
                    for kind in forms.models:
                        with gr.Column(visible=kind == first, elem_id=f"train_form_{kind}") as columns[kind]:
                            forms.widgets[kind] = build_form(kind, forms.specs[kind])
                with gr.Column(scale=4):
                    c["plan"] = gr.Markdown(STARTING, elem_id="train_plan")
                    with gr.Row(elem_classes=["atelier-actions"]):
                        c["start"] = gr.Button("Start training", variant="primary", elem_id="train_start")
                        c["stop"] = gr.Button("⏹ Stop (saves a checkpoint)", variant="stop", elem_id="train_stop")
                    c["progress"] = gr.HTML(progress_html(None), elem_id="train_progress")
                    c["metrics"] = gr.Markdown("", elem_id="train_metrics")
                    with gr.Row():
                        # The kind's two plots (loss and learning rate for the built-in kinds), a line per metric.
                        first_plots = kinds[first].plots
                        c["loss_plot"] = gr.LinePlot(None, x="step", y="value", color="series",
                                                     title=first_plots[0][0], height=220, elem_id="train_loss_plot")
                        c["lr_plot"] = gr.LinePlot(None, x="step", y="value", color="series",
                                                   title=first_plots[1][0], height=220, elem_id="train_lr_plot")
                    c["samples"] = gr.Gallery([], label="Samples", columns=4, height=220, elem_id="train_samples")
                    c["result"] = gr.Markdown("", elem_id="train_result")
                    c["log"] = gr.Textbox("", label="Log", lines=8, max_lines=8, interactive=False,
                                          elem_id="train_log", autoscroll=True)
                    with gr.Row(equal_height=False):
                        c["runs"] = gr.Dropdown([], label="Saved runs (resumable)", elem_id="train_runs", scale=3)
                        c["runs_refresh"] = gr.Button("🔄", elem_id="train_runs_refresh", size="sm", scale=0,
                                                      min_width=50)
                        c["resume"] = gr.Button("▶ Resume", elem_id="train_resume", size="sm", scale=0, min_width=100)
        with gr.Tab("Dataset captions", id="train_captions", elem_id="train_captions_tab"):
            c["captions"] = train_captions.build(studio)
    # The job this page shows. A (hidden) textbox, not a gr.State: its change event fires for every update,
    # the tab-show one after a page reload included, and starts the watch.
    c["job_id"] = gr.Textbox("", visible="hidden", elem_id="train_job_id")
    flat = forms.flat()
    live = [c["progress"], c["metrics"], c["loss_plot"], c["lr_plot"], c["samples"], c["log"], c["result"]]

    def plan_text(kind, values) -> str:
        if not studio.ready.is_set():
            return STARTING
        try:
            return plan_markdown(runs.plan(forms.request(kind, values), services))
        except AtelierError as exc:
            return f"⚠️ {error_text(exc, forms.specs[kind])}"

    for kind, widgets in forms.widgets.items():
        def on_edit(*values, kind=kind):
            return plan_text(kind, values)

        # One plan at a time, the newest edit last: a slow earlier plan never lands after a newer one.
        gr.on([t for w in widgets.values() for t in _edit_ends(gr, w)], on_edit, list(widgets.values()), [c["plan"]],
              trigger_mode="always_last", concurrency_id="train_plan", concurrency_limit=1,
              show_progress="hidden", api_visibility="private")

    def pickers(kind: str) -> tuple:
        """(base-model choices, dataset choices) for a kind: its model folder, and datasets/ entries."""
        from modules.training.captions import DATASETS, datasets_root

        model = forms.models[kind]
        names = [e.name for e in studio.registry.list(model.BASE_MODEL_KIND)] if studio.ready.is_set() else []
        names += [n for n in model.BASE_MODEL_CHOICES if n not in names]
        root = datasets_root(studio.paths.root)
        found = sorted(p for p in root.iterdir() if not p.name.startswith(".") and (
            p.is_dir() or p.suffix.lower() in model.DATASET_FILES)) if root.is_dir() else []
        return names, [f"{DATASETS}/{p.name}" for p in found]

    def refreshed(kind, *flat_values) -> tuple:
        """Pickers of every kind refilled (an empty dataset takes the first listed) and the shown kind's plan."""
        updates, chosen = [], {}
        for k, widgets in forms.widgets.items():
            values = forms.values_of(k, flat_values)
            models, datasets = pickers(k)
            for name, w in widgets.items():
                i = list(widgets).index(name)
                if name == "base_model":
                    updates.append(gr.Dropdown(choices=models))
                elif name == "dataset":
                    if not values[i] and datasets:
                        values[i] = datasets[0]
                    updates.append(gr.Dropdown(choices=datasets, value=values[i] or None))
                else:
                    updates.append(gr.skip())
            chosen[k] = values
        return (*updates, plan_text(kind, chosen[kind]))

    def plots_of(kind: str):
        """The kind's plots, read now (a kind an extension added after the page was built included)."""
        return services.kinds.get(kind).plots if kind in services.kinds.names() else DEFAULT_PLOTS

    def switch_kind(kind, *flat_values):
        titles = [gr.LinePlot(title=title) for title, _ in plots_of(kind)]
        return (*[gr.Column(visible=k == kind) for k in forms.models], *refreshed(kind, *flat_values), *titles)

    c["kind"].change(switch_kind, [c["kind"], *flat], [*columns.values(), *flat, c["plan"], c["loss_plot"],
                                                       c["lr_plot"]], queue=False,
                     show_progress="hidden", api_visibility="private")

    def runs_choices():
        listed = runs.list_runs(services) if studio.ready.is_set() else []
        return gr.Dropdown(choices=[(f"{r['name']} ({r['kind']}, step {r['checkpoints'][-1]['step']})", r["name"])
                                    for r in listed if r["resumable"]])

    def current_job_id(job_id):
        """The training job to show: this page's, or — after a reload — the one the studio is running."""
        if job_id:
            return job_id
        job = studio.jobs.last(QUEUE)
        return job.id if job is not None else ""

    def show(kind, job_id, *flat_values):
        return (*refreshed(kind, *flat_values), runs_choices(), gr.Dropdown(choices=presets.names()),
                current_job_id(job_id))

    c["_on_show"] = (show, [c["kind"], c["job_id"], *flat],
                     [*flat, c["plan"], c["runs"], c["preset"], c["job_id"]])

    def follow_job(job_id):
        if not job_id:
            return
        try:
            job = studio.jobs.get(job_id)
        except AtelierError:
            return  # a job of an earlier server run: its record is in the runs list
        yield from watch(job, studio.settings.get().ui_updates_per_second, gr.skip,
                         plots_of(job.kind.removeprefix("train_")))

    watching = c["job_id"].change(follow_job, [c["job_id"]], live, concurrency_limit=None, show_progress="hidden",
                                  api_visibility="private")
    watching.then(runs_choices, None, [c["runs"]], queue=False, api_visibility="private")

    def submit(request) -> str:
        if not studio.ready.is_set():
            raise AtelierError("the studio is still starting; try again in a moment")
        req = parse(request, services.kinds)  # the REST route's one validation path; the job kind's validator checks the data dir
        return studio.submit(job_kind(req.kind), req).id

    def start(kind, *flat_values):
        try:
            return submit(forms.request(kind, forms.values_of(kind, flat_values))), ""
        except AtelierError as exc:
            raise gr.Error(error_text(exc, forms.specs.get(kind)), title="Training not started") from None

    # A new job replaces the one this page watches (that watch is cancelled; its job runs on).
    c["start"].click(start, [c["kind"], *flat], [c["job_id"], c["result"]], cancels=[watching],
                     api_visibility="private")

    def stop(job_id):
        if not job_id:
            raise gr.Error("No training is running")
        try:
            studio.jobs.interrupt(job_id)
        except AtelierError as exc:
            raise gr.Error(str(exc)) from None

    c["stop"].click(stop, [c["job_id"]], None, queue=False, api_visibility="private")

    def resume(run):
        if not run:
            raise gr.Error("Choose a saved run first")
        try:
            return submit(runs.resume_request(run, services))
        except AtelierError as exc:
            raise gr.Error(str(exc), title="Not resumed") from None

    c["resume"].click(resume, [c["runs"]], [c["job_id"]], cancels=[watching], api_visibility="private")
    c["runs_refresh"].click(runs_choices, None, [c["runs"]], queue=False, api_visibility="private")

    def save_preset(name, kind, *flat_values):
        try:
            presets.save(name, forms.request(kind, forms.values_of(kind, flat_values)))
        except AtelierError as exc:
            raise gr.Error(error_text(exc, forms.specs.get(kind)), title="Preset not saved") from None
        return gr.Dropdown(choices=presets.names(), value=name.strip()), f"Saved preset “{name.strip()}”."

    c["preset_save"].click(save_preset, [c["preset"], c["kind"], *flat], [c["preset"], c["preset_status"]],
                           queue=False, api_visibility="private")

    def load_preset(name):
        try:
            data = presets.load(name)
        except AtelierError as exc:
            raise gr.Error(str(exc), title="Preset not loaded") from None
        kind = data["kind"]
        if kind not in forms.models:
            raise gr.Error(f"the preset is for the training kind {kind!r}, which this studio does not have")
        updates = []
        for k in forms.models:
            if k == kind:
                values, unknown = to_form(forms.specs[k], data)
                updates.extend(values)
            else:
                updates.extend(gr.skip() for _ in forms.specs[k])
        note = f" (not a field any more, left out: {', '.join(unknown)})" if unknown else ""
        return (kind, *updates, f"Loaded preset “{name}”{note}.")

    c["preset_load"].click(load_preset, [c["preset"]], [c["kind"], *flat, c["preset_status"]], queue=False,
                           api_visibility="private").then(
        lambda kind, *values: plan_text(kind, forms.values_of(kind, values)), [c["kind"], *flat], [c["plan"]],
        queue=False, api_visibility="private")

    def delete_preset(name):
        try:
            presets.delete(name)
        except AtelierError as exc:
            raise gr.Error(str(exc), title="Preset not deleted") from None
        return gr.Dropdown(choices=presets.names(), value=None), f"Deleted preset “{name}”."

    c["preset_delete"].click(delete_preset, [c["preset"]], [c["preset"], c["preset_status"]], queue=False,
                             api_visibility="private")

    def train_start(request: dict) -> dict:
        """Start a training from its request (the JSON body of POST /atelier/v1/train) → {"id", "kind", "run"};
        follow it at /atelier/v1/jobs/{id}."""
        try:
            job_id = submit(request)
        except AtelierError as exc:
            raise gr.Error(str(exc)) from None
        job = studio.jobs.get(job_id)
        return {"id": job.id, "kind": job.kind, "run": job.request.run_name}

    def train_plan(request: dict) -> dict:
        """The step math and memory estimate of a training request (as POST /atelier/v1/train/plan)."""
        try:
            return runs.plan(request, services)
        except AtelierError as exc:
            raise gr.Error(str(exc)) from None

    c["_handlers"] = {"plan": plan_text, "start": start, "save_preset": save_preset, "load_preset": load_preset,
                      "delete_preset": delete_preset, "stop": stop, "resume": resume, "show": show}
    gr.api(endpoint(train_start, "train_start"), api_name="train_start", queue=False)
    gr.api(endpoint(train_plan, "train_plan"), api_name="train_plan", queue=False)
    return c


def register(studio) -> None:
    studio.tabs.add(TabSpec("Train", build, order=55, elem_id="tab_train"))

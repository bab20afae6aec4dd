"""The Generate event shared by txt2img, img2img and inpaint.

Generate → (button becomes Interrupt/Skip) → build the typed request → studio.submit →
stream throttled progress + preview → result gallery with infotext → buttons back.
Every GPU event shares concurrency_id "gpu", so the browser queue and the job queue agree.
"""
# (no `from __future__ import annotations`: Gradio reads the gr.SelectData hint at wiring time)

from typing import Callable

from modules.errors import AtelierError
from modules.jobs import JobState
from webui.ui.events import then_always
from webui.ui.progress import devices_text, follow, progress_html, snapshot

GPU = "gpu"


def error_text(exc: AtelierError) -> str:
    return f"{exc.field}: {exc.message}" if exc.field else exc.message


def make_request(request_cls, values: dict, prepare: Callable[[dict], dict] | None = None):
    """UI values (request field names + helpers) → the request the API builds too, validated by it alone.

    Only what the widgets add is handled here: helpers start with "_" (the hidden variation-seed row
    means no variation; the VAE / Text Encoder picker is forge_additional_modules, for the top bar's `_checkpoint`), and `prepare` turns a
    tab's image widgets into request fields."""
    from modules.requests import parse_request

    body = {k: v for k, v in values.items() if not k.startswith("_")}
    if not values.get("_seed_extra", True):
        body["subseed_strength"] = 0.0
    if values.get("_modules"):  # the VAE / Text Encoder picker: Forge's override setting, as its API clients send it,
        # for the top bar's checkpoint (chosen, even where its switch refused the default encoders)
        chosen = {"sd_model_checkpoint": values["_checkpoint"]} if values.get("_checkpoint") else {}
        body["override_settings"] = {**body.get("override_settings", {}), **chosen,
                                     "forge_additional_modules": list(values["_modules"])}
    if prepare is not None:
        body = prepare(body)
    return parse_request(request_cls, body)


def result_items(result) -> tuple[list, list[dict]]:
    """Gallery values and the per-image records kept in gr.State."""
    images, records = [], []
    for g in result.images if result is not None else []:
        path = str(g.path) if g.path else None
        images.append(path or g.image)
        records.append({"path": path, "image": None if path else g.image, "infotext": g.infotext, "seed": g.seed})
    return images, records


def wire_generation(studio, tab: str, kind: str, request_cls, fields: dict, aux: dict, c: dict,
                    prepare: Callable[[dict], dict] | None = None) -> None:
    """fields: request field → component; aux: helper name (starting with "_") → component;
    c: the tab's components (prompt row + results panel)."""
    import gradio as gr

    inputs = {**fields, **aux}
    outputs = [c["progress"], c["preview"], c["gallery"], c["info"], c["results"], c["selected"], c["job_id"], c["last_seed"]]

    def run(data):
        values = {name: data[comp] for name, comp in inputs.items()}
        try:
            request = make_request(request_cls, values, prepare)
        except AtelierError as exc:
            raise gr.Error(error_text(exc), title="Check the parameters") from None
        if not studio.ready.is_set():
            yield {c["progress"]: progress_html(None, "Loading models… your generation starts when they are ready")}
            studio.wait_ready()
        try:
            job = studio.submit(kind, request)
        except AtelierError as exc:
            raise gr.Error(error_text(exc)) from None
        yield {c["job_id"]: job.id, c["progress"]: progress_html(snapshot(job)), c["preview"]: gr.Image(value=None, visible=False)}
        rate = studio.settings.get().ui_updates_per_second
        for snap in follow(job, rate):
            if snap.finished:
                break
            # While it waits, with several devices: what each one runs now.
            devices = devices_text(studio.jobs.on_devices(job.queue)) if snap.state == JobState.QUEUED else ""
            update = {c["progress"]: progress_html(snap, devices=devices)}
            if snap.preview is not None:
                update[c["preview"]] = gr.Image(value=snap.preview, visible=True)
            yield update
        done = {c["job_id"]: None, c["preview"]: gr.Image(value=None, visible=False)}
        if job.error:
            where = f"{job.error_field}: " if job.error_field else ""
            yield {**done, c["progress"]: progress_html(None, f"Failed — {where}{job.error}")}
            raise gr.Error(f"{where}{job.error}")
        images, records = result_items(job.result)
        secs = (job.finished_at or 0) - (job.started_at or job.created_at)
        if job.state.value in ("interrupted", "cancelled"):
            message = f"Interrupted — kept {len(images)} image(s)"
        else:
            message = f"Done: {len(images)} image(s) in {secs:.1f}s"
        yield {**done, c["progress"]: progress_html(None, message), c["gallery"]: images,
               c["info"]: records[0]["infotext"] if records else "", c["results"]: records, c["selected"]: 0,
               c["last_seed"]: records[0]["seed"] if records else -1}

    def busy():
        return gr.Button(visible=False), gr.Button(visible=True), gr.Button(visible=True)

    def idle():
        return gr.Button(visible=True), gr.Button(visible=False), gr.Button(visible=False)

    buttons = [c["generate"], c["interrupt"], c["skip"]]
    # Shift+Enter in the prompt (Gradio's submit for multi-line boxes) generates like the button.
    running = gr.on([c["generate"].click, c["prompt"].submit], busy, None, buttons, queue=False).then(
        run, set(inputs.values()), outputs, concurrency_id=GPU, show_progress="hidden")
    then_always(running, idle, None, buttons, queue=False)  # after a refusal too

    def interrupt(job_id):
        if job_id:
            _ignore_finished(studio.jobs.interrupt, job_id)

    def skip(job_id):
        if job_id:
            _ignore_finished(studio.jobs.skip, job_id)

    c["interrupt"].click(interrupt, [c["job_id"]], None, queue=False)
    c["skip"].click(skip, [c["job_id"]], None, queue=False)

    def select(results, evt: gr.SelectData):
        index = evt.index if isinstance(evt.index, int) else 0
        text = results[index]["infotext"] if 0 <= index < len(results) else ""
        return index, text

    c["gallery"].select(select, [c["results"]], [c["selected"], c["info"]], queue=False)
    if "reuse_seed" in c and "seed" in c:
        def reuse_seed(results, selected, last):
            if results and 0 <= selected < len(results):
                return results[selected]["seed"]
            return last
        c["reuse_seed"].click(reuse_seed, [c["results"], c["selected"], c["last_seed"]], [c["seed"]], queue=False)


def _ignore_finished(control, job_id: str) -> None:
    try:
        control(job_id)
    except AtelierError:
        pass  # the job is gone from the history already: nothing left to stop


def selected_record(results: list, selected: int) -> dict | None:
    if not results:
        return None
    return results[selected] if 0 <= selected < len(results) else results[0]


def record_image(record: dict):
    from PIL import Image

    if record.get("path"):
        with Image.open(record["path"]) as im:
            im.load()
            return im.copy()
    return record.get("image")

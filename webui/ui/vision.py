"""Vision tab: one image or a batch, a task (PaliGemma's caption / describe / OCR / answer / detect /
segment / raw, Gemma 3 questions, extensions' tasks) and a model; the text, the overlay with a
toggle per object, a table of objects, the JSON and the overlay to download, and a detected mask
sent to Inpaint in one click; a Video section (vision_video.py). Everything goes through the "vision",
"vision_batch" and "vision_video" jobs."""
from __future__ import annotations

import json

from modules.errors import AtelierError
from modules.extensions.tabs import TabSpec
from webui.ui.gradio_api import endpoint
from webui.ui.progress import follow, progress_html
from webui.ui.vision_video import build_video

OBJECT_COLUMNS = ["#", "Label", "Box (x1, y1, x2, y2)", "Score", "Mask"]
LANGUAGES = ("en", "de", "fr", "es", "it", "pt", "nl", "pl", "ru", "ja", "ko", "zh", "ar", "hi", "tr", "sv")
NO_ADAPTER = ("(none: the model alone)", "")
STARTING = "The studio is still starting; try again in a moment."


def _services(studio):
    return studio.jobs.services_of("vision")  # what the vision jobs see (VisionServices)


def task_rows(studio) -> list[dict]:
    from modules.vision.catalog import listing

    return listing(_services(studio)) if studio.ready.is_set() else []


def _object_rows(result) -> list[list]:
    return [[i, o.label, ", ".join(str(v) for v in o.box) if o.box else "", "" if o.score is None else f"{o.score:.2f}",
             "yes" if o.mask is not None else ""] for i, o in enumerate(result.objects)]


def _labels(result) -> list[str]:
    return [f"{i}: {o.label}" for i, o in enumerate(result.objects)]


def _request(task, model, objects, question, prompt, language, max_new_tokens, adapter=None) -> dict:
    return {"task": task, "model": model or None, "adapter": adapter or None, "objects": objects or [],
            "question": question or "",
            "prompt": prompt or "", "language": language or "en",
            "max_new_tokens": int(max_new_tokens) if max_new_tokens else None, "overlay": True, "save": True}


def build(studio) -> dict:
    import gradio as gr

    from modules.vision.params import VisionBatchRequest, VisionRequest, parse_vision

    c: dict = {}
    with gr.Row(equal_height=False):
        with gr.Column(scale=4):
            c["image"] = gr.Image(label="Image", type="pil", sources=["upload", "clipboard"], height=360,
                                  elem_id="vision_image")
            with gr.Row():
                # The choices fill in when the tab opens (the models are known once the studio is ready); a
                # script may name any task or model, the job's validation answers for it.
                c["task"] = gr.Dropdown([], label="Task", elem_id="vision_task", scale=2, allow_custom_value=True)
                c["model"] = gr.Dropdown([], label="Model", elem_id="vision_model", scale=3, allow_custom_value=True)
                # The PEFT adapters made for the chosen model (models/LLM-loras), e.g. a PaliGemma fine-tune.
                # Starts at "" (none), so a script calling /vision without it still works.
                c["adapter"] = gr.Dropdown([NO_ADAPTER], value="", label="Adapter", elem_id="vision_adapter",
                                           scale=2, allow_custom_value=True)
            c["objects"] = gr.Textbox(label="Objects (detect / segment), e.g. cat ; dog", elem_id="vision_objects")
            c["question"] = gr.Textbox(label="Question (answer / question)", elem_id="vision_question")
            with gr.Row():
                c["language"] = gr.Dropdown(list(LANGUAGES), value="en", label="Language", allow_custom_value=True,
                                            elem_id="vision_language")
                c["max_new_tokens"] = gr.Number(0, label="Max new tokens (0: the task's usual)", precision=0,
                                                minimum=0, maximum=1024, elem_id="vision_max_new_tokens")
            c["prompt"] = gr.Textbox(label="Raw prefix (raw: a fine-tuned model's own prompt)", elem_id="vision_prompt")
            c["task_note"] = gr.Markdown("", elem_id="vision_task_note")
            c["run"] = gr.Button("Run", variant="primary", elem_id="vision_run")
            with gr.Accordion("Batch: several images or a folder", open=False, elem_id="vision_batch_acc"):
                c["batch_files"] = gr.File(label="Images", file_count="multiple", file_types=["image"],
                                           elem_id="vision_batch_files")
                c["batch_folder"] = gr.Textbox(label="…or a folder under the data dir", elem_id="vision_batch_folder")
                c["batch_run"] = gr.Button("Run the batch", elem_id="vision_batch_run")
                c["batch_progress"] = gr.HTML(progress_html(None), elem_id="vision_batch_progress")
                c["batch_summary"] = gr.Markdown("", elem_id="vision_batch_summary")
        with gr.Column(scale=5):
            c["overlay"] = gr.Image(label="Result", type="pil", interactive=False, height=360, elem_id="vision_overlay")
            c["text"] = gr.Textbox(label="Text", lines=3, interactive=False, elem_id="vision_text")
            c["shown"] = gr.CheckboxGroup([], label="Objects shown", elem_id="vision_shown")
            c["table"] = gr.Dataframe(headers=OBJECT_COLUMNS, value=[], interactive=False, elem_id="vision_table")
            with gr.Row():
                c["send_object"] = gr.Dropdown([], label="Object", elem_id="vision_send_object", scale=2)
                c["send_inpaint"] = gr.Button("Send mask to inpaint", elem_id="vision_send_inpaint", scale=1)
            with gr.Row():
                c["download_png"] = gr.DownloadButton("Overlay PNG", elem_id="vision_download_png", visible=False)
                c["download_json"] = gr.DownloadButton("JSON", elem_id="vision_download_json", visible=False)
            c["json"] = gr.Code(label="JSON", language="json", interactive=False, elem_id="vision_json")
    video = build_video(studio, task_rows)  # the Video section (vision_video.py): track or caption a video
    c.update({f"video_{name}": comp for name, comp in video.items() if not name.startswith("_")})
    c["result"] = gr.State(None)  # (image, VisionResult) of this browser's last run

    def tasks_update(task=None):
        rows = task_rows(studio)
        names = [r["name"] for r in rows]
        task = task if task in names else (names[0] if names else None)
        return (gr.Dropdown(choices=[(f"{r['title']} ({r['name']})", r["name"]) for r in rows], value=task),
                *models_update(task, rows))

    def models_update(task, rows=None):
        rows = task_rows(studio) if rows is None else rows
        row = next((r for r in rows if r["name"] == task), None)
        models = row["models"] if row else []
        note = "" if not row or row["ready"] else f"⚠️ {row['problem']}"
        model = models[0] if models else None
        return gr.Dropdown(choices=models, value=model), adapters_update(task, model, rows), note

    def adapters_update(task, model, rows=None):
        rows = task_rows(studio) if rows is None else rows
        row = next((r for r in rows if r["name"] == task), None)
        names = (row or {}).get("adapters", {}).get(model, [])
        return gr.Dropdown(choices=[NO_ADAPTER] + [(n, n) for n in names], value="")

    c["task"].input(lambda t: models_update(t), [c["task"]], [c["model"], c["adapter"], c["task_note"]],
                    queue=False, api_visibility="private")
    c["model"].input(lambda t, m: adapters_update(t, m), [c["task"], c["model"]], [c["adapter"]], queue=False,
                     api_visibility="private")

    # The adapter last: scripts written before it existed call /vision with the fields before it.
    inputs = [c["task"], c["model"], c["objects"], c["question"], c["prompt"], c["language"], c["max_new_tokens"],
              c["adapter"]]

    def run(image, *fields):
        if not studio.ready.is_set():
            raise gr.Error(STARTING)
        if image is None:
            raise gr.Error("Upload an image first", title="Nothing to look at")
        try:
            req = parse_vision(VisionRequest, {**_request(*fields), "image": image})
            job = studio.submit("vision", req).wait()
            job.raise_for_error()
        except AtelierError as exc:
            raise gr.Error(str(exc), title="Vision task not run") from None
        result = job.result
        saved = {kind: str(studio.paths.outputs / rel) for kind, rel in result.saved.items()}
        labels = _labels(result)
        return (result.overlay, result.text, gr.CheckboxGroup(choices=labels, value=labels), _object_rows(result),
                gr.Dropdown(choices=[lab for lab, o in zip(labels, result.objects) if o.mask is not None], value=None),
                gr.DownloadButton(value=saved.get("png"), visible=bool(saved.get("png"))),
                gr.DownloadButton(value=saved.get("json"), visible=bool(saved.get("json"))),
                json.dumps(result.to_json(), indent=1), (image, result))

    c["run"].click(endpoint(run, "vision"), [c["image"], *inputs],
                   [c["overlay"], c["text"], c["shown"], c["table"], c["send_object"], c["download_png"],
                    c["download_json"], c["json"], c["result"]], concurrency_id="vision", api_name="vision")

    def redraw(shown, state):
        if not state:
            return None
        from modules.vision import overlay

        image, result = state
        keep = {int(label.split(":", 1)[0]) for label in shown or []}
        return overlay.draw(image, result.objects, hidden=set(range(len(result.objects))) - keep)

    c["shown"].input(redraw, [c["shown"], c["result"]], [c["overlay"]], queue=False, api_visibility="private")

    def run_batch(files, folder, *fields):
        if not studio.ready.is_set():
            raise gr.Error(STARTING)
        from PIL import Image

        body = _request(*fields)
        if files:
            images, names = [], []
            for f in files:
                path = f if isinstance(f, str) else f.name
                try:
                    with Image.open(path) as im:
                        images.append(im.convert("RGB"))
                except OSError:
                    images.append(b"")  # reported and skipped by the batch, like any unreadable image
                names.append(path.rsplit("/", 1)[-1])
            body |= {"images": images, "names": names}
        else:
            body["folder"] = (folder or "").strip() or None
        try:
            job = studio.submit("vision_batch", parse_vision(VisionBatchRequest, body))
        except AtelierError as exc:
            raise gr.Error(str(exc), title="Batch not started") from None
        for snap in follow(job, studio.settings.get().ui_updates_per_second):
            yield progress_html(snap), ""
        try:
            job.raise_for_error()
        except AtelierError as exc:
            raise gr.Error(str(exc), title="Batch failed") from None
        r = job.result
        failed = "".join(f"\n- {item['source']}: {item['error']}" for item in r["items"] if item.get("error"))
        yield (progress_html(None), f"{r['done']} of {r['total']} images done in {r['seconds']:.1f} s "
               f"({r['images_per_second']:.2f}/s); results in `{r['jsonl']}`" + (f"\n\nSkipped:{failed}" if failed else ""))

    c["batch_run"].click(endpoint(run_batch, "vision_batch"), [c["batch_files"], c["batch_folder"], *inputs],
                         [c["batch_progress"], c["batch_summary"]], concurrency_id="vision", api_name="vision_batch")
    show_video, video_inputs, video_outputs = video["_on_show_video"]
    c["_on_show"] = (lambda task, video_task: (*tasks_update(task), *show_video(video_task)),
                     [c["task"], *video_inputs], [c["task"], c["model"], c["adapter"], c["task_note"], *video_outputs])
    return c


def mask_for_inpaint(state, chosen):
    """(image, mask) of the chosen object of the last result, for Send to inpaint; raises if none."""
    if not state or not chosen:
        raise ValueError("run detect or segment, then choose an object that has a mask")
    image, result = state
    obj = result.objects[int(chosen.split(":", 1)[0])]
    if obj.mask is None:
        raise ValueError(f"{obj.label} has no mask (segment gives masks; detect gives boxes)")
    return image, obj.mask_image()


def register(studio) -> None:
    studio.tabs.add(TabSpec("Vision", build, order=45, elem_id="tab_vision"))

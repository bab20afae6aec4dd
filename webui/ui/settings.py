"""Settings tab: one widget per field of modules.settings.Settings, saved atomically to config.json."""
from __future__ import annotations

import typing

from modules.errors import AtelierError
from modules.extensions.tabs import TabSpec

# Edited elsewhere (the checkpoint bar, the Extensions tab) or not a simple value.
SKIP = {"extensions", "extensions_disabled", "tasks", "sd_model_checkpoint", "sd_vae"}
# Labels in A1111's words where the field has no description of its own.
LABELS = {
    "memory_policy": "Memory policy: auto, all on the GPU, model offload, sequential offload",
    "samples_format": "File format for images",
    "outdir_txt2img_samples": "Output folder for txt2img images (inside outputs/)",
    "outdir_img2img_samples": "Output folder for img2img / inpaint images (inside outputs/)",
    "outdir_txt2img_grids": "Output folder for txt2img X/Y/Z grids (inside outputs/)",
    "outdir_img2img_grids": "Output folder for img2img X/Y/Z grids (inside outputs/)",
    "save_images_default": "Save every generated image",
    "ui_updates_per_second": "Progress updates per second in the browser while generating",
}


def _bounds(info) -> tuple[float | None, float | None]:
    """The ge/gt and le/lt constraints pydantic keeps in the field's metadata."""
    lo = hi = None
    for m in info.metadata:
        for attr in ("ge", "gt"):
            lo = getattr(m, attr, None) if getattr(m, attr, None) is not None else lo
        for attr in ("le", "lt"):
            hi = getattr(m, attr, None) if getattr(m, attr, None) is not None else hi
    return lo, hi


def widget_for(name: str, info, value):
    """A Gradio component for one settings field, labelled with its description."""
    import gradio as gr

    label = LABELS.get(name) or info.description or name.replace("_", " ")
    elem_id = f"setting_{name}"
    ann = info.annotation
    if typing.get_origin(ann) is typing.Literal:
        return gr.Dropdown(list(typing.get_args(ann)), value=value, label=label, elem_id=elem_id)
    if ann is bool:
        return gr.Checkbox(value, label=label, elem_id=elem_id)
    if ann in (int, float):
        lo, hi = _bounds(info)
        if lo is not None and hi is not None and hi - lo <= 1024:
            step = 1 if ann is int else 0.1
            return gr.Slider(lo, hi, value=value, step=step, label=label, elem_id=elem_id)
        return gr.Number(value, label=label, precision=0 if ann is int else None, elem_id=elem_id,
                         minimum=lo, maximum=hi)
    return gr.Textbox(str(value), label=label, elem_id=elem_id)


def build(studio) -> dict:
    import gradio as gr

    from modules.settings import Settings

    current = studio.settings.get().model_dump()
    c: dict = {}
    warning = studio.settings.warning
    c["warning"] = gr.Markdown(f"⚠️ {warning}" if warning else "", elem_id="settings_warning", visible=bool(warning))
    with gr.Row():
        c["save"] = gr.Button("Apply settings", variant="primary", elem_id="settings_submit", scale=0, min_width=180)
        c["result"] = gr.Markdown("", elem_id="settings_result")
    fields: dict = {}
    shown = [(n, i) for n, i in Settings.model_fields.items() if n not in SKIP]
    half = (len(shown) + 1) // 2
    with gr.Row(elem_id="settings_fields", equal_height=False):
        for column in (shown[:half], shown[half:]):
            with gr.Column():
                for name, info in column:
                    fields[name] = widget_for(name, info, current[name])
    c.update(fields)
    names = list(fields)

    def save(*values):
        now = studio.settings.get().model_dump()
        changes = {}
        for name, value in zip(names, values):
            ann = Settings.model_fields[name].annotation
            if ann is int and isinstance(value, float):
                value = int(value)
            if value != now[name]:
                changes[name] = value
        if not changes:
            return "Nothing changed."
        try:
            studio.settings.update(changes)
        except AtelierError as exc:
            raise gr.Error(str(exc), title="Setting not saved") from None
        return f"Saved {len(changes)} setting(s) to config.json: {', '.join(sorted(changes))}."

    c["save"].click(save, [fields[n] for n in names], [c["result"]], queue=False)

    def reload():
        now = studio.settings.get().model_dump()
        return [now[n] for n in names]

    c["_on_show"] = (reload, None, [fields[n] for n in names])
    return c


def register(studio) -> None:
    studio.tabs.add(TabSpec("Settings", build, order=90, elem_id="tab_settings"))

"""Settings tab: one widget per field of modules.settings.Settings, saved atomically to config.json."""
from __future__ import annotations

import typing

from modules import cpu_features
from modules.errors import AtelierError
from modules.extensions.tabs import TabSpec

# Edited elsewhere (the checkpoint bar, the Extensions tab) or not a simple value.
SKIP = {"extensions", "extensions_disabled", "extensions_enabled", "tasks", "sd_model_checkpoint", "sd_vae"}
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


def widget_for(name: str, info, value, note: str = ""):
    """A Gradio component for one settings field, labelled with its description (and `note`, what this machine allows)."""
    import gradio as gr

    label = (LABELS.get(name) or info.description or name.replace("_", " ")) + (f" — {note}" if note else "")
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
    notes = {"cpu_bf16": cpu_features.bf16_note(), "cpu_threads": f"{cpu_features.physical_cores()} physical cores here",
             "compile_unet": "the last two are refused without a CUDA GPU"}
    shown = [(n, i) for n, i in Settings.model_fields.items() if n not in SKIP]
    half = (len(shown) + 1) // 2
    with gr.Row(elem_id="settings_fields", equal_height=False):
        for column in (shown[:half], shown[half:]):
            with gr.Column():
                for name, info in column:
                    fields[name] = widget_for(name, info, current[name], notes.get(name, ""))
    # Each task's own section (models, chat, …), saved under tasks.<name> in config.json.
    sections = studio.settings.sections()
    section_fields: list[tuple[str, str]] = []  # (section, field) in widget order
    for section, model in sections.items():
        values = studio.settings.section(section).model_dump()
        with gr.Accordion(f"{section}", open=False, elem_id=f"settings_section_{section}"):
            for name, info in model.model_fields.items():
                fields[f"{section}.{name}"] = widget_for(f"{section}_{name}", info, values[name])
                section_fields.append((section, name))
    c.update(fields)
    names = [n for n in fields if "." not in n]
    keys = names + [f"{sec}.{name}" for sec, name in section_fields]

    def _value(ann, value):
        return int(value) if ann is int and isinstance(value, float) else value

    def live_values() -> list:
        now = studio.settings.get().model_dump()
        return [now[n] for n in names] + [studio.settings.section(sec).model_dump()[n] for sec, n in section_fields]

    # What this page last got from the server: opening the tab updates only the fields the server changed since
    # (the API, another page), so a value typed while the tab opens is never overwritten by the same old value.
    synced = gr.State(live_values())

    def save(*values):
        given = dict(zip(keys, values))
        now = studio.settings.get().model_dump()
        changes = {n: _value(Settings.model_fields[n].annotation, given[n]) for n in names}
        changes = {n: v for n, v in changes.items() if v != now[n]}
        by_section: dict[str, dict] = {}
        for sec, name in section_fields:
            value = _value(sections[sec].model_fields[name].annotation, given[f"{sec}.{name}"])
            if value != studio.settings.section(sec).model_dump()[name]:
                by_section.setdefault(sec, {})[name] = value
        if not changes and not by_section:
            return "Nothing changed.", live_values()
        try:
            if changes:
                studio.settings.update(changes)
            for sec, values in by_section.items():
                studio.settings.update_section(sec, values)
        except AtelierError as exc:
            raise gr.Error(str(exc), title="Setting not saved") from None
        saved = sorted(changes) + [f"{sec}.{n}" for sec, vs in by_section.items() for n in vs]
        return f"Saved {len(saved)} setting(s) to config.json: {', '.join(saved)}.", live_values()

    c["save"].click(save, [fields[k] for k in keys], [c["result"], synced], queue=False)

    def reload(last: list):
        live = live_values()
        return [value if value != before else gr.skip() for value, before in zip(live, last)] + [live]

    c["_on_show"] = (reload, [synced], [*(fields[k] for k in keys), synced])
    return c


def register(studio) -> None:
    studio.tabs.add(TabSpec("Settings", build, order=90, elem_id="tab_settings"))

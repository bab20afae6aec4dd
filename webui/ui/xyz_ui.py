"""The X/Y/Z plot section of a generation tab: three axes (type + values), A1111's options; Generate then
sends `script_name: "x/y/z plot"` and its `script_args` (labels for the axis types, values as text)."""
from __future__ import annotations

from modules.diffusion import xyz
from modules.diffusion.xyz_axes import axes_for

OPTIONS = ("draw_legend", "include_lone_images", "include_sub_grids", "no_fixed_seeds", "vary_seeds_x",
           "vary_seeds_y", "vary_seeds_z")
LABELS = {"draw_legend": "Draw legend", "include_lone_images": "Include sub images",
          "include_sub_grids": "Include sub grids", "no_fixed_seeds": "Keep -1 for seeds",
          "vary_seeds_x": "Vary seeds for X", "vary_seeds_y": "Vary seeds for Y", "vary_seeds_z": "Vary seeds for Z"}


def choices_for(studio, label: str) -> list[str]:
    """The values an axis can take, for the 📒 button (empty where any value goes)."""
    from modules.diffusion import hires
    from modules.diffusion.samplers import SCHEDULE_TYPES

    source = next((a.choices for a in axes_for("txt2img") + axes_for("img2img") if a.label == label), None)
    try:
        if source == "samplers":
            return studio.samplers.names()
        if source == "checkpoints":
            return [e.stem for e in studio.registry.list("checkpoint")]
        if source == "schedules":
            return list(SCHEDULE_TYPES)
        if source == "styles":
            return studio.styles.names()
        if source == "upscalers":
            return hires.choices(studio.registry)
    except Exception:  # a folder that cannot be read must not break the button
        return []
    return []


def build(studio, tab: str, kind: str) -> dict:
    import gradio as gr

    labels = [a.label for a in axes_for(kind) if a.apply is not None]
    c: dict = {}
    with gr.Accordion("X/Y/Z plot", open=False, elem_id=f"{tab}_xyz"):
        c["xyz_enable"] = gr.Checkbox(False, label="Make an X/Y/Z plot", elem_id=f"{tab}_xyz_enable",
                                      info="one image per combination of the values below, and a labelled grid")
        for letter, default in (("x", "Seed"), ("y", "Nothing"), ("z", "Nothing")):
            with gr.Row(equal_height=True):
                c[f"xyz_{letter}_type"] = gr.Dropdown(labels, value=default, label=f"{letter.upper()} type",
                                                      elem_id=f"{tab}_xyz_{letter}_type", scale=2)
                c[f"xyz_{letter}_values"] = gr.Textbox("", label=f"{letter.upper()} values", max_lines=1, scale=5,
                                                       elem_id=f"{tab}_xyz_{letter}_values",
                                                       placeholder="10, 20, 30 — or 1-5, 1-10 (+2), 0.5-1 [3]")
                c[f"xyz_{letter}_fill"] = gr.Button("📒", elem_id=f"{tab}_xyz_{letter}_fill", scale=0, min_width=44)
        with gr.Row():
            for name in OPTIONS:
                c[f"xyz_{name}"] = gr.Checkbox(name == "draw_legend", label=LABELS[name], elem_id=f"{tab}_xyz_{name}",
                                               min_width=120)
        c["xyz_margin_size"] = gr.Slider(0, 500, value=0, step=2, label="Grid margins (px)",
                                         elem_id=f"{tab}_xyz_margin_size")

    def fill(label):
        """📒: every value the axis can take (samplers, checkpoints, …), as A1111's button fills them."""
        values = choices_for(studio, label)
        if not values:
            gr.Warning(f"{label} takes any value: type them, separated by commas")
            return gr.skip()
        return ", ".join(v if "," not in v else f'"{v}"' for v in values)

    for letter in "xyz":
        c[f"xyz_{letter}_fill"].click(fill, [c[f"xyz_{letter}_type"]], [c[f"xyz_{letter}_values"]], queue=False)
    return c


def inputs(c: dict) -> dict:
    """The section's widgets a request is made from (not its buttons)."""
    return {k: v for k, v in c.items() if k.startswith("xyz_") and not k.endswith("_fill")}


def prepare(body: dict) -> dict:
    """The section's widgets (xyz_*) → script_name / script_args, A1111's order (csv_mode: values as text)."""
    values = {k[4:]: body.pop(k) for k in list(body) if k.startswith("xyz_")}
    if not values.pop("enable", False):
        return body
    named = dict(xyz.DEFAULTS, csv_mode=True)
    named.update({k: v for k, v in values.items() if k in named and v is not None})
    body["script_name"] = xyz.SCRIPT_NAME
    body["script_args"] = [named[name] for name in xyz.ARGS]
    return body

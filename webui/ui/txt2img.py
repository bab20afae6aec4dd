"""txt2img tab: prompt row on top, parameters on the left, results on the right (A1111's layout)."""
from __future__ import annotations

from modules.extensions.tabs import TabSpec
from webui.ui import components, generation, gradio_api, xyz_ui

TAB = "txt2img"


def build(studio) -> dict:
    import gradio as gr

    from modules.diffusion.params import Txt2ImgRequest

    c = components.prompt_row(studio, TAB)
    with gr.Row(equal_height=False):
        with gr.Column(scale=5, elem_id=f"{TAB}_settings"):
            p = components.params_block(studio, TAB, hires=True)
            p.update(xyz_ui.build(studio, TAB, "txt2img"))
        with gr.Column(scale=5, elem_id=f"{TAB}_results"):
            r = components.results_panel(TAB)
    c.update(p)
    c.update(r)
    fields = {k: c[k] for k in request_field_names(c)} | xyz_ui.inputs(c)
    generation.wire_generation(studio, TAB, "txt2img", Txt2ImgRequest, fields,
                               {"_seed_extra": c["seed_extra"], "_modules": c["forge_modules"],
                                "_checkpoint": c["chosen_checkpoint"]}, c,
                               prepare=xyz_ui.prepare)
    gradio_api.generation_endpoint(studio, "txt2img", "txt2img", Txt2ImgRequest, c, {})
    return c


def request_field_names(c: dict) -> list[str]:
    from modules.diffusion.params import Txt2ImgRequest

    return [k for k in c if k in Txt2ImgRequest.model_fields]


def register(studio) -> None:
    studio.tabs.add(TabSpec("txt2img", build, order=10, elem_id="tab_txt2img"))

"""Cross-tab wiring, done once every tab is built: "Send to img2img / inpaint / txt2img" and
"Reuse parameters". A source gives an image and its infotext; the target tab gets both and is opened.
A1111's send_seed / send_size settings decide whether a send from a results panel or the gallery carries
the seed and the size; PNG Info and Reuse parameters carry everything, as in A1111. Forge's Module 1, 2, … keys
(a Flux / SD3 file's VAE and text encoders) fill the VAE / Text Encoder picker, as Forge's send does."""
from __future__ import annotations

from modules.errors import AtelierError
from webui.ui.components import fields_from_infotext, updates_for_fields
from webui.ui.generation import record_image, selected_record

# target tab id -> the component that takes the image
IMAGE_SLOT = {"tab_img2img": "image", "tab_inpaint": "editor"}
FILLABLE = ("prompt", "negative_prompt", "steps", "sampler_name", "scheduler", "cfg_scale", "seed", "subseed",
            "subseed_strength", "width", "height", "clip_skip", "distilled_cfg_scale", "denoising_strength",
            "enable_hr", "hr_scale", "hr_second_pass_steps", "hr_upscaler", "mask_blur", "seed_extra", "styles",
            "tiling", "restore_faces")


def without_unsent(fields: dict, settings) -> dict:
    """The fields a tab-to-tab send carries under A1111's send_seed and send_size settings."""
    drop = set()
    if not settings.send_seed:
        drop |= {"seed", "subseed", "subseed_strength"}
    if not settings.send_size:
        drop |= {"width", "height"}
    return {k: v for k, v in fields.items() if k not in drop}


def _open(path: str | None):
    from PIL import Image

    if not path:
        return None
    with Image.open(path) as im:
        im.load()
        return im.copy()


def wire(studio, ui: dict, tabs) -> None:
    import gradio as gr

    def target_outputs(tab_id: str) -> list:
        comps = ui.get(tab_id) or {}
        outs = [comps[k] for k in (*FILLABLE, "forge_modules") if k in comps]
        if tab_id in IMAGE_SLOT and IMAGE_SLOT[tab_id] in comps:
            outs.append(comps[IMAGE_SLOT[tab_id]])
        return outs

    def sender(tab_id: str, source, with_image: bool, switch: bool = True, send_options: bool = False):
        comps = ui.get(tab_id) or {}

        def handler(*args):
            try:
                image, text = source(*args)
            except (AtelierError, OSError) as exc:
                raise gr.Error(f"Nothing to send: {exc}") from None
            if image is None and not text:
                gr.Warning("Nothing to send yet: generate or select an image first")
                return {}
            fields = fields_from_infotext(text, studio.styles) if text else {}
            if send_options:
                fields = without_unsent(fields, studio.settings.get())
            updates = updates_for_fields({k: v for k, v in fields.items() if k in FILLABLE}, comps)
            modules = fields.get("override_settings", {}).get("forge_additional_modules")
            if modules and "forge_modules" in comps:  # Forge's Module 1, 2, …: shown, so a person sees what goes
                updates[comps["forge_modules"]] = gr.Dropdown(value=list(modules), visible=True)
            if with_image and image is not None and tab_id in IMAGE_SLOT:
                updates[comps[IMAGE_SLOT[tab_id]]] = image
            if switch:
                updates[tabs] = gr.Tabs(selected=tab_id)
            return updates

        return handler, target_outputs(tab_id) + ([tabs] if switch else [])

    def connect(button, tab_id, source, inputs, with_image=True, switch=True, send_options=False):
        if button is None or tab_id not in ui:
            return
        fn, outputs = sender(tab_id, source, with_image, switch, send_options)
        button.click(fn, inputs, outputs, queue=False)

    # Results of the three generation tabs.
    def from_results(results, selected):
        record = selected_record(results, selected)
        return (record_image(record), record["infotext"]) if record else (None, "")

    for tab_id in ("tab_txt2img", "tab_img2img", "tab_inpaint"):
        comps = ui.get(tab_id)
        if not comps or "results" not in comps:
            continue
        inputs = [comps["results"], comps["selected"]]
        connect(comps.get("send_img2img"), "tab_img2img", from_results, inputs, send_options=True)
        connect(comps.get("send_inpaint"), "tab_inpaint", from_results, inputs, send_options=True)
        connect(comps.get("reuse"), tab_id, from_results, inputs, with_image=False, switch=False)

    # PNG Info: the dropped file and its parameters.
    png = ui.get("tab_pnginfo")
    if png:
        source = lambda path, text: (_open(path), text)  # noqa: E731
        inputs = [png["image"], png["text"]]
        connect(png.get("send_txt2img"), "tab_txt2img", source, inputs, with_image=False)
        connect(png.get("send_img2img"), "tab_img2img", source, inputs)
        connect(png.get("send_inpaint"), "tab_inpaint", source, inputs)

    # Vision: the image and the chosen object's mask go to Inpaint (the mask as an uploaded mask).
    vis, inp = ui.get("tab_vision"), ui.get("tab_inpaint")
    if vis and inp:
        from webui.ui.vision import mask_for_inpaint

        def send_mask(state, chosen):
            try:
                image, mask = mask_for_inpaint(state, chosen)
            except ValueError as exc:
                raise gr.Error(str(exc), title="Nothing to send") from None
            return {inp["editor"]: image, inp["mask_upload"]: mask, tabs: gr.Tabs(selected="tab_inpaint")}

        vis["send_inpaint"].click(send_mask, [vis["result"], vis["send_object"]],
                                  [inp["editor"], inp["mask_upload"], tabs], queue=False)

    # Gallery: the selected file (resolved inside outputs/) and its parameters.
    gal = ui.get("tab_gallery")
    if gal:
        from webui.ui.gallery import resolve_image

        def from_gallery(rel, text):
            return (_open(str(resolve_image(studio, rel))) if rel else None), text

        inputs = [gal["path"], gal["info"]]
        connect(gal.get("send_txt2img"), "tab_txt2img", from_gallery, inputs, with_image=False, send_options=True)
        connect(gal.get("send_img2img"), "tab_img2img", from_gallery, inputs, send_options=True)
        connect(gal.get("send_inpaint"), "tab_inpaint", from_gallery, inputs, send_options=True)

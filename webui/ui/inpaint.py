"""Inpaint tab: paint the mask on the image with a brush (or upload one), then repaint that area.

The editor returns {"background", "layers", "composite"}; whatever was painted on the
layers (alpha > 0) becomes white in the mask, the rest black — A1111's convention.
"""
from __future__ import annotations

from modules.errors import InvalidRequest
from modules.extensions.tabs import TabSpec
from webui.ui import components, generation, gradio_api
from webui.ui.img2img import image_controls, size_from_image

TAB = "inpaint"
MASKED_CONTENT = ("fill", "original", "latent noise", "latent nothing")  # inpainting_fill 0..3


def painted_mask(editor_value):
    """The painted strokes of an ImageEditor/ImageMask value as an "L" mask (255 = repaint), or None."""
    from PIL import Image, ImageChops

    if not editor_value or editor_value.get("background") is None:
        return None
    background = editor_value["background"]
    mask = Image.new("L", background.size, 0)
    for layer in editor_value.get("layers") or []:
        if layer is None:
            continue
        layer = layer.convert("RGBA")
        if layer.size != background.size:
            layer = layer.resize(background.size, Image.NEAREST)
        alpha = layer.getchannel("A").point(lambda a: 255 if a > 0 else 0)
        mask = ImageChops.lighter(mask, alpha)
    return mask if mask.getbbox() else None


def uploaded_mask(image, size):
    """An uploaded mask: white (bright) = repaint; transparent pixels count as black."""
    from PIL import Image

    if image is None:
        return None
    if image.mode in ("RGBA", "LA"):
        flat = Image.new("RGB", image.size, (0, 0, 0))
        flat.paste(image, mask=image.getchannel("A"))
        image = flat
    mask = image.convert("L").point(lambda v: 255 if v >= 128 else 0)
    if mask.size != size:
        mask = mask.resize(size, Image.NEAREST)
    return mask if mask.getbbox() else None


def build(studio) -> dict:
    import gradio as gr

    from modules.diffusion.params import Img2ImgRequest

    c = components.prompt_row(studio, TAB)
    with gr.Row(equal_height=False):
        with gr.Column(scale=5, elem_id=f"{TAB}_settings"):
            c["editor"] = gr.ImageMask(
                label="Image — paint over the area to repaint", type="pil", image_mode="RGBA", height=420,
                sources=["upload", "clipboard"], elem_id=f"{TAB}_editor", layers=False, format="png",
                brush=gr.Brush(default_size="auto", colors=["#ffffff"], color_mode="fixed"),
                eraser=gr.Eraser(default_size="auto"),
            )
            with gr.Accordion("Upload a mask instead", open=False, elem_id=f"{TAB}_mask_upload_acc"):
                c["mask_upload"] = gr.Image(label="Mask (white = repaint)", type="pil", sources=["upload", "clipboard"],
                                            height=240, elem_id=f"{TAB}_mask_upload")
            with gr.Row():
                c["mask_blur"] = gr.Slider(0, 64, value=4, step=1, label="Mask blur", elem_id=f"{TAB}_mask_blur")
                c["inpainting_mask_invert"] = gr.Radio(["Inpaint masked", "Inpaint not masked"], value="Inpaint masked",
                                                       type="index", label="Mask mode", elem_id=f"{TAB}_mask_mode")
            c["inpainting_fill"] = gr.Radio(list(MASKED_CONTENT), value="original", type="index", label="Masked content",
                                            elem_id=f"{TAB}_inpainting_fill")
            with gr.Row():
                c["inpaint_full_res"] = gr.Radio(["Whole picture", "Only masked"], value="Whole picture", type="index",
                                                 label="Inpaint area", elem_id=f"{TAB}_inpaint_full_res")
                c["inpaint_full_res_padding"] = gr.Slider(0, 256, value=32, step=4, label="Only masked padding, pixels",
                                                          elem_id=f"{TAB}_inpaint_full_res_padding")
            c.update(image_controls(TAB))
            c.update(components.params_block(studio, TAB, hires=False))
        with gr.Column(scale=5, elem_id=f"{TAB}_results"):
            c.update(components.results_panel(TAB))

    def editor_size(value):
        return size_from_image(value.get("background") if value else None)

    c["editor"].upload(editor_size, [c["editor"]], [c["width"], c["height"]], queue=False)

    def prepare(body: dict) -> dict:
        value = body.pop("editor", None)
        upload = body.pop("mask_upload", None)
        background = value.get("background") if value else None
        if background is None:
            raise InvalidRequest("upload an image, then paint over the area to repaint", "init_images")
        mask = uploaded_mask(upload, background.size) or painted_mask(value)
        if mask is None:
            raise InvalidRequest("paint over the area to repaint (or upload a mask)", "mask")
        body["init_images"] = [background.convert("RGB")]
        body["mask"] = mask
        return body

    fields = {k: c[k] for k in c if k in Img2ImgRequest.model_fields or k in ("editor", "mask_upload")}
    generation.wire_generation(studio, TAB, "img2img", Img2ImgRequest, fields,
                               {"_seed_extra": c["seed_extra"], "_modules": c["forge_modules"],
                                "_checkpoint": c["chosen_checkpoint"]}, c,
                               prepare=prepare)

    # /inpaint for scripts: an image and a mask file (white = repaint) instead of strokes on the editor
    api_image = gr.Image(type="pil", visible=False, label="image", elem_id=f"{TAB}_api_image")

    def prepare_api(body: dict) -> dict:
        image, upload = body.pop("image", None), body.pop("mask", None)
        if image is None:
            raise InvalidRequest("send the image to repaint", "image")
        mask = uploaded_mask(upload, image.size)
        if mask is None:
            raise InvalidRequest("send a mask with white where to repaint", "mask")
        body["init_images"], body["mask"] = [image.convert("RGB")], mask
        return body

    gradio_api.generation_endpoint(studio, "inpaint", "img2img", Img2ImgRequest, c,
                                   {"image": api_image, "mask": c["mask_upload"]}, prepare=prepare_api)
    return c


def register(studio) -> None:
    studio.tabs.add(TabSpec("Inpaint", build, order=30, elem_id="tab_inpaint"))

"""img2img tab: an input image and denoising strength on top of the shared parameter block."""
from __future__ import annotations

from modules.diffusion.params import RESIZE_MODES
from modules.errors import AtelierError, InvalidRequest
from modules.extensions.tabs import TabSpec
from webui.ui import components, generation, gradio_api

TAB = "img2img"


def size_from_image(image) -> tuple:
    """Width/height sliders follow an uploaded image (multiples of 8, at most 2048)."""
    import gradio as gr

    if image is None:
        return gr.skip(), gr.skip()
    w, h = image.size
    fit = lambda v: max(64, min(2048, int(v) // 8 * 8))  # noqa: E731
    return fit(w), fit(h)


def image_controls(tab: str, default_denoise: float = 0.75) -> dict:
    import gradio as gr

    c: dict = {}
    c["resize_mode"] = gr.Radio(list(RESIZE_MODES), value=RESIZE_MODES[0], type="index", label="Resize mode",
                                elem_id=f"{tab}_resize_mode")
    c["denoising_strength"] = gr.Slider(0, 1, value=default_denoise, step=0.01, label="Denoising strength",
                                        elem_id=f"{tab}_denoising_strength")
    return c


def build(studio) -> dict:
    import gradio as gr

    from modules.diffusion.params import Img2ImgRequest

    c = components.prompt_row(studio, TAB)
    with gr.Row(equal_height=False):
        with gr.Column(scale=5, elem_id=f"{TAB}_settings"):
            c["image"] = gr.Image(label="Image for img2img", type="pil", image_mode="RGB", height=360,
                                  sources=["upload", "clipboard"], elem_id=f"{TAB}_image")
            c["interrogate"] = gr.Button("Interrogate", elem_id=f"{TAB}_interrogate", size="sm")
            c.update(image_controls(TAB))
            c.update(components.params_block(studio, TAB, hires=False))
        with gr.Column(scale=5, elem_id=f"{TAB}_results"):
            c.update(components.results_panel(TAB))
    c["image"].upload(size_from_image, [c["image"]], [c["width"], c["height"]], queue=False)

    def prepare(body: dict) -> dict:
        image = body.pop("image", None)
        if image is None:
            raise InvalidRequest("upload an image to start from", "init_images")
        body["init_images"] = [image.convert("RGB")]
        return body

    wire_interrogate(studio, c["interrogate"], c["image"], c["prompt"])
    fields = {k: c[k] for k in c if k in Img2ImgRequest.model_fields or k == "image"}
    generation.wire_generation(studio, TAB, "img2img", Img2ImgRequest, fields,
                               {"_seed_extra": c["seed_extra"], "_modules": c["forge_modules"],
                                "_checkpoint": c["chosen_checkpoint"]}, c,
                               prepare=prepare)
    gradio_api.generation_endpoint(studio, "img2img", "img2img", Img2ImgRequest, c, {"image": c["image"]},
                                   prepare=prepare)
    return c


def wire_interrogate(studio, button, image, prompt) -> None:
    """Interrogate: a caption of the image (the studio's vision caption job) becomes the prompt, as in A1111."""
    import gradio as gr

    from webui.interrogate import caption_of, caption_request

    def interrogate(image):
        """A caption of the image, by the first captioning model in models/VLM (the vision job's caption task)."""
        if image is None:
            raise gr.Error("image: upload an image to caption")
        try:
            studio.wait_ready()
            job = studio.submit("vision", caption_request(image.convert("RGB")))
            job.wait()
            return caption_of(job)
        except AtelierError as exc:
            raise gr.Error(generation.error_text(exc), title="Interrogate") from None

    button.click(gradio_api.endpoint(interrogate, "interrogate"), [image], [prompt], api_name="interrogate",
                 concurrency_id="vision")


def register(studio) -> None:
    studio.tabs.add(TabSpec("img2img", build, order=20, elem_id="tab_img2img"))

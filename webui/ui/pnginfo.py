"""PNG Info tab: drop a PNG, read its `parameters` text, send every field to txt2img."""
from __future__ import annotations

import html

from modules.extensions.tabs import TabSpec
from webui.ui import gradio_api

TAB = "pnginfo"


def read_parameters(path: str | None) -> tuple[str, dict]:
    """The infotext and any other text chunks of an image file (reads the header, not the pixels)."""
    from PIL import Image, UnidentifiedImageError

    if not path:
        return "", {}
    from modules.images import read_infotext

    try:
        with Image.open(path) as im:
            info = {k: v for k, v in (im.info or {}).items() if isinstance(v, str)}
            text = info.pop("parameters", "") or read_infotext(im)  # JPEG / WebP keep it in EXIF UserComment
    except (UnidentifiedImageError, OSError):
        return "", {"error": "not a readable image"}
    return text, info


def parameters_html(text: str, other: dict) -> str:
    from modules.diffusion import infotext

    if not text and not other:
        return "<p class='atelier-muted'>No generation parameters in this image.</p>"
    rows = []
    if text:
        parsed = infotext.parse(text)
        for key, value in parsed.items():
            if key.endswith(("-1", "-2")) or value == "":
                continue
            rows.append(f"<tr><th>{html.escape(key)}</th><td>{html.escape(str(value))}</td></tr>")
    for key, value in other.items():
        rows.append(f"<tr><th>{html.escape(key)}</th><td>{html.escape(value[:2000])}</td></tr>")
    return f"<table class='atelier-params'>{''.join(rows)}</table>"


def build(studio) -> dict:
    import gradio as gr

    c: dict = {}
    with gr.Row(equal_height=False):
        with gr.Column(scale=1):
            c["image"] = gr.Image(label="Source", type="filepath", sources=["upload", "clipboard"], height=420,
                                  elem_id="pnginfo_image")
        with gr.Column(scale=1):
            c["table"] = gr.HTML("", elem_id="pnginfo_table")
            c["text"] = gr.Textbox(label="Parameters", lines=6, interactive=False, elem_id="pnginfo_text",
                                   buttons=["copy"])
            with gr.Row():
                c["send_txt2img"] = gr.Button("Send to txt2img", elem_id="pnginfo_send_txt2img")
                c["send_img2img"] = gr.Button("Send to img2img", elem_id="pnginfo_send_img2img")
                c["send_inpaint"] = gr.Button("Send to inpaint", elem_id="pnginfo_send_inpaint")

    def show(path):
        text, other = read_parameters(path)
        return parameters_html(text, other), text

    c["image"].change(show, [c["image"]], [c["table"], c["text"]], queue=False)
    gradio_api.png_info_endpoint(studio, c["image"], c["text"])
    return c


def register(studio) -> None:
    studio.tabs.add(TabSpec("PNG Info", build, order=40, elem_id="tab_pnginfo"))

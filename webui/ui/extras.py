"""Extras tab (A1111's): upscale a single image, a batch of uploads or a folder inside the data dir —
scale by a factor or to a size, upscaler 2 blended over upscaler 1 by its visibility, faces restored by
GFPGAN — through the "extras" job; results go to outputs/extras-images/ with their infotext."""
from __future__ import annotations

from modules.errors import AtelierError
from modules.extensions.tabs import TabSpec
from webui.ui.gradio_api import GPU
from webui.ui.progress import follow, progress_html

TAB = "extras"
SOURCES = ("single", "batch", "folder")  # the three sub-tabs, as A1111's extras_mode 0, 1, 2
STARTING = "The studio is still starting; try again in a moment."


def upscaler_choices(studio, rescan: bool = False) -> list[str]:
    """None, Lanczos, Nearest and the upscaler models; `rescan` reads the folders again (the tab opening)."""
    from modules.models import upscalers

    if rescan:
        for kind in upscalers.KINDS:
            studio.registry.refresh(kind)
    return upscalers.names(studio.registry)


def request_body(source: str, image, files, folder: str, resize_mode: int, by: float, width, height, crop: bool,
                 upscaler_1: str, upscaler_2: str, visibility: float, gfpgan: bool = False,
                 gfpgan_visibility: float = 1.0) -> dict:
    """The widgets' values → the Extras request's fields (the same names as A1111's API)."""
    from PIL import Image

    body = {"resize_mode": int(resize_mode or 0), "upscaling_resize": by, "upscaling_resize_w": int(width or 512),
            "upscaling_resize_h": int(height or 512), "upscaling_crop": bool(crop), "upscaler_1": upscaler_1 or "None",
            "upscaler_2": upscaler_2 or "None", "extras_upscaler_2_visibility": visibility or 0.0,
            "gfpgan_visibility": (gfpgan_visibility or 0.0) if gfpgan else 0.0}
    if source == "folder":
        body["folder"] = (folder or "").strip() or None
    elif source == "batch":
        images, names = [], []
        for f in files or []:
            path = f if isinstance(f, str) else f.name
            with Image.open(path) as im:
                images.append(im.convert("RGB"))
            names.append(path.rsplit("/", 1)[-1])
        body |= {"images": images, "names": names}
    else:
        body["images"] = [image] if image is not None else []
    return body


def build(studio) -> dict:
    import gradio as gr

    from modules.postprocess.params import RESIZE_MODES, ExtrasRequest
    from modules.requests import parse_request

    c: dict = {}
    choices = upscaler_choices(studio)
    with gr.Row(equal_height=False):
        with gr.Column(scale=5):
            c["source"] = gr.State("single")
            with gr.Tabs(elem_id="extras_sources"):
                with gr.Tab("Single Image", elem_id="extras_single_tab") as single_tab:
                    c["image"] = gr.Image(label="Source", type="pil", image_mode="RGB", height=320,
                                          sources=["upload", "clipboard"], elem_id="extras_image")
                with gr.Tab("Batch Process", elem_id="extras_batch_tab") as batch_tab:
                    c["files"] = gr.File(label="Images", file_count="multiple", file_types=["image"],
                                         elem_id="extras_files")
                with gr.Tab("Batch from Directory", elem_id="extras_folder_tab") as folder_tab:
                    c["folder"] = gr.Textbox(label="Input folder (inside the data dir)", elem_id="extras_folder")
            for tab, name in ((single_tab, "single"), (batch_tab, "batch"), (folder_tab, "folder")):
                tab.select(lambda n=name: n, None, c["source"], queue=False, show_progress="hidden")
            c["resize_mode"] = gr.Radio(list(RESIZE_MODES), value=RESIZE_MODES[0], type="index", label="Resize",
                                        elem_id="extras_resize_mode")
            c["upscaling_resize"] = gr.Slider(1, 8, value=4, step=0.05, label="Resize by", elem_id="extras_upscaling_resize")
            with gr.Row():
                c["upscaling_resize_w"] = gr.Number(512, label="Width", precision=0, minimum=1, maximum=8192,
                                                    elem_id="extras_upscaling_resize_w")
                c["upscaling_resize_h"] = gr.Number(512, label="Height", precision=0, minimum=1, maximum=8192,
                                                    elem_id="extras_upscaling_resize_h")
                c["upscaling_crop"] = gr.Checkbox(True, label="Crop to fit", elem_id="extras_upscaling_crop")
            with gr.Row():
                c["upscaler_1"] = gr.Dropdown(choices, value=choices[-1] if len(choices) > 3 else "Lanczos",
                                              label="Upscaler 1", allow_custom_value=True, elem_id="extras_upscaler_1")
                c["upscaler_2"] = gr.Dropdown(choices, value="None", label="Upscaler 2", allow_custom_value=True,
                                              elem_id="extras_upscaler_2")
            c["extras_upscaler_2_visibility"] = gr.Slider(0, 1, value=0, step=0.001, label="Upscaler 2 visibility",
                                                          elem_id="extras_upscaler_2_visibility")
            with gr.Row():  # A1111's GFPGAN section (CodeFormer is not available: its package needs torchvision)
                c["gfpgan"] = gr.Checkbox(False, label="GFPGAN (restore faces)", elem_id="extras_gfpgan")
                c["gfpgan_visibility"] = gr.Slider(0, 1, value=1, step=0.001, label="GFPGAN visibility",
                                                   elem_id="extras_gfpgan_visibility")
            c["run"] = gr.Button("Generate", variant="primary", elem_id="extras_generate")
        with gr.Column(scale=5):
            c["progress"] = gr.HTML(progress_html(None), elem_id="extras_progress")
            c["gallery"] = gr.Gallery(label="Result", columns=2, height=420, elem_id="extras_gallery")
            c["info"] = gr.HTML("", elem_id="extras_info")

    fields = ["source", "image", "files", "folder", "resize_mode", "upscaling_resize", "upscaling_resize_w",
              "upscaling_resize_h", "upscaling_crop", "upscaler_1", "upscaler_2", "extras_upscaler_2_visibility", "gfpgan",
              "gfpgan_visibility"]

    def run(*values):
        import html

        if not studio.ready.is_set():
            raise gr.Error(STARTING)
        try:
            job = studio.submit("extras", parse_request(ExtrasRequest, request_body(*values)))
        except AtelierError as exc:
            raise gr.Error(str(exc), title="Not started") from None
        except OSError as exc:
            raise gr.Error(f"files: an upload is not a readable image ({exc})", title="Not started") from None
        for snap in follow(job, studio.settings.get().ui_updates_per_second):
            yield progress_html(snap), gr.skip(), gr.skip()
        try:
            job.raise_for_error()
        except AtelierError as exc:
            raise gr.Error(str(exc), title="Extras failed") from None
        items = [(str(done.path) if done.path else done.image, done.name) for done in job.result.images]
        info = "".join(f"<p>{html.escape(line)}</p>" for line in job.result.info.splitlines())
        yield progress_html(None), items, info

    c["run"].click(run, [c[f] for f in fields], [c["progress"], c["gallery"], c["info"]], concurrency_id=GPU)

    def refresh():
        names = upscaler_choices(studio, rescan=True) if studio.ready.is_set() else choices
        return gr.update(choices=names), gr.update(choices=names)

    c["_on_show"] = (refresh, [], [c["upscaler_1"], c["upscaler_2"]])
    return c


def register(studio) -> None:
    studio.tabs.add(TabSpec("Extras", build, order=32, elem_id="tab_extras"))  # after Inpaint, as in A1111

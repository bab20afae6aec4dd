"""The Gradio API — what `gradio_client` and the page's "Use via API" list: a few named endpoints with
inputs a script can fill, and nothing else.

Each endpoint is an event of an invisible trigger that only API calls press, so its inputs are named
after the request fields (`prompt`, `steps`, `seed`, … through `inputs_kwargs`) and typed by the tab's
own components (a sampler is one of the dropdown's choices); it builds the same request as the Generate
button, waits for the job and returns the images, the first infotext and A1111's `info` object.

Every other event of the UI — the tabs' own, extensions' — is made private once the page is built
(`keep_only_public`): the UI still calls them, the API lists and serves only PUBLIC. A tab that wants
an endpoint of its own (chat, vision, training) names it here.
"""
# (no `from __future__ import annotations`: Gradio reads the hints of gr.api functions)

from typing import Callable

from modules.errors import AtelierError

PUBLIC = ("txt2img", "img2img", "inpaint", "png_info", "interrupt", "skip", "chat", "vision", "vision_batch",
          "train_start", "train_plan", "interrogate", "vision_video")
GPU = "gpu"  # the generation events' concurrency group (generation.py)
# Request fields a script may set, in A1111's order; a tab offers those it has components for.
GENERATION_FIELDS = (
    "prompt", "negative_prompt", "styles", "sampler_name", "scheduler", "steps", "restore_faces", "tiling",
    "width", "height",
    "batch_size", "n_iter", "cfg_scale", "seed", "subseed", "subseed_strength", "clip_skip", "enable_hr",
    "hr_upscaler", "hr_second_pass_steps", "hr_scale", "hr_resize_x", "hr_resize_y", "denoising_strength",
    "resize_mode", "mask_blur", "inpainting_mask_invert", "inpainting_fill", "inpaint_full_res",
    "inpaint_full_res_padding",
)


def generation_endpoint(studio, name: str, kind: str, request_cls, comps: dict, images: dict,
                        prepare: Callable[[dict], dict] | None = None) -> None:
    """`/name`: the tab's generation fields (`comps`) plus its image inputs (`images`: parameter → component),
    → (gallery, infotext, info)."""
    import gradio as gr

    from webui.ui.generation import error_text, make_request, result_items

    info = gr.JSON(visible=False, label="info")
    inputs = {f: comps[f] for f in GENERATION_FIELDS if f in comps}
    inputs.update(images)

    def endpoint(**values):
        try:
            request = make_request(request_cls, values, prepare)
            studio.wait_ready()
            job = studio.submit(kind, request)
        except AtelierError as exc:
            raise gr.Error(error_text(exc)) from None
        job.wait()
        if job.error:
            where = f"{job.error_field}: " if job.error_field else ""
            raise gr.Error(f"{where}{job.error}")
        gallery, records = result_items(job.result)
        return gallery, (records[0]["infotext"] if records else ""), dict(job.result.info if job.result else {})

    endpoint.__doc__ = f"{kind} with Atelier's (A1111's) parameters; returns the images, the first infotext and A1111's info."
    _mark(endpoint, name)
    trigger = gr.Button(visible=False, elem_id=f"api_{name}")
    trigger.click(endpoint, inputs=[], inputs_kwargs=inputs, outputs=[comps["gallery"], comps["info"], info],
                  api_name=name, concurrency_id=GPU, show_progress="hidden")


def png_info_endpoint(studio, image, text) -> None:
    """`/png_info`: an image file (the PNG Info tab's input) → (its infotext, the parsed parameters)."""
    import gradio as gr

    from modules.diffusion import infotext
    from webui.ui.pnginfo import read_parameters

    parsed = gr.JSON(visible=False, label="parsed")

    def png_info(image):
        """The generation parameters of an image: its infotext and that text parsed (A1111's names)."""
        text_value, _ = read_parameters(image)
        return text_value, (infotext.parse_with_styles(text_value, studio.styles) if text_value else {})

    trigger = gr.Button(visible=False, elem_id="api_png_info")
    trigger.click(_mark(png_info, "png_info"), inputs=[image], outputs=[text, parsed], api_name="png_info", queue=False)


def control_endpoints(studio) -> None:
    """`/interrupt` and `/skip`: the running job, whoever started it (A1111's /sdapi/v1/interrupt and /skip)."""
    import gradio as gr

    def interrupt() -> str:
        """Stop the running generation after its current step; what is done is kept."""
        return "interrupted" if studio.jobs.interrupt() else "nothing was running"  # as /sdapi/v1/interrupt

    def skip() -> str:
        """Drop the image being made and go on with the next of the batch."""
        return "skipped" if studio.jobs.skip() else "nothing was running"

    gr.api(_mark(interrupt, "interrupt"), api_name="interrupt", queue=False)
    gr.api(_mark(skip, "skip"), api_name="skip", queue=False)


def endpoint(fn, name: str):
    """Tag a function as the one behind public endpoint `name` (what keep_only_public keeps); a tab wraps
    the handler of an event it names with `api_name` (chat, vision) in it."""
    if name not in PUBLIC:
        raise ValueError(f"{name!r} is not one of the public endpoints {PUBLIC}: add it there")
    fn.atelier_api = name
    return fn


_mark = endpoint


def keep_only_public(blocks) -> list[str]:
    """Make every event but the marked endpoints private (hidden from the API page, not callable by clients);
    an internal event that took a public name first (a UI handler called `interrupt`) gives it up.
    Returns the public names, for the log."""
    ours = {}
    for block_fn in blocks.fns.values():
        name = getattr(block_fn.fn, "atelier_api", None)
        if name in PUBLIC:
            ours[name] = block_fn
    for key, block_fn in blocks.fns.items():
        if any(block_fn is mine for mine in ours.values()):
            continue
        block_fn.api_visibility = "private"
        if block_fn.api_name in ours:
            block_fn.api_name = f"{block_fn.api_name}_ui_{key}"
    for name, block_fn in ours.items():
        block_fn.api_name = name
    return sorted(ours)

"""txt2img tab (minimal; the web UI issue completes it)."""
from __future__ import annotations

from modules.extensions.tabs import TabSpec


def build(studio):
    import gradio as gr

    from modules.diffusion.params import Txt2ImgRequest

    prompt = gr.Textbox(label="Prompt", elem_id="txt2img_prompt")
    go = gr.Button("Generate", elem_id="txt2img_generate")
    gallery = gr.Gallery(label="Output", elem_id="txt2img_gallery")
    info = gr.Textbox(label="Infotext", elem_id="txt2img_info")

    def run(p):
        studio.wait_ready()
        job = studio.submit("txt2img", Txt2ImgRequest(prompt=p, steps=10, width=64, height=64)).wait()
        if job.error:
            raise gr.Error(job.error)
        return [g.image for g in job.result.images], job.result.images[0].infotext

    go.click(run, [prompt], [gallery, info], concurrency_id="gpu")
    return {"prompt": prompt, "generate": go, "gallery": gallery, "info": info}


def register(studio):
    studio.tabs.add(TabSpec("txt2img", build, order=10, elem_id="tab_txt2img"))

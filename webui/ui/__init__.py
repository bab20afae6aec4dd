"""Builds the Gradio Blocks from the tab registry (built-in tabs register like extensions)."""
from __future__ import annotations


def build_ui(studio):
    import gradio as gr

    from webui.ui import txt2img

    txt2img.register(studio)
    with gr.Blocks(title="Atelier") as blocks:
        for spec in studio.tabs.list():
            with gr.Tab(spec.title, elem_id=spec.elem_id or None):
                spec.build(studio)
    return blocks

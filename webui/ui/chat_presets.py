"""The Chat tab's system prompt presets: pick one to fill the system prompt box, save the box under a
name, delete one. Kept by the chat task (modules/chat/presets.py, <data-dir>/system_prompts.json)."""
from __future__ import annotations

from modules.errors import AtelierError


def preset_store(studio):
    return studio.jobs.services_of("chat").presets


def build_presets(studio, system) -> dict:
    """Lay out the presets row under the system prompt box `system` and wire its events."""
    import gradio as gr

    from webui.ui.chat_turn import gr_error

    c: dict = {}
    with gr.Row(equal_height=True):
        c["preset"] = gr.Dropdown([], label="System prompt preset", elem_id="chat_preset", scale=2)
        c["preset_name"] = gr.Textbox(label="Preset name", placeholder="name to save as", elem_id="chat_preset_name",
                                      scale=2)
    with gr.Row():
        c["preset_save"] = gr.Button("💾 Save preset", elem_id="chat_preset_save", size="sm")
        c["preset_delete"] = gr.Button("🗑️ Delete preset", elem_id="chat_preset_delete", size="sm")

    def preset_list(value=None):
        return gr.Dropdown(choices=preset_store(studio).names() if studio.ready.is_set() else [], value=value)

    def pick_preset(name):
        if not name:
            return gr.Textbox(), ""
        try:
            return gr.Textbox(value=preset_store(studio).get(name)), name
        except AtelierError as exc:
            raise gr_error(exc) from None

    def save_preset(name, text):
        try:
            saved = preset_store(studio).save(name, text)
        except AtelierError as exc:
            raise gr_error(exc) from None
        gr.Info(f"Saved the system prompt as “{saved}”")
        return preset_list(saved), saved

    def delete_preset(name):
        if not name:
            raise gr.Error("Pick the preset to delete first")
        try:
            preset_store(studio).delete(name)
        except AtelierError as exc:
            raise gr_error(exc) from None
        return preset_list(None), ""

    c["preset"].input(pick_preset, [c["preset"]], [system, c["preset_name"]], queue=False, api_visibility="private")
    c["preset_save"].click(save_preset, [c["preset_name"], system], [c["preset"], c["preset_name"]], queue=False,
                           api_visibility="private")
    c["preset_delete"].click(delete_preset, [c["preset"]], [c["preset"], c["preset_name"]], queue=False,
                             api_visibility="private")
    c["_preset_list"] = preset_list
    return c

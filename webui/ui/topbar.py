"""The bar above the tabs (A1111's quicksettings): checkpoint + refresh, VAE, and the status line —
"loading models…" until the studio is ready, a load error, or the demo-model banner."""
from __future__ import annotations

import html

from modules.errors import AtelierError
from webui.checkpoints import switch_checkpoint


def checkpoint_names(studio) -> list[str]:
    try:
        return [e.name for e in studio.registry.list("checkpoint")]
    except AtelierError:
        return []


def vae_names(studio) -> list[str]:
    try:
        return ["Automatic", "None", *[e.name for e in studio.registry.list("vae")]]
    except AtelierError:
        return ["Automatic", "None"]


def active_checkpoint(studio) -> str | None:
    """The loaded checkpoint; before start-up has finished, the one the settings name."""
    active = studio.models.active if studio.ready.is_set() else None
    if active is not None:
        return active.entry.name
    return studio.settings.get().sd_model_checkpoint or None


def status_html(studio) -> str:
    """One calm line; the demo banner says plainly that the pictures will be noise."""
    from modules.models.demo import DEMO_NOTE, is_demo

    if not studio.ready.is_set():
        return "<div class='atelier-banner loading'>⏳ Loading models… the page works; generation starts when they are ready.</div>"
    if studio.settings.warning:  # a corrupt config.json was kept aside: say so before anything else
        return f"<div class='atelier-banner warn'>⚠️ {html.escape(studio.settings.warning)}</div>"
    if studio.load_error:
        return f"<div class='atelier-banner error'>⚠️ Models could not load: {html.escape(studio.load_error)}</div>"
    active = studio.models.active
    if active is None:
        return ("<div class='atelier-banner warn'>No checkpoint loaded. Put a .safetensors file or a diffusers folder "
                "into models/Stable-diffusion and press 🔄.</div>")
    if is_demo(active.entry.path):
        return f"<div class='atelier-banner demo'>🧪 {html.escape(DEMO_NOTE)}</div>"
    return ""


def build(studio) -> dict:
    import gradio as gr

    c: dict = {}
    with gr.Row(elem_id="quicksettings", equal_height=True):
        c["checkpoint"] = gr.Dropdown(choices=checkpoint_names(studio), value=active_checkpoint(studio),
                                      label="Stable Diffusion checkpoint", elem_id="setting_sd_model_checkpoint",
                                      scale=4, min_width=240)
        c["refresh"] = gr.Button("🔄", elem_id="refresh_sd_model_checkpoint", scale=0, min_width=44)
        c["vae"] = gr.Dropdown(choices=vae_names(studio), value=studio.settings.get().sd_vae, label="SD VAE",
                               elem_id="setting_sd_vae", scale=2, min_width=160, allow_custom_value=True)
        gr.Column(scale=3, min_width=0)  # keeps the two dropdowns at A1111's width on wide screens
    c["status"] = gr.HTML(status_html(studio), elem_id="atelier_status")
    c["timer"] = gr.Timer(1.0, active=True)

    def poll():
        ready = studio.ready.is_set()
        return (status_html(studio), gr.Dropdown(choices=checkpoint_names(studio), value=active_checkpoint(studio)),
                gr.Timer(active=not ready))

    c["timer"].tick(poll, None, [c["status"], c["checkpoint"], c["timer"]], queue=False, show_progress="hidden")

    def refresh():
        studio.registry.refresh()
        return gr.Dropdown(choices=checkpoint_names(studio), value=active_checkpoint(studio)), \
            gr.Dropdown(choices=vae_names(studio)), status_html(studio)

    c["refresh"].click(refresh, None, [c["checkpoint"], c["vae"], c["status"]], queue=False)

    def change_checkpoint(name):
        if not name:
            return gr.skip()
        try:
            switch_checkpoint(studio, name)
        except AtelierError as exc:
            raise gr.Error(str(exc)) from None
        return status_html(studio)

    c["checkpoint"].input(change_checkpoint, [c["checkpoint"]], [c["status"]], concurrency_id="gpu")

    def change_vae(name):
        try:
            studio.settings.update({"sd_vae": name or "Automatic"})
        except AtelierError as exc:
            raise gr.Error(str(exc)) from None

    c["vae"].input(change_vae, [c["vae"]], None, queue=False)
    c["_on_load"] = (poll, None, [c["status"], c["checkpoint"], c["timer"]])
    return c

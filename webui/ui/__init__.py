"""Builds the Gradio Blocks from the tab registry (built-in tabs register like extensions).

Each tab's build(studio) returns its components by name; a key "_on_show" holds
(fn, inputs, outputs) to run whenever that tab is opened. Cross-tab buttons are wired
after every tab exists (sendto.py). Pass CSS to mount_gradio_app/launch (Gradio 6).
"""
from __future__ import annotations

import logging

log = logging.getLogger("atelier.ui")

CSS = """
#quicksettings { align-items: end; }
#atelier_status .atelier-banner { padding: 8px 12px; border-radius: 8px; font-size: 0.9em; line-height: 1.35; }
.atelier-banner.demo { background: var(--color-accent-soft); border: 1px solid var(--border-color-accent); }
.atelier-banner.loading { background: var(--background-fill-secondary); }
.atelier-banner.warn, .atelier-banner.error { background: #fff4e5; border: 1px solid #f0b45b; color: #5a3b00; }
.atelier-actions button.lg { min-height: 72px; font-size: 1.1em; }
.atelier-progress { margin: 2px 0 6px; }
.atelier-progress.idle { display: none; }
.atelier-progress-bar { height: 8px; border-radius: 4px; background: var(--background-fill-secondary); overflow: hidden; }
.atelier-progress-fill { height: 100%; background: var(--color-accent); transition: width 0.2s linear; }
.atelier-progress-text { font-size: 0.85em; color: var(--body-text-color-subdued); margin-top: 3px; }
.atelier-gauge { margin: 6px 0; }
table.atelier-params th { text-align: left; padding-right: 12px; white-space: nowrap; vertical-align: top; }
.atelier-muted { color: var(--body-text-color-subdued); }
"""


def builtin_tab_modules():
    from webui.ui import (chat, extensions_tab, extras, gallery, img2img, inpaint, models, pnginfo, settings, train,
                          txt2img, vision)

    return (txt2img, img2img, inpaint, extras, pnginfo, chat, vision, gallery, train, models, settings, extensions_tab)


def register_builtin(studio) -> None:
    for module in builtin_tab_modules():
        module.register(studio)


def build_ui(studio):
    import gradio as gr

    from webui.ui import components, gradio_api, sendto, topbar

    register_builtin(studio)
    # Outputs are served straight from disk (no copy into Gradio's cache), so the gallery stays fast; so are
    # training samples and dataset images (the Train tab's galleries).
    from modules.training.captions import datasets_root

    gr.set_static_paths([str(studio.paths.outputs), str(studio.paths.training), str(datasets_root(studio.paths.root))])
    ui: dict[str, dict] = {}
    with gr.Blocks(title="Atelier") as blocks:
        top = topbar.build(studio)
        with gr.Tabs(elem_id="tabs") as tabs:
            for spec in studio.tabs.list():
                tab_id = spec.elem_id or spec.title
                with gr.Tab(spec.title, id=tab_id, elem_id=spec.elem_id or None) as tab:
                    try:
                        comps = spec.build(studio) or {}
                    except Exception as exc:  # one broken (extension) tab must not take the UI down
                        log.exception("tab %r (%s) failed to build", spec.title, spec.owner)
                        gr.Markdown(f"⚠️ This tab could not be built: `{type(exc).__name__}: {exc}`")
                        comps = {}
                ui[tab_id] = comps if isinstance(comps, dict) else {}
                on_show = ui[tab_id].get("_on_show")
                if on_show:
                    fn, inputs, outputs = on_show
                    tab.select(fn, inputs, outputs, queue=False, show_progress="hidden")
        sendto.wire(studio, ui, tabs)
        components.wire_arch_fields(studio, top["checkpoint"], ui)
        fn, inputs, outputs = top["_on_load"]
        blocks.load(fn, inputs, outputs, queue=False, show_progress="hidden")
        for comps in ui.values():  # a tab that loads or unloads a checkpoint: the top bar shows what is active now
            for event in comps.get("_checkpoint_events", []):
                event.then(fn, inputs, outputs, queue=False, show_progress="hidden")
        gradio_api.control_endpoints(studio)
        log.debug("Gradio API endpoints: %s", gradio_api.keep_only_public(blocks))  # before the config is made
    blocks.atelier_components = ui  # for tests and extensions that want to reach a built tab
    return blocks

"""Extensions tab: the installed extensions with status (and errors), enable/disable,
install from a git URL / folder / zip, update, remove, and each extension's settings.

Every action calls studio.extensions (modules/extensions/manage.py); refusals (e.g.
install under --listen) come back as AtelierError and are shown, not raised.
"""
from __future__ import annotations

import html
import typing

from modules.errors import AtelierError
from modules.extensions.tabs import TabSpec

HEADERS = ["name", "version", "status", "source", "description", "tabs", "routes"]


def register(studio) -> None:
    studio.tabs.add(TabSpec("Extensions", build, order=900, elem_id="tab_extensions"))
    studio.extensions.render_error = render_error
    studio.extensions.tab_built = lambda owner: follow_enabled(studio, owner)
    # build_ui builds every registered tab right after registration: the loaded ones are on the page.
    studio.extensions.mark_ui_built()


def render_error(message: str, text: str) -> None:
    """Shown inside an extension's tab whose build raised (called within that gr.Tab)."""
    import gradio as gr

    gr.Markdown(f"⚠️ {message} See the Extensions tab.\n\n```\n{text[-3000:]}\n```")


def follow_enabled(studio, owner: str) -> None:
    """Inside an extension's gr.Tab: on every page load, show it only while its extension
    is enabled — so disabling takes its tab away at the next reload, without a restart."""
    import gradio as gr
    from gradio.context import Context

    tab, root = Context.block, Context.root_block
    if not isinstance(tab, gr.Tab) or root is None:
        return

    def visible():
        return gr.Tab(visible=owner not in studio.extensions.disabled_names())

    root.load(visible, None, [tab], queue=False, show_progress="hidden")


def _rows(studio) -> list[list[str]]:
    rows = []
    for e in studio.extensions.list():
        status = e["status"] + (f" — {e['note']}" if e["note"] else "")
        rows.append([e["name"], e["version"], status, e["source"] + (f" ({e['git']['commit']})" if e["git"] else ""),
                     e["description"], ", ".join(e["tabs"]), ", ".join(e["routes"])])
    return rows


def _errors_md(studio) -> str:
    parts = []
    for e in studio.extensions.list():
        if e["error"]:
            parts.append(f"<details><summary><b>{html.escape(e['name'])}</b>: {e['status']}</summary>\n\n"
                         f"```\n{e['error'][-4000:]}\n```\n</details>")
    return "\n\n".join(parts)


def _field_widget(ext: str, name: str, info, value):
    import gradio as gr

    label = info.description or name.replace("_", " ")
    elem_id = f"ext_{ext}_{name}".replace("-", "_")
    ann = info.annotation
    if typing.get_origin(ann) is typing.Literal:
        return gr.Dropdown(list(typing.get_args(ann)), value=value, label=label, elem_id=elem_id)
    if ann is bool:
        return gr.Checkbox(value, label=label, elem_id=elem_id)
    if ann in (int, float):
        return gr.Number(value, label=label, precision=0 if ann is int else None, elem_id=elem_id)
    return gr.Textbox(str(value), label=label, elem_id=elem_id)


def _settings_section(studio, ext: str, model) -> dict:
    """One accordion of typed fields and a Save button for an extension's settings."""
    import gradio as gr

    current = studio.extensions.get_settings(ext)
    with gr.Accordion(f"{ext} settings", open=False, elem_id=f"ext_settings_{ext}".replace("-", "_")):
        widgets = {n: _field_widget(ext, n, info, current.get(n)) for n, info in model.model_fields.items()}
        save = gr.Button("Save", elem_id=f"ext_settings_save_{ext}".replace("-", "_"), size="sm")
        result = gr.Markdown("")
    names = list(widgets)

    def do_save(*values):
        data = {}
        for n, v in zip(names, values):
            if model.model_fields[n].annotation is int and isinstance(v, float):
                v = int(v)
            data[n] = v
        try:
            studio.extensions.save_settings(ext, data)
        except AtelierError as exc:
            return f"⚠️ {exc}"
        return "Saved."

    save.click(do_save, list(widgets.values()), [result], queue=False)
    return {"save": save, "result": result, **widgets}


def build(studio) -> dict:
    import gradio as gr

    c: dict = {}
    gr.Markdown("Extensions add tabs, samplers, hooks and routes through a small versioned API "
                "(docs/extensions.md). Enable/disable applies at once; new tabs appear after a restart.")
    c["table"] = gr.Dataframe(headers=HEADERS, value=_rows(studio), interactive=False, wrap=True,
                              elem_id="extensions_table")
    c["errors"] = gr.Markdown(_errors_md(studio), elem_id="extensions_errors")
    names = sorted(studio.extensions.records)
    with gr.Row():
        c["name"] = gr.Dropdown(names, value=names[0] if names else None, label="Extension",
                                elem_id="extensions_name", scale=2)
        c["enable"] = gr.Button("Enable", elem_id="extensions_enable", scale=0)
        c["disable"] = gr.Button("Disable", elem_id="extensions_disable", scale=0)
        c["update"] = gr.Button("Update (git pull)", elem_id="extensions_update", scale=0)
        c["remove"] = gr.Button("Remove", variant="stop", elem_id="extensions_remove", scale=0)
        c["refresh"] = gr.Button("🔄", elem_id="extensions_refresh", scale=0, min_width=40)
    with gr.Row():
        c["source"] = gr.Textbox(label="Install from a git URL, a local folder or a .zip", elem_id="extensions_source",
                                 scale=3)
        c["confirm"] = gr.Checkbox(False, label="Also install its Python requirements (pip: into this studio's "
                                   "Python, or into the extension's own environment)",
                                   elem_id="extensions_confirm_requirements")
        c["install"] = gr.Button("Install", variant="primary", elem_id="extensions_install", scale=0)
    c["message"] = gr.Markdown("", elem_id="extensions_message")
    gr.Markdown("### Extension settings")
    for ext in names:
        model = studio.extensions.settings_model(ext)
        if model is not None:
            c[f"settings_{ext}"] = _settings_section(studio, ext, model)

    def view(message: str = ""):
        return (_rows(studio), _errors_md(studio), gr.Dropdown(choices=sorted(studio.extensions.records)), message)

    def act(action: str):
        def run(name, source, confirm):
            ext = studio.extensions
            try:
                if action == "install":
                    info = ext.install(source, bool(confirm))
                    msg = f"Installed {info['name']} {info['version']}: {info['status']}."
                elif not name:
                    return view("⚠️ Choose an extension first.")
                elif action == "update":
                    info = ext.update(name, bool(confirm))
                    msg = f"Updated {name}: {info['status']}."
                elif action == "remove":
                    info = ext.remove(name)
                    msg = f"Removed {name}."
                elif action == "enable":
                    info = ext.enable(name, bool(confirm))
                    msg = f"{name}: {info['status']}."
                else:
                    info = ext.enable(name) if action == "enable" else ext.disable(name)
                    msg = f"{name}: {info['status']}."
                if action != "remove" and info.get("note"):
                    msg += f" ({info['note']})"
            except AtelierError as exc:
                msg = f"⚠️ {exc}"
            return view(msg)
        return run

    outputs = [c["table"], c["errors"], c["name"], c["message"]]
    inputs = [c["name"], c["source"], c["confirm"]]
    for action in ("enable", "disable", "update", "remove", "install"):
        c[action].click(act(action), inputs, outputs)
    c["refresh"].click(lambda: view(), None, outputs, queue=False)
    c["_on_show"] = (lambda: view(), None, outputs)
    return c

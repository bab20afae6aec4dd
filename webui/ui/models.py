"""Models tab: what is on disk per kind (read-only), load/unload, a memory gauge, a download box."""
from __future__ import annotations

import html

from modules.errors import AtelierError
from modules.extensions.tabs import TabSpec

COLUMNS = ["Name", "Size", "Arch", "Hash", "Where"]


def _size(n: int | None) -> str:
    if not n:
        return ""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return ""


def rows(studio, kind: str) -> list[list[str]]:
    """From studio.models.describe() when the manager offers it, else from the registry."""
    describe = getattr(studio.models, "describe", None) if studio.models is not None else None
    if callable(describe):
        try:
            found = [d for d in (describe() or []) if isinstance(d, dict) and d.get("kind", kind) == kind]
            if found:
                return [[str(d.get("name", "")), _size(d.get("size")), str(d.get("arch") or ""),
                         str(d.get("short_hash") or (d.get("sha256") or "")[:10]),
                         str(d.get("where") or d.get("location") or d.get("device") or "disk")] for d in found]
        except Exception:  # a describe() in flux must not blank the tab; fall back to the registry
            pass
    active = getattr(studio.models, "active", None) if studio.models is not None else None
    device = studio.device.name if studio.device is not None else "cpu"
    out = []
    for e in studio.registry.list(kind):
        where = device if (active is not None and kind == "checkpoint" and active.entry.path == e.path) else "disk"
        out.append([e.name, _size(e.size), e.arch or "", e.short_hash or "", where])
    return out


def memory_html(studio) -> str:
    from modules.devices import memory_readings

    device = studio.device.name if studio.device is not None else "cpu"
    try:
        m = memory_readings(device)
    except Exception as exc:  # psutil/torch missing on an odd platform: say so, keep the tab
        return f"<p>Memory readings unavailable: {html.escape(str(exc))}</p>"

    def gauge(label: str, used: int, total: int) -> str:
        pct = 100.0 * used / total if total else 0.0
        return (f"<div class='atelier-gauge'><span>{label}: {used / 2**30:.1f} / {total / 2**30:.1f} GiB</span>"
                f"<div class='atelier-progress-bar'><div class='atelier-progress-fill' style='width:{pct:.0f}%'></div></div></div>")

    parts = [gauge("System RAM", m["ram"]["used"], m["ram"]["total"]),
             f"<p>This process: {m['process_rss'] / 2**30:.2f} GiB</p>"]
    if "cuda" in m:
        parts.append(gauge("GPU memory", m["cuda"]["used"], m["cuda"]["total"]))
    return "".join(parts)


def build(studio) -> dict:
    import gradio as gr

    kinds = studio.paths.model_kinds()
    c: dict = {}
    with gr.Row(equal_height=False):
        c["kind"] = gr.Dropdown(kinds, value="checkpoint", label="Kind", elem_id="models_kind", scale=2)
        c["refresh"] = gr.Button("🔄 Refresh", elem_id="models_refresh", scale=0, min_width=120, size="sm")
    c["table"] = gr.Dataframe(headers=COLUMNS, value=[], interactive=False, elem_id="models_table", wrap=True)
    with gr.Row(equal_height=False):
        c["name"] = gr.Dropdown(choices=[], label="Checkpoint", elem_id="models_name", scale=3)
        c["load"] = gr.Button("Load", variant="primary", elem_id="models_load", scale=0, min_width=100, size="sm")
        c["unload"] = gr.Button("Unload", elem_id="models_unload", scale=0, min_width=100, size="sm")
    c["memory"] = gr.HTML("", elem_id="models_memory")
    with gr.Accordion("Download a model", open=False, elem_id="models_download_acc"):
        with gr.Row(equal_height=False):
            c["source"] = gr.Textbox(label="Hugging Face repo id or URL", placeholder="runwayml/stable-diffusion-v1-5",
                                     elem_id="models_download_source", scale=4)
            c["download_kind"] = gr.Dropdown(kinds, value="checkpoint", label="Into", scale=1)
            c["download"] = gr.Button("Download", elem_id="models_download", scale=1, size="sm")
        c["download_status"] = gr.Markdown("")

    def show(kind):
        kind = kind or "checkpoint"
        try:
            table = rows(studio, kind)
        except AtelierError as exc:
            raise gr.Error(str(exc)) from None
        from webui.ui.topbar import active_checkpoint

        names = [e.name for e in studio.registry.list("checkpoint")]
        return table, gr.Dropdown(choices=names, value=active_checkpoint(studio)), memory_html(studio)

    outs = [c["table"], c["name"], c["memory"]]
    c["kind"].change(show, [c["kind"]], outs, queue=False)

    def refresh(kind):
        studio.registry.refresh()
        return show(kind)

    c["refresh"].click(refresh, [c["kind"]], outs, queue=False)

    def load(name, kind):
        from webui.ui.topbar import switch_checkpoint

        if not name:
            gr.Warning("Choose a checkpoint first")
            return show(kind)
        try:
            switch_checkpoint(studio, name)
        except AtelierError as exc:
            raise gr.Error(str(exc)) from None
        return show(kind)

    c["load"].click(load, [c["name"], c["kind"]], outs, concurrency_id="gpu")

    def unload(kind):
        unload_fn = getattr(studio.models, "unload", None) if studio.models is not None else None
        if not callable(unload_fn):
            gr.Warning("Unloading is not available in this build")
            return show(kind)
        try:
            unload_fn()
        except AtelierError as exc:
            raise gr.Error(str(exc)) from None
        return show(kind)

    c["unload"].click(unload, [c["kind"]], outs, concurrency_id="gpu")

    def download(source, kind):
        source = (source or "").strip()
        if not source:
            raise gr.Error("Type a Hugging Face repo id (owner/name) or a URL")
        if "download" not in studio.jobs.kinds():
            raise gr.Error("Downloading is not available in this build; copy the file into models/ and press Refresh")
        try:
            job = studio.submit("download", {"source": source, "kind": kind})
        except AtelierError as exc:
            raise gr.Error(str(exc)) from None
        return f"Download queued (job {job.id}); press Refresh when it is done."

    c["download"].click(download, [c["source"], c["download_kind"]], [c["download_status"]], queue=False)
    c["_on_show"] = (show, [c["kind"]], outs)
    return c


def register(studio) -> None:
    studio.tabs.add(TabSpec("Models", build, order=60, elem_id="tab_models"))

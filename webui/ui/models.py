"""Models tab: what is on disk per kind (read-only), load/unload, a memory gauge, a download box."""
from __future__ import annotations

from modules.errors import AtelierError
from modules.extensions.tabs import TabSpec
from webui.checkpoints import switch_checkpoint
from webui.ui.topbar import active_checkpoint

COLUMNS = ["Name", "Size", "Arch", "Hash", "Where"]
STARTING = "The studio is still starting; models are listed once it is ready."


def _size(n: int | None) -> str:
    if not n:
        return ""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return ""


def rows(studio, kind: str) -> list[list[str]]:
    """The model manager's view of one kind: name, size, arch, hash, where it is now (empty while starting)."""
    if not studio.ready.is_set():
        return []
    return [[d["name"], _size(d["size"]), d["arch"] or "", d["short_hash"] or "", d["location"]]
            for d in studio.models.describe() if d["kind"] == kind]


def memory_html(studio) -> str:
    if not studio.ready.is_set():
        return f"<p>{STARTING}</p>"
    m = studio.models.memory()

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
        names = [e.name for e in studio.registry.list("checkpoint")]
        return table, gr.Dropdown(choices=names, value=active_checkpoint(studio)), memory_html(studio)

    outs = [c["table"], c["name"], c["memory"]]
    c["kind"].change(show, [c["kind"]], outs, queue=False)

    def refresh(kind):
        studio.registry.refresh()
        return show(kind)

    c["refresh"].click(refresh, [c["kind"]], outs, queue=False)

    def load(name, kind):
        if not name:
            gr.Warning("Choose a checkpoint first")
            return show(kind)
        try:
            switch_checkpoint(studio, name)
        except AtelierError as exc:
            raise gr.Error(str(exc)) from None
        return show(kind)

    c["load"].click(load, [c["name"], c["kind"]], outs, concurrency_id="gpu")

    def unload(name, kind):
        if not studio.ready.is_set():
            gr.Warning(STARTING)
        elif not name:
            gr.Warning("Choose a checkpoint first")
        else:
            try:
                studio.models.unload(name)
            except AtelierError as exc:
                raise gr.Error(str(exc)) from None
        return show(kind)

    c["unload"].click(unload, [c["name"], c["kind"]], outs, concurrency_id="gpu")

    def download(source, kind):
        source = (source or "").strip()
        if not source:
            raise gr.Error("Type a Hugging Face repo id (owner/name) or a URL")
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

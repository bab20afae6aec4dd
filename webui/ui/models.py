"""Models tab: every kind on disk (where each model is now, its footprint, its load options, its
adapters), load with options / unload, the model manager's budget per device, a download box."""
from __future__ import annotations

from modules.errors import AtelierError
from modules.extensions.tabs import TabSpec
from webui.checkpoints import switch_checkpoint
from webui.ui.topbar import active_checkpoint

COLUMNS = ["Name", "Size", "Arch", "Hash", "Where", "In memory", "Options", "Adapters", "Note"]
STARTING = "The studio is still starting; models are listed once it is ready."
DTYPES = ("auto", "fp32", "fp16", "bf16")
QUANTIZATIONS = ("none", "int8", "nf4", "fp4")
T5_STORAGE = ("none", "int8", "fp8")  # Flux / SD3's T5 text encoder (modules/models/t5_storage.py)


def _size(n: int | None) -> str:
    if not n:
        return ""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return ""


def rows(studio, kind: str) -> list[list[str]]:
    """The model manager's view of one kind (empty while starting): where each model is now, its
    footprint, its load options, the adapters made for it, and whether it is a random-weight demo."""
    if not studio.ready.is_set():
        return []
    out = []
    for d in studio.models.describe():
        if d["kind"] != kind:
            continue
        adapters = ""
        if kind in ("llm", "vlm"):
            entry = studio.registry.get(kind, d["name"])
            adapters = ", ".join(a.name for a in studio.registry.adapters_for(entry))
        note = "in use" if d["in_use"] else ("active" if d["active"] else "")
        if d["demo"]:
            note = ", ".join(filter(None, [note, "demo: random weights"]))
        options = ", ".join(filter(None, [d["quantization"], f"T5 {d['t5']}" if d["t5"] != "none" else ""]))
        out.append([d["name"], _size(d["size"]), d["arch"] or "", d["short_hash"] or "", d["location"],
                    _size(d["footprint_bytes"]), options, adapters, note])
    return out


def memory_html(studio) -> str:
    if not studio.ready.is_set():
        return f"<p>{STARTING}</p>"
    m = studio.models.memory()

    def gauge(label: str, used: int, total: int) -> str:
        pct = 100.0 * used / total if total else 0.0
        return (f"<div class='atelier-gauge'><span>{label}: {used / 2**30:.1f} / {total / 2**30:.1f} GiB</span>"
                f"<div class='atelier-progress-bar'><div class='atelier-progress-fill' style='width:{pct:.0f}%'></div></div></div>")

    parts = [gauge(f"Models on {b['device']} (budget)", b["used_bytes"], b["budget_bytes"])
             for b in studio.models.budgets()]
    parts += [gauge("System RAM", m["ram"]["used"], m["ram"]["total"]),
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
        c["name"] = gr.Dropdown(choices=[], label="Model", elem_id="models_name", scale=3)
        c["dtype"] = gr.Dropdown(list(DTYPES), value="auto", label="dtype", elem_id="models_dtype", scale=1)
        c["quantization"] = gr.Dropdown(list(QUANTIZATIONS), value="none", label="Quantization (bitsandbytes)",
                                        elem_id="models_quantization", scale=1)
        c["double_quant"] = gr.Checkbox(False, label="double quant (4-bit)", elem_id="models_double_quant", scale=1)
        c["t5"] = gr.Dropdown(list(T5_STORAGE), value="none", label="T5 (Flux / SD3)", elem_id="models_t5", scale=1)
        c["load"] = gr.Button("Load", variant="primary", elem_id="models_load", scale=0, min_width=100, size="sm")
        c["unload"] = gr.Button("Unload", elem_id="models_unload", scale=0, min_width=100, size="sm")
    c["status"] = gr.Markdown("", elem_id="models_status")
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
        names = [e.name for e in studio.registry.list(kind)]
        chosen = active_checkpoint(studio) if kind == "checkpoint" else (names[0] if names else None)
        return table, gr.Dropdown(choices=names, value=chosen), memory_html(studio)

    outs = [c["table"], c["name"], c["memory"]]
    c["kind"].change(show, [c["kind"]], outs, queue=False)

    def refresh(kind):
        studio.registry.refresh()
        return show(kind)

    c["refresh"].click(refresh, [c["kind"]], outs, queue=False)

    def load(name, kind, dtype, quantization, double_quant, t5):
        if not name:
            gr.Warning("Choose a model first")
            return *show(kind), ""
        options = {"dtype": dtype, "quantization": quantization, "double_quant": bool(double_quant), "t5": t5}
        try:
            if kind == "checkpoint":  # the A1111 switch: it also becomes the default checkpoint
                switch_checkpoint(studio, name, options)
                said = f"{name} loaded."
            else:
                job = studio.submit("load_model", {"kind": kind, "name": name, "options": options}).wait()
                job.raise_for_error()
                r = job.result
                said = (f"{name} loaded in {r['seconds'] or 0:.1f} s: {_size(r['footprint_bytes'])} in memory"
                        + (f" (was {_size(r['footprint_before'])})" if r["footprint_before"] else "") + ".")
        except AtelierError as exc:
            raise gr.Error(str(exc)) from None
        return *show(kind), said

    loaded = c["load"].click(load, [c["name"], c["kind"], c["dtype"], c["quantization"], c["double_quant"],
                                    c["t5"]], [*outs, c["status"]], concurrency_id="gpu")

    def unload(name, kind):
        if not studio.ready.is_set():
            gr.Warning(STARTING)
        elif not name:
            gr.Warning("Choose a model first")
        else:
            try:
                studio.models.unload(name, kind=kind)
            except AtelierError as exc:
                raise gr.Error(str(exc)) from None
        return show(kind)

    unloaded = c["unload"].click(unload, [c["name"], c["kind"]], outs, concurrency_id="gpu")
    c["_checkpoint_events"] = [loaded, unloaded]  # the top bar's checkpoint box follows them (webui/ui/__init__.py)

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

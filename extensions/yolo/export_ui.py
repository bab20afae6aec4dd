"""The "YOLO export" tab: pick a trusted .pt of models/yolo, a format, FP16 or INT8 (with a calibration folder
under datasets/), and export — the same request, check and job as POST /ext/yolo/export."""
from __future__ import annotations

from pathlib import Path

from .trust import PICKLE_SUFFIXES

WAIT_S = 900.0


def export_tab(api, exporter, folder: Path):
    from pydantic import ValidationError

    from .export import NOT_HERE, WRITES, ExportRequest

    invalid = api.types.InvalidRequest

    def pt_files() -> list[str]:
        if not folder.is_dir():
            return []
        return sorted(p.name for p in folder.iterdir() if p.suffix.lower() in PICKLE_SUFFIXES)

    def run_export(model, fmt, precision, data, imgsz, name) -> str:
        try:
            req = ExportRequest(model=model or "", format=fmt, half=precision == "FP16", int8=precision == "INT8",
                                data=(data or "").strip() or None, imgsz=int(imgsz), name=(name or "").strip() or None)
        except ValidationError as exc:
            err = invalid.from_validation(exc)
            return f"**Refused** (`{err.field}`): {err.message}"
        try:
            exporter.check(req)
        except invalid as err:
            return f"**Refused** (`{err.field}`): {err.message}"
        job = api.submit_job("yolo_export", req).wait(WAIT_S)
        if job.state != "done":
            return f"**Export {job.state}**: {job.error or 'still running; see GET /atelier/v1/jobs/' + job.id}"
        out = job.result
        return (f"Exported **{out['name']}** ({out['format']}, {out['precision']}, {out['imgsz']} px, "
                f"{out['size'] / 2**20:.1f} MiB) into models/yolo: pick it in the Vision tab's YOLO tasks.")

    def build():
        import gradio as gr

        gr.Markdown("Export a trusted `.pt` of `models/yolo` to ONNX (runs in ONNX Runtime: no pickled code, no "
                    "trust needed) or OpenVINO. INT8 calibrates on a folder of images under `datasets/`. Other "
                    f"formats ({', '.join(sorted(NOT_HERE))}) are not available on this machine "
                    "(`GET /ext/yolo/export/formats` says why).")
        with gr.Row():
            model = gr.Dropdown(pt_files(), label="Model (.pt)", elem_id="yolo_export_model", allow_custom_value=True)
            refresh = gr.Button("🔄", elem_id="yolo_export_refresh", scale=0)
            fmt = gr.Dropdown(list(WRITES), value="onnx", label="Format", elem_id="yolo_export_format")
            precision = gr.Radio(["FP32", "FP16", "INT8"], value="FP32", label="Precision",
                                 elem_id="yolo_export_precision")
        with gr.Row():
            data = gr.Textbox(label="INT8 calibration folder (under datasets/)", elem_id="yolo_export_data")
            imgsz = gr.Number(640, label="Image size", precision=0, minimum=32, maximum=4096, step=32,
                              elem_id="yolo_export_imgsz")
            name = gr.Textbox(label="New name (optional, without suffix)", elem_id="yolo_export_name")
        go = gr.Button("Export", variant="primary", elem_id="yolo_export_go")
        status = gr.Markdown(elem_id="yolo_export_status")
        refresh.click(lambda: gr.update(choices=pt_files()), None, [model])
        go.click(run_export, [model, fmt, precision, data, imgsz, name], [status])
        return {"model": model, "format": fmt, "precision": precision, "data": data, "go": go, "status": status}

    return build

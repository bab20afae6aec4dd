"""The export worker: `model.export(...)` of ultralytics, in a child process under the extension's Python
(like worker.py, the studio never imports ultralytics). Loaded as a file: the standard library, PIL/yaml
and ultralytics only. The studio (export.py) checks the request, copies the trusted bytes of the .pt into
this worker's private folder and moves the exported file or folder into models/yolo afterwards.

Measured with ultralytics 8.4.190: `half`/`int8` are deprecated aliases of `quantize` (16 / 8); FP16 ONNX
export works on the CPU (onnxruntime's float16 conversion, inputs kept float32), INT8 ONNX is ONNX Runtime's
static quantization over a calibration dataset (`data`: a dataset YAML), OpenVINO FP16 is compress_to_fp16
and OpenVINO INT8 needs nncf.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

def _have(*modules: str) -> list[str]:
    """The modules of `modules` this Python lacks."""
    return [m for m in modules if importlib.util.find_spec(m) is None]


class YoloExporter:
    def backends(self) -> dict:
        """Which export formats this Python can write: {format: {"available", "why", "half", "int8"}}."""
        onnx_missing = _have("onnx", "onnxslim", "onnxruntime")
        ov_missing = _have("openvino")
        return {
            "onnx": {"available": not onnx_missing, "why": _missing(onnx_missing), "half": True, "int8": True},
            "openvino": {"available": not ov_missing, "why": _missing(ov_missing), "half": True,
                         "int8": not _have("nncf"), "int8_why": _missing(_have("nncf"))},
        }

    def export(self, path: str, format: str, imgsz: int, half: bool, int8: bool,
               calibration: list[str] | None = None) -> dict:
        """Export the .pt at `path` (in this worker's private folder); → {"path": the file or folder written
        beside it, "task"}. INT8: `calibration` is a list of image files, linked into a dataset of its own
        here (ultralytics writes its label cache beside the images: never into the user's folder)."""
        from ultralytics import YOLO

        model = YOLO(path)
        args = {"format": format, "imgsz": imgsz, "device": "cpu", "verbose": False}
        if half:
            args["quantize"] = 16
        if int8:
            args["quantize"] = 8
            args["data"] = _calibration_yaml(Path(path).parent / "calibration", calibration or [], model.names)
        written = model.export(**args)
        return {"path": str(written), "task": model.task}


def _missing(modules: list[str]) -> str:
    return f"{', '.join(modules)} not installed in the extension's Python" if modules else ""


def _calibration_yaml(folder: Path, images: list[str], names: dict) -> str:
    """A detection dataset of the calibration images (no labels: calibration reads only the pixels)."""
    import yaml

    shutil.rmtree(folder, ignore_errors=True)
    (folder / "images").mkdir(parents=True)
    for i, image in enumerate(images):
        os.symlink(image, folder / "images" / f"{i:05d}{Path(image).suffix.lower()}")
    data = {"path": str(folder), "train": "images", "val": "images", "names": {int(k): v for k, v in names.items()}}
    target = folder / "data.yaml"
    target.write_text(yaml.safe_dump(data), encoding="utf-8")
    return str(target)

"""Export a trusted YOLO .pt to ONNX or OpenVINO: the request, its one check (every refusal names its
field), and the job that runs ultralytics' export in a worker process (export_worker.py) and moves the
result into models/yolo under a name that overwrites nothing, where it is listed at once as a model of the
same kind. Runs in the studio's process; never imports ultralytics."""
from __future__ import annotations

import os
import re
import shutil
import tempfile
import threading
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from .trust import PICKLE_SUFFIXES, NotTrusted, sha256_of

JOB_KIND = "yolo_export"
WORKER = "export_worker.py:YoloExporter"
EXPORT_TIMEOUT_S = 900.0  # INT8 calibration of a big model on two busy cores
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
MAX_CALIBRATION_IMAGES = 1000
# What each format writes, as the studio names it in models/yolo (ultralytics' own suffixes).
WRITES = {"onnx": ".onnx", "openvino": "_openvino_model"}
# ultralytics' other formats, and why none is offered on this machine (its format names, as `yolo export` takes).
NOT_HERE = {
    "engine": "TensorRT needs an NVIDIA GPU and the tensorrt package",
    "coreml": "Core ML (coremltools) builds models for Apple devices",
    "torchscript": "TorchScript files are run by torch.jit, which Atelier does not load",
    "saved_model": "TensorFlow is not installed in the extension's Python",
    "pb": "TensorFlow is not installed in the extension's Python",
    "tflite": "TensorFlow Lite / LiteRT is not installed in the extension's Python",
    "litert": "TensorFlow Lite / LiteRT is not installed in the extension's Python",
    "edgetpu": "the Edge TPU compiler runs on Linux with a Coral device toolchain, not installed",
    "paddle": "PaddlePaddle is not installed in the extension's Python",
    "mnn": "MNN is not installed in the extension's Python",
    "ncnn": "NCNN is not installed in the extension's Python",
    "imx": "Sony IMX export needs its own toolchain, not installed",
    "rknn": "Rockchip RKNN needs its own toolchain, not installed",
    "executorch": "ExecuTorch is not installed in the extension's Python",
}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,100}$")


class ExportRequest(BaseModel):
    """POST /ext/yolo/export: one trusted .pt of models/yolo → an ONNX file or an OpenVINO folder beside it."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(..., description="a .pt file of models/yolo (trusted: see /ext/yolo/trust)")
    format: str = Field("onnx", description="onnx or openvino (GET /ext/yolo/export/formats lists every format)")
    half: bool = Field(False, description="FP16 weights")
    int8: bool = Field(False, description="INT8, calibrated on the images of `data`")
    data: str | None = Field(None, description="INT8 only: a folder of images under datasets/ to calibrate on")
    imgsz: int = Field(640, ge=32, le=4096, description="the input side the exported model takes (a multiple of 32)")
    name: str | None = Field(None, description="the new model's name without suffix (default: the .pt's name, "
                                               "numbered when taken); a taken name is refused")


class Exporter:
    """The export checks and job of one enabled extension (its folder, trust store and worker settings)."""

    def __init__(self, api, folder: Path, trust, worker_env: dict):
        self.api, self.folder, self.trust, self.worker_env = api, Path(folder), trust, dict(worker_env)
        self.invalid = api.types.InvalidRequest
        self._backends: dict | None = None  # what the extension's Python can write, asked once
        self._place = threading.Lock()  # picking a free name and renaming into it, one export at a time

    def backends(self) -> dict:
        if self._backends is None:
            worker = self.api.start_worker(WORKER, env=self.worker_env)
            try:
                self._backends = worker.call("backends", timeout_s=120.0)
            finally:
                worker.stop()
        return self._backends

    def formats(self) -> dict:
        """Every format ultralytics knows: available here (with FP16 / INT8 support) or why not."""
        out = {}
        for fmt, info in self.backends().items():
            out[fmt] = {"available": info["available"], "why": info["why"], "half": info["half"],
                        "int8": info["int8"], **({"int8_why": info["int8_why"]} if info.get("int8_why") else {})}
        for fmt, why in NOT_HERE.items():
            out[fmt] = {"available": False, "why": f"not available on this machine: {why}", "half": False,
                        "int8": False}
        return out

    # -- the one check ---------------------------------------------------------
    def check(self, req: ExportRequest) -> dict:
        """Refuse what cannot be done, naming the field; → {"source", "images", "target"} for the job."""
        invalid = self.invalid
        source = self.folder / req.model
        if req.model != source.name or req.model.startswith(".") or not source.is_file():
            raise invalid(f"{req.model!r} is not a file in models/{self.folder.name}", "model")
        if source.suffix.lower() not in PICKLE_SUFFIXES:
            raise invalid(f"{req.model} is an export already; export from the .pt it came from", "model")
        digest = sha256_of(source.read_bytes())
        if not self.trust.trusted(digest):
            raise invalid(str(NotTrusted(req.model, digest)), "model")
        formats = self.formats()
        info = formats.get(req.format)
        if info is None:
            raise invalid(f"unknown format {req.format!r}; formats: {', '.join(formats)}", "format")
        if not info["available"]:
            raise invalid(f"{req.format}: {info['why']}; available here: "
                          f"{', '.join(f for f, i in formats.items() if i['available'])}", "format")
        if req.half and req.int8:
            raise invalid("choose FP16 (half) or INT8 (int8), not both", "half")
        if req.half and not info["half"]:
            raise invalid(f"{req.format} export has no FP16 here", "half")
        if req.int8 and not info["int8"]:
            raise invalid(f"INT8 {req.format} export is not available here: {info.get('int8_why', '')}", "int8")
        if req.int8 and "-cls" in source.stem.lower():
            raise invalid("INT8 calibration here reads detection-style image folders; export a classify model "
                          "in FP32 or FP16", "int8")
        if req.imgsz % 32:
            raise invalid(f"{req.imgsz} is not a multiple of 32 (YOLO's largest stride)", "imgsz")
        images = self._calibration(req)
        return {"source": source, "images": images, "target": self._target(req, source)}

    def _calibration(self, req: ExportRequest) -> list[str]:
        if not req.int8:
            if req.data:
                raise self.invalid("data is read only for INT8 calibration: set int8 or leave it empty", "data")
            return []
        if not req.data:
            raise self.invalid("INT8 export calibrates on images: name a folder of images under datasets/", "data")
        root = self.api.datasets_dir
        folder = (root / req.data).resolve()
        if not folder.is_relative_to(root.resolve()) or not folder.is_dir():
            raise self.invalid(f"{req.data!r} is not a folder under datasets/", "data")
        images = sorted(str(p) for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
                        and not p.name.startswith("."))[:MAX_CALIBRATION_IMAGES]
        if not images:
            raise self.invalid(f"datasets/{req.data} holds no images ({', '.join(IMAGE_SUFFIXES)})", "data")
        return images

    def _target(self, req: ExportRequest, source: Path) -> Path:
        """The name the export will have: the one asked for (refused when taken) or the first free one."""
        writes = WRITES[req.format]
        if req.name is not None:
            if not _NAME.match(req.name) or req.name.endswith(tuple(WRITES.values())):
                raise self.invalid("use letters, digits, '-', '_' and '.', no suffix", "name")
            target = self.folder / f"{req.name}{writes}"
            if target.exists():
                raise self.invalid(f"models/{self.folder.name}/{target.name} exists; choose another name", "name")
            return target
        precision = "-fp16" if req.half else "-int8" if req.int8 else ""
        return free_name(self.folder, f"{source.stem}{precision}", writes)

    # -- the job ---------------------------------------------------------------
    def run(self, ctx, req: ExportRequest) -> dict:
        plan = self.check(req)  # again: the file, its trust or the folder may have changed while it waited
        ctx.progress(0, 3, f"exporting {req.model} to {req.format}")
        worker = self.api.start_worker(WORKER, env=self.worker_env)
        try:
            copy = Path(worker.private_dir) / f"{plan['source'].stem}.pt"  # the very bytes that were trusted
            data = plan["source"].read_bytes()
            if not self.trust.trusted(sha256_of(data)):
                raise self.invalid(str(NotTrusted(req.model, sha256_of(data))), "model")
            copy.write_bytes(data)
            ctx.progress(1, 3, "ultralytics export")
            out = worker.call("export", timeout_s=EXPORT_TIMEOUT_S, path=str(copy), format=req.format,
                              imgsz=req.imgsz, half=req.half, int8=req.int8, calibration=plan["images"])
            ctx.progress(2, 3, "moving it into models/yolo")
            target = self._move_in(Path(out["path"]), req, plan)
        finally:
            worker.stop()
        self.api.refresh_models("yolo")
        ctx.progress(3, 3, f"{target.name} is ready")
        precision = "fp16" if req.half else "int8" if req.int8 else "fp32"
        return {"name": target.name, "path": str(target), "format": req.format, "precision": precision,
                "imgsz": req.imgsz, "source": req.model, "task": out["task"],
                "size": _size(target)}

    def _move_in(self, written: Path, req: ExportRequest, plan: dict) -> Path:
        """Copy into a hidden temporary beside the target (the registry skips dot names), then rename it into
        a name that is still free: a reader sees no half file, and nothing there is overwritten."""
        with self._place:
            target = plan["target"]
            if target.exists():
                if req.name is not None:
                    raise self.invalid(f"models/{self.folder.name}/{target.name} appeared meanwhile", "name")
                target = free_name(self.folder, target.name.removesuffix(WRITES[req.format]), WRITES[req.format])
            temp = Path(tempfile.mkdtemp(dir=self.folder, prefix=f".{target.name}.", suffix=".export"))
            try:
                if written.is_dir():  # OpenVINO: model.xml + model.bin + metadata.yaml
                    shutil.copytree(written, temp, dirs_exist_ok=True)
                else:
                    temp.rmdir()
                    shutil.copyfile(written, temp)
                    with open(temp, "rb") as f:
                        os.fsync(f.fileno())
                os.rename(temp, target)  # the lock keeps the name free between the check and here
            except BaseException:
                shutil.rmtree(temp, ignore_errors=True) if temp.is_dir() else temp.unlink(missing_ok=True)
                raise
        return target


def free_name(folder: Path, stem: str, suffix: str) -> Path:
    """stem+suffix, or stem-2+suffix, stem-3+suffix, … : the first that is not taken."""
    n = 1
    while True:
        target = folder / f"{stem}{'' if n == 1 else f'-{n}'}{suffix}"
        if not target.exists():
            return target
        n += 1


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size


def register(api, folder: Path, trust, worker_env: dict) -> Exporter:
    """The export job kind, its REST routes under /ext/yolo and its tab."""
    from .export_ui import export_tab

    exporter = Exporter(api, folder, trust, worker_env)
    api.register_job_kind(JOB_KIND, exporter.run)
    api.add_route("/export/formats", exporter.formats, ("GET",))

    def export(body: ExportRequest) -> dict:
        """Checked now (a 422 naming the field), then queued: → {"id", "state"}; GET /atelier/v1/jobs/{id}
        follows it and its result names the new model."""
        exporter.check(body)
        job = api.submit_job(JOB_KIND, body)
        return {"id": job.id, "state": job.state}

    api.add_route("/export", export, ("POST",))
    api.add_tab("YOLO export", export_tab(api, exporter, folder), order=560)
    return exporter


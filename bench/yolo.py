"""Figure: YOLO on this CPU, images/s of ONNX Runtime (an ONNX export) vs PyTorch (the .pt it came from):
the same random-weight yolov8n, the same image and image size, both in the extension's worker class, timed
alternately in one process of the YOLO extension's own Python (bench/yolo_backends.py). Needs that
environment built (enable the extension with its requirements, or run tests/unit/test_yolo_extension.py,
which builds it into .cache/extension-envs)."""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import tempfile
from pathlib import Path

from bench.common import Figure

REPO = Path(__file__).resolve().parents[1]
TITLE = "YOLOv8n detect: ONNX Runtime vs PyTorch on the CPU (images/s ratio, same model and size)"
KEY = "yolo_onnxruntime_vs_pytorch"


def environment_python() -> Path | None:
    from modules.extensions.environment import ExtensionEnvironment

    env = ExtensionEnvironment(REPO / ".cache" / "extension-envs" / "yolo", REPO / "extensions" / "yolo" /
                               "environment.txt")
    return env.python if env.ready() else None


def run(device: str, quick: bool, log) -> list[Figure]:
    python = environment_python()
    if python is None:
        return [Figure.missing(KEY, TITLE, "the YOLO extension's environment is not built in .cache/extension-envs")]
    if device != "cpu":
        return [Figure.missing(KEY, TITLE, "measured on the CPU only (ONNX Runtime's CPU provider is installed)")]
    imgsz, reps, images = (320, 5, 4) if quick else (640, 12, 8)
    log(f"  yolo: yolov8n at {imgsz} px, {reps} x {images} images per backend, alternating …")
    with tempfile.TemporaryDirectory() as folder:
        env = {**os.environ, "YOLO_OFFLINE": "1", "YOLO_AUTOINSTALL": "False", "YOLO_CONFIG_DIR": folder}
        env.pop("PYTHONPATH", None)
        done = subprocess.run([str(python), str(REPO / "bench" / "yolo_backends.py"), folder, str(imgsz), str(reps),
                               str(images)], capture_output=True, text=True, timeout=1200, cwd=folder, env=env)
    if done.returncode != 0:
        return [Figure.missing(KEY, TITLE, done.stderr.strip()[-400:])]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    per_s = lambda seconds: [out["images_per_sample"] / s for s in seconds]
    torch_rate, ort_rate = per_s(out["torch_s"]), per_s(out["ort_s"])
    spread = lambda xs: {"median": round(statistics.median(xs), 2), "min": round(min(xs), 2),
                         "max": round(max(xs), 2)}
    speed = [o / t for o, t in zip(ort_rate, torch_rate)]  # ONNX Runtime images/s over PyTorch's, pair by pair
    return [Figure.from_samples(KEY, TITLE, speed, target="reported (no target): > 1 = ONNX Runtime faster",
                                pytorch_images_per_s=spread(torch_rate), onnxruntime_images_per_s=spread(ort_rate),
                                imgsz=out["imgsz"], images_per_sample=out["images_per_sample"],
                                versions=out["versions"])]

"""Run by bench/yolo.py under the YOLO extension's own Python (never the studio's: ultralytics needs its
torch): a random-weight yolov8n .pt and its ONNX export, both loaded by the extension's own worker class
(extensions/yolo/worker.py, the code the studio runs) and timed side by side on one generated image.
`python bench/yolo_backends.py FOLDER IMGSZ REPS IMAGES` → JSON on stdout."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.common import side_by_side  # noqa: E402 (the repository on the path first)


def main(folder: str, imgsz: int, reps: int, images: int) -> dict:
    from PIL import Image, ImageDraw
    from ultralytics import YOLO

    work = Path(folder)
    pt = work / "bench-yolov8n.pt"
    YOLO("yolov8n.yaml").save(str(pt))  # random weights, no download
    onnx = Path(YOLO(str(pt)).export(format="onnx", imgsz=imgsz, device="cpu", verbose=False))
    spec = importlib.util.spec_from_file_location("yolo_worker", REPO / "extensions" / "yolo" / "worker.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    torch_side, ort_side = module.YoloWorker(), module.YoloWorker()
    torch_side.load(str(pt), pt.name, "cpu")
    ort_side.load(str(onnx), onnx.name, "cpu")
    picture = Image.new("RGB", (imgsz, imgsz), (90, 140, 200))  # square: the same letterboxed input on both sides
    ImageDraw.Draw(picture).ellipse([imgsz // 5, imgsz // 6, imgsz * 4 // 5, imgsz * 3 // 4], fill=(240, 200, 40))
    raw = work / "image.rgb"
    raw.write_bytes(picture.tobytes())
    options = {"conf": 0.25, "iou": 0.7, "imgsz": imgsz, "max_det": 300}

    def run(worker):
        return lambda: [worker.predict(str(raw), imgsz, imgsz, options) for _ in range(images)]

    torch_s, ort_s = side_by_side(run(torch_side), run(ort_side), reps)
    import onnxruntime
    import torch

    return {"torch_s": torch_s, "ort_s": ort_s, "images_per_sample": images, "imgsz": imgsz,
            "versions": {"torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
                         "torch_threads": torch.get_num_threads()}}


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))))

"""YOLO: ultralytics detect / segment / pose / classify as Atelier vision tasks.

Models live in models/yolo (kind "yolo", loaded by the model manager within the one memory budget):
.pt files only after the user trusts their sha256 (they are pickles: see trust.py), .onnx files
freely. Each task answers the vision JSON shape, so the Vision tab, REST and downstream tools read YOLO
the way they read PaliGemma, and the overlay is Atelier's (keypoints drawn for pose).
"""
import os

from pydantic import BaseModel, Field

from . import compat
from .adapter import TASK_NAMES, YoloAdapter
from .convert import to_vision
from .trust import TrustStore

DEFAULTS = {"conf": 0.25, "iou": 0.7, "imgsz": 640, "max_det": 300}


class TrustBody(BaseModel):
    name: str = Field(..., description="the file's name in models/yolo")
    sha256: str = Field(..., min_length=64, max_length=64, description="the hash you checked")


def setup(api):
    why = compat.problem()
    if why:
        raise RuntimeError(why)
    # Ultralytics writes a settings file and, unless offline, tries to pip-install missing extras at run time.
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_CONFIG_DIR", str(api.data_dir / "ultralytics"))
    invalid = api.types.InvalidRequest
    trust = TrustStore(api.data_dir / "trusted.json")
    folder = api.add_model_kind("yolo", "yolo", adapter=YoloAdapter(trust, api.data_dir / "loading", api.types))

    def task_runner(task: str):
        def run(image, options: dict):
            opts = {**DEFAULTS, **{k: v for k, v in options.items() if k in DEFAULTS and v is not None}}
            with api.use_model("yolo", options.get("model")) as model:
                if model.task != task:
                    raise invalid(f"{options.get('model')} is a YOLO {model.task} model; run it with "
                                  f"yolo-{model.task}", "task")
                weights = getattr(model.model, "parameters", None)  # ONNX exports have none: ONNX Runtime, CPU
                device = str(next(weights()).device) if callable(weights) else "cpu"
                results = model.predict(image.convert("RGB"), verbose=False, device=device, **opts)
            return to_vision(results[0], task)
        return run

    for task in TASK_NAMES:
        api.add_vision_task(f"yolo-{task}", task_runner(task), title=f"YOLO {task}", model_kind="yolo",
                            description=f"Ultralytics YOLO {task} (models/yolo)", options=dict(DEFAULTS))

    @api.get("/trust")
    def trusted() -> dict:
        """The trusted .pt hashes, and the .pt files in models/yolo with theirs."""
        from .trust import PICKLE_SUFFIXES, sha256_of

        files = [{"name": p.name, "sha256": sha256_of(p.read_bytes()),
                  "trusted": trust.trusted(sha256_of(p.read_bytes()))}
                 for p in sorted(folder.iterdir()) if p.suffix.lower() in PICKLE_SUFFIXES]
        return {"trusted": trust.listing(), "files": files}

    @api.post("/trust")
    def trust_file(body: TrustBody) -> dict:
        """Trust one .pt file whose sha256 you checked; it then loads."""
        path = folder / body.name
        if body.name != path.name or body.name.startswith(".") or not path.is_file():
            raise invalid(f"{body.name!r} is not a file in models/{folder.name}", "name")
        try:
            return trust.trust(body.name, body.sha256, path.read_bytes())
        except ValueError as exc:
            raise invalid(str(exc), "sha256") from None

"""YOLO: ultralytics detect / segment / pose / classify as Atelier vision tasks.

Models live in models/yolo (kind "yolo", loaded by the model manager within the one memory budget):
.pt files only after the user trusts their sha256 (they are pickles: see trust.py), .onnx files
freely. Each loaded model runs in a worker process of its own (adapter.py, worker.py), under the
Python the studio chose for this extension: its own when its torch can run ultralytics, else the
environment extension.toml declares (environment.txt, built on enable). Each task answers the vision
JSON shape, so the Vision tab, REST and downstream tools read YOLO the way they read PaliGemma, and
the overlay is Atelier's (keypoints drawn for pose).
"""
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .adapter import TASK_NAMES, YoloAdapter
from .convert import to_vision
from .export import register as register_export
from .track import add_tracking
from .train_kind import register_training
from .trust import PICKLE_SUFFIXES, TrustStore, sha256_of


class PredictOptions(BaseModel):
    """The request's "options" for a YOLO task (ultralytics' predict arguments of the same names)."""

    model_config = ConfigDict(extra="forbid")

    conf: float = Field(0.25, ge=0.0, le=1.0, description="the lowest confidence kept")
    iou: float = Field(0.7, ge=0.0, le=1.0, description="the IoU above which non-maximum suppression merges boxes")
    imgsz: int = Field(640, ge=32, le=4096, description="the side the image is resized to (a multiple of 32)")
    max_det: int = Field(300, ge=1, le=3000, description="the most objects kept per image")


DEFAULTS = PredictOptions().model_dump()
# What the vision engine adds to every task's options; of these, YOLO reads only "model".
ENGINE_KEYS = ("model", "objects", "prompt", "question", "language", "max_new_tokens")


class TrustBody(BaseModel):
    name: str = Field(..., description="the file's name in models/yolo")
    sha256: str = Field(..., min_length=64, max_length=64, description="the hash you checked")


def setup(api):
    invalid = api.types.InvalidRequest
    # Ultralytics writes a settings file and, unless offline, tries to pip-install missing extras at run time.
    worker_env = {"YOLO_OFFLINE": "1", "YOLO_AUTOINSTALL": "False",
                  "YOLO_CONFIG_DIR": str(api.data_dir / "ultralytics")}
    trust = TrustStore(api.data_dir / "trusted.json")
    folder = api.add_model_kind("yolo", "yolo", adapter=YoloAdapter(api, trust, worker_env))
    register_export(api, folder, trust, worker_env)  # export to ONNX / OpenVINO: job, REST, tab (export.py)
    register_training(api, trust, folder, worker_env)  # the Train tab's "yolo" kind (train_kind.py, train_main.py)

    def parse_options(cls: type[BaseModel], options: dict) -> BaseModel:
        """A task's "options" → its typed options (the engine's keys left out); refusals name options.<field>."""
        for key in ("objects", "prompt", "question", "max_new_tokens"):  # accepted must mean used
            if options.get(key):
                raise invalid("YOLO finds the classes its model was trained on and reads no text; leave it empty",
                              key)
        try:
            return cls(**{k: v for k, v in options.items() if k not in ENGINE_KEYS})
        except ValidationError as exc:
            err = invalid.from_validation(exc)
            err.field = f"options.{err.field}"
            raise err from None

    def predict_options(options: dict) -> dict:
        return parse_options(PredictOptions, options).model_dump()

    def task_runner(task: str):
        def run(image, options: dict):
            opts = predict_options(options)
            with api.use_model("yolo", options.get("model")) as model:
                if model.task != task:
                    raise invalid(f"{options.get('model')} is a YOLO {model.task} model; run it with "
                                  f"yolo-{model.task}", "task")
                wire = model.predict(image, opts)
            return to_vision(wire)
        return run

    for task in TASK_NAMES:
        api.add_vision_task(f"yolo-{task}", task_runner(task), title=f"YOLO {task}", model_kind="yolo",
                            description=f"Ultralytics YOLO {task} (models/yolo)", options=dict(DEFAULTS),
                            check=predict_options)
    add_tracking(api, parse_options)  # yolo-track: ultralytics' trackers, a video's frames (track.py)

    @api.get("/trust")
    def trusted() -> dict:
        """The trusted .pt hashes, and the .pt files in models/yolo with theirs."""
        files = []
        for p in sorted(folder.iterdir()):
            if p.suffix.lower() in PICKLE_SUFFIXES:
                digest = sha256_of(p.read_bytes())
                files.append({"name": p.name, "sha256": digest, "trusted": trust.trusted(digest)})
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

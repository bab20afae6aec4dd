"""YOLO training as a training kind of the Train tab (api.add_training_kind): a YOLO-format dataset folder in
the data dir (data.yaml, images/, labels/), checked in the server at submit with errors naming the field; the
training itself runs in a child process with this extension's interpreter (train_main.py, ultralytics'
trainer), its per-epoch losses, precision, recall and mAP streamed into the tab's plots. The best weights land
in models/yolo as <output_name>.pt, trusted (the studio made them), so the Vision tab runs them at once.

No ultralytics here (it never runs in the studio's process): data.yaml is read with PyYAML, the images' sizes
with PIL, the label files as text.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field, model_validator

from .trust import PICKLE_SUFFIXES, sha256_of
from .worker import task_from_name

# ultralytics' architecture configs (cfg/models), a scale letter picking the size: random weights, no download.
ARCH_NAME = re.compile(r"^yolo(v[3-9]|v1[0-2]|1[1-2])[nslmx]?\.yaml$")
ARCHITECTURES = tuple(f"{family}{scale}.yaml" for family in ("yolov8", "yolo11") for scale in "nsmlx")  # the picker's
IMAGE_SUFFIXES = (".bmp", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp")  # ultralytics' IMG_FORMATS, the common ones
PLOTS = (("losses", ("box_loss", "cls_loss", "dfl_loss")), ("validation", ("precision", "recall", "mAP50", "mAP50-95")))
LAYOUT = {"Basics": ("imgsz",), "Optimizer": ("optimizer", "lr0"), "Options": ("workers",)}
_SHOWN_ERRORS = 3  # bad label lines named in one refusal


def request_model(types) -> type:
    """The kind's request, built on api.types.TrainingRequest (extensions do not import the studio's modules)."""
    invalid = types.InvalidRequest

    class YoloTrainRequest(types.TrainingRequest):
        """YOLO detection training (ultralytics): a YOLO-format dataset folder, best weights into models/yolo."""

        kind: Literal["yolo"] = "yolo"
        OUTPUT_KIND: ClassVar[str] = "yolo"
        BASE_MODEL_KIND: ClassVar[str] = "yolo"
        BASE_MODEL_CHOICES: ClassVar[tuple[str, ...]] = ARCHITECTURES
        base_model: str = Field("yolov8n.yaml", min_length=1, max_length=400,
                                description="a trusted .pt of models/yolo to fine-tune, or an architecture such as "
                                            "yolov8n.yaml / yolo11s.yaml (random weights)")
        dataset: str = Field(..., min_length=1, max_length=1024,
                             description="a YOLO-format folder in the data dir: data.yaml (train, val, names), "
                                         "images/, labels/ (a .txt per image: class cx cy w h, 0-1)")
        batch_size: int = Field(16, ge=1, le=256, description="images per batch (ultralytics' batch)")
        imgsz: int = Field(640, ge=32, le=4096, multiple_of=32, description="the side images are resized to")
        optimizer: Literal["auto", "SGD", "AdamW", "Adam", "MuSGD"] = Field(
            "auto", description="auto: ultralytics picks the optimizer and its learning rate from the run's length")
        lr0: float | None = Field(None, gt=0, le=1, allow_inf_nan=False,
                                  description="the initial learning rate, with an optimizer other than auto "
                                              "(None: ultralytics' 0.01)")
        workers: int = Field(2, ge=0, le=32, description="data-loading worker processes (0: in the training process)")

        @model_validator(mode="after")
        def _fields_that_act(self):  # accepted must mean acted on
            if self.resume:  # ultralytics' own resume is not wired to the studio's run folder
                raise invalid("YOLO training does not resume a run; start a new one (overwrite replaces it)", "resume")
            if self.lr0 is not None and self.optimizer == "auto":  # ultralytics would ignore it
                raise invalid("optimizer auto chooses its own learning rate; pick an optimizer (SGD, AdamW, …) "
                              "to set lr0, or leave lr0 empty", "lr0")
            return self

    return YoloTrainRequest


class DatasetCheck:
    """data.yaml, images/ and labels/ of one YOLO-format folder; each refusal an InvalidRequest naming the field."""

    def __init__(self, invalid: type):
        self.invalid = invalid

    def folder(self, name: str, data_root: Path) -> Path:
        root = data_root.resolve()
        folder = (root / name).resolve()
        if not folder.is_relative_to(root):  # an absolute path or ../ leaving the data dir
            raise self.invalid(f"{name!r} is outside the data dir {root}; put the dataset inside it "
                               "(e.g. datasets/<name>/)", "dataset")
        if not folder.is_dir():
            raise self.invalid(f"no folder {name!r} in the data dir {root}", "dataset")
        for part in ("images", "labels"):
            if not (folder / part).is_dir():
                raise self.invalid(f"{name!r} has no {part}/ folder: a YOLO dataset holds data.yaml, images/ and "
                                   "labels/ (a .txt per image)", "dataset")
        return folder

    def data_yaml(self, folder: Path, name: str) -> dict:
        import yaml

        file = folder / "data.yaml"
        try:
            data = yaml.safe_load(file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise self.invalid(f"{name!r} has no data.yaml (train: images/train, val: images/val, names: [...])",
                               "dataset") from None
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            raise self.invalid(f"{name}/data.yaml cannot be read: {exc}", "dataset") from None
        if not isinstance(data, dict):
            raise self.invalid(f"{name}/data.yaml must be a mapping with train, val and names", "dataset")
        names = data.get("names")
        if isinstance(names, dict) and sorted(names) == list(range(len(names))):
            names = [names[i] for i in range(len(names))]
        if not isinstance(names, list) or not names or not all(isinstance(n, str) and n for n in names):
            raise self.invalid(f"{name}/data.yaml: names must list the class names (or map 0, 1, … to them)",
                               "dataset")
        if "nc" in data and data["nc"] != len(names):
            raise self.invalid(f"{name}/data.yaml: nc is {data['nc']!r} but names lists {len(names)} classes",
                               "dataset")
        if data.get("path") not in (None, "", "."):  # the studio points ultralytics at this folder itself
            raise self.invalid(f"{name}/data.yaml: leave out path (train and val are read relative to the "
                               "dataset folder)", "dataset")
        return {"names": names, **{split: self.split(folder, name, data.get(split), split) for split in ("train", "val")}}

    def split(self, folder: Path, name: str, value, split: str) -> str:
        if not isinstance(value, str) or not value.strip():
            raise self.invalid(f"{name}/data.yaml: {split} must name a folder of images (e.g. images/{split})",
                               "dataset")
        target = (folder / value).resolve()
        if not target.is_relative_to((folder / "images").resolve()) or not target.is_dir():
            raise self.invalid(f"{name}/data.yaml: {split} {value!r} is not a folder inside {name}/images/",
                               "dataset")
        return str(target)

    def images(self, folder: Path, split_dir: Path, nc: int, name: str) -> tuple[list, list]:
        """(path, width, height) of each readable image of a split, and (path, why) of those skipped; its label
        files (labels/ mirrors images/; none: an image without objects) checked line by line."""
        from PIL import Image, UnidentifiedImageError

        found, skipped, errors = [], [], []
        for path in sorted(p for p in split_dir.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES):
            rel = path.relative_to(folder).as_posix()
            try:
                with Image.open(path) as image:
                    width, height = image.size
            except (OSError, UnidentifiedImageError) as exc:
                skipped.append((rel, f"not a readable image ({exc})"))
                continue
            label = folder / "labels" / path.relative_to(folder / "images").with_suffix(".txt")
            errors += self.label_errors(label, nc, folder)
            found.append((rel, width, height))
        if errors:
            more = f" (and {len(errors) - _SHOWN_ERRORS} more)" if len(errors) > _SHOWN_ERRORS else ""
            raise self.invalid(f"{name}: bad label lines: {'; '.join(errors[:_SHOWN_ERRORS])}{more}. A line is "
                               f"'class cx cy w h': a class 0-{nc - 1}, the box's centre and size as 0-1 fractions",
                               "dataset")
        return found, skipped

    @staticmethod
    def label_errors(label: Path, nc: int, folder: Path) -> list[str]:
        if not label.is_file():
            return []
        errors = []
        for number, line in enumerate(label.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            parts = line.split()
            if not parts:
                continue
            where = f"{label.relative_to(folder).as_posix()}:{number}"
            try:
                cls, coords = float(parts[0]), [float(v) for v in parts[1:]]
            except ValueError:
                errors.append(f"{where} is not numbers")
                continue
            if len(coords) != 4:
                errors.append(f"{where} has {len(parts)} values, not 5")
            elif not cls.is_integer() or not 0 <= cls < nc:
                errors.append(f"{where} has class {parts[0]} (data.yaml names {nc})")
            elif not all(0 <= v <= 1 for v in coords):
                errors.append(f"{where} has a box outside 0-1")
        return errors


def register_training(api, trust, folder: Path, env: dict) -> None:
    """The "yolo" training kind: its request, its check (here, at submit), its child (train_main.py)."""
    invalid = api.types.InvalidRequest
    request = request_model(api.types)
    dataset = DatasetCheck(invalid)

    def base_of(name: str) -> dict:
        if ARCH_NAME.match(name):
            return {"name": name}
        path = folder / name
        if name != path.name or name.startswith(".") or not path.is_file():
            raise invalid(f"{name!r} is neither a model file of models/{folder.name} nor an architecture such as "
                          "yolov8n.yaml", "base_model")
        if path.suffix.lower() not in PICKLE_SUFFIXES:
            raise invalid(f"{name} cannot be trained from: pick a .pt of models/{folder.name} (an ONNX export holds no "
                          "trainable model)", "base_model")
        if task_from_name(name) != "detect":
            raise invalid(f"{name} is a {task_from_name(name)} model; this kind trains detection", "base_model")
        digest = sha256_of(path.read_bytes())
        if not trust.trusted(digest):
            raise invalid(f"{name} is a pickle (.pt) that is not trusted yet (sha256 {digest}); trust it first "
                          f"(POST /ext/yolo/trust)", "base_model")
        return {"name": name, "path": str(path), "sha256": digest}

    def check(req, data_root: Path):
        base = base_of(req.base_model)
        root = dataset.folder(req.dataset, data_root)
        data = dataset.data_yaml(root, req.dataset)
        train, skipped = dataset.images(root, Path(data["train"]), len(data["names"]), req.dataset)
        val, val_skipped = dataset.images(root, Path(data["val"]), len(data["names"]), req.dataset)
        if not train or not val:
            split = "train" if not train else "val"
            raise invalid(f"{req.dataset}/data.yaml: the {split} folder holds no readable images", "dataset")
        return api.types.TrainingInputs(dataset_dir=root, images=train, output=folder / f"{req.output_name}.pt",
                                        base=base, skipped=skipped + val_skipped,
                                        extra={"data": data, "val_images": len(val)})

    def finish(result: dict) -> None:
        """The weights the studio made are trusted as they are (their exact bytes), so they load at once."""
        output = result.get("output")
        if output and Path(output).is_file():
            data = Path(output).read_bytes()
            trust.trust(Path(output).name, sha256_of(data), data)

    api.add_training_kind("yolo", request, check, "train_main.py:train", plots=PLOTS, layout=LAYOUT, finish=finish,
                          env=env, stop_grace_s=300)

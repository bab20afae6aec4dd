"""The shipped YOLO extension (extensions/yolo): off until enabled; enabling it without a working
ultralytics refuses with a message saying why and what to install; its code paths that need no
ultralytics (trust on first use of .pt files, the Results → JSON conversion, the overlay with
keypoints, the torch/torchvision check); and, where ultralytics runs beside this torch, the real thing
end to end on models built from ultralytics' own yolov8n*.yaml (random weights, no download)."""
from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from modules.errors import AtelierError

YOLO_DIR = Path(__file__).resolve().parents[2] / "extensions" / "yolo"
PACKAGE = "yolo_extension_under_test"


def part(name: str):
    """One module of the extension, imported as a package of its own (as the loader does)."""
    if PACKAGE not in sys.modules:
        spec = importlib.machinery.ModuleSpec(PACKAGE, None, is_package=True)
        pkg = importlib.util.module_from_spec(spec)
        pkg.__path__ = [str(YOLO_DIR)]
        sys.modules[PACKAGE] = pkg
    return importlib.import_module(f"{PACKAGE}.{name}")


def ultralytics_runs() -> bool:
    return importlib.util.find_spec("ultralytics") is not None and part("compat").problem() is None


# -- what needs no ultralytics ---------------------------------------------------------------

def test_trust_on_first_use_by_sha256(tmp_path):
    trust = part("trust")
    store = trust.TrustStore(tmp_path / "trusted.json")
    data = b"\x80\x04 pretend pickle"
    digest = trust.sha256_of(data)
    assert not store.trusted(digest)
    with pytest.raises(ValueError, match="not the"):
        store.trust("m.pt", "0" * 64, data)  # the hash the user confirmed must be this file's
    assert store.trust("m.pt", digest, data) == {"name": "m.pt", "sha256": digest}
    assert trust.TrustStore(tmp_path / "trusted.json").trusted(digest), "remembered in the data dir"
    assert not store.trusted(trust.sha256_of(data + b"changed")), "a changed file is a new, untrusted file"
    store.revoke(digest)
    assert not store.trusted(digest)


def test_an_untrusted_pt_is_refused_with_its_sha256_before_ultralytics_is_touched(tmp_path):
    from modules.devices import DeviceChoice
    from modules.extensions.api import _types
    from modules.models.adapters import AdapterContext
    from modules.models.quant import LoadOptions
    from modules.models.registry import ModelEntry

    trust, adapter = part("trust"), part("adapter")
    weights = tmp_path / "yolov8n.pt"
    weights.write_bytes(b"not really a model")
    yolo = adapter.YoloAdapter(trust.TrustStore(tmp_path / "trusted.json"), tmp_path / "work", _types())
    entry = ModelEntry(kind="yolo", name="yolov8n.pt", path=weights, format="pickle", size=18)
    actx = AdapterContext(None, None, DeviceChoice("cpu", "float32"))
    with pytest.raises(AtelierError) as err:
        yolo.load(actx, entry, LoadOptions())
    digest = trust.sha256_of(weights.read_bytes())
    assert err.value.field == "model" and digest in err.value.message and "/ext/yolo/trust" in err.value.message
    assert "ultralytics" not in sys.modules or ultralytics_runs()


def fake_results(task: str, w: int = 160, h: int = 120):
    boxes = SimpleNamespace(xyxy=np.array([[10.2, 20.0, 60.7, 80.0], [100.0, 10.0, 150.0, 50.0]]),
                            conf=np.array([0.91, 0.4]), cls=np.array([0, 2]))
    masks = SimpleNamespace(xy=[np.array([[10, 20], [60, 20], [60, 80], [10, 80]], float),
                                np.array([[100, 10], [150, 10], [125, 50]], float)])
    points = np.zeros((2, 17, 3))
    points[:, :, 0], points[:, :, 1], points[:, :, 2] = 30, 40, 0.9
    probs = SimpleNamespace(top5=[2, 0, 1], top5conf=np.array([0.7, 0.2, 0.1]))
    return SimpleNamespace(orig_shape=(h, w), names={0: "person", 1: "bicycle", 2: "car"}, boxes=boxes,
                           masks=masks if task == "segment" else None,
                           keypoints=SimpleNamespace(data=points) if task == "pose" else None,
                           probs=probs if task == "classify" else None)


def test_results_become_the_one_json_shape_with_masks_keypoints_and_classes():
    from modules.vision import overlay
    from modules.vision.results import from_extension

    to_vision = part("convert").to_vision
    det = to_vision(fake_results("detect"), "detect")
    assert det["text"] == "1 person, 1 car"
    assert [(o["label"], o["box"], round(o["score"], 2)) for o in det["objects"]] == [
        ("person", [10, 20, 61, 80], 0.91), ("car", [100, 10, 150, 50], 0.4)]
    seg = to_vision(fake_results("segment"), "segment")
    mask = seg["objects"][0]["mask"]
    assert mask.shape == (120, 160) and 45 * 55 <= mask.sum() <= 52 * 62 and not mask[:, 70:90].any()
    pose = to_vision(fake_results("pose"), "pose")
    assert len(pose["objects"][0]["keypoints"]) == 17 and pose["objects"][0]["keypoints"][0] == [30.0, 40.0, 0.9]
    cls = to_vision(fake_results("classify"), "classify")
    assert cls["text"] == "car" and cls["classes"][0] == {"label": "car", "score": 0.7} and cls["objects"] == []

    from PIL import Image

    image = Image.new("RGB", (160, 120), (0, 0, 0))
    for answer, task in ((det, "yolo-detect"), (seg, "yolo-segment"), (pose, "yolo-pose"), (cls, "yolo-classify")):
        result = from_extension(answer, model="yolov8n.pt", task=task, prompt="", width=160, height=120)
        out = result.to_json()
        assert {"model", "task", "prompt", "text", "width", "height", "objects", "invalid"} <= set(out)
        for obj in out["objects"]:
            assert len(obj["box_normalized"]) == 4 and obj["box"][2] > obj["box"][0]
            assert (obj["mask"] is None) == (task != "yolo-segment")
        assert overlay.draw(image, result.objects).size == (160, 120)
    drawn = overlay.draw(image, from_extension(pose, model="m", task="yolo-pose", prompt="", width=160,
                                               height=120).objects)
    assert drawn.getpixel((30, 40)) == (255, 255, 255), "pose keypoints are drawn"


def test_the_torch_torchvision_check_says_why_and_what_to_install():
    problem = part("compat").problem
    measured = {"torch": "2.13.0+cpu", "torchvision": "0.28.0"}  # PyPI's torchvision beside the +cpu torch
    why = problem(lambda n: measured[n], lambda n: ["torch (==2.13.0)"])
    assert "torchvision::nms" in why and "CPU-only" in why
    assert "pip install torchvision==0.28.0+cpu --index-url https://download.pytorch.org/whl/cpu" in why
    matched = {"torch": "2.14.1", "torchvision": "0.29.1"}
    assert problem(lambda n: matched[n], lambda n: ["torch (>=2.14.0)"]) is None
    behind = {"torch": "2.13.0", "torchvision": "0.29.1"}
    assert "needs torch ==2.14.1" in problem(lambda n: behind[n], lambda n: ["torch (==2.14.1)"])


def test_installing_an_extensions_requirements_keeps_the_studios_torch(tmp_path):
    from importlib.metadata import version

    from modules.extensions.manage import pip_install_command

    cmd = pip_install_command(["ultralytics==8.4.190"], tmp_path)
    constraints = Path(cmd[cmd.index("--constraint") + 1]).read_text()
    assert f"torch=={version('torch')}" in constraints.split()
    assert cmd[:4] == [sys.executable, "-m", "pip", "install"] and cmd[-1] == "ultralytics==8.4.190"


# -- in a studio ---------------------------------------------------------------------------------

def test_yolo_is_shipped_and_off_until_enabled(studio):
    info = studio.extensions.describe("yolo")
    assert info["source"] == "shipped" and info["status"] == "disabled" and info["enabled"] is False
    assert info["requirements"] == ["ultralytics==8.4.190"]
    assert "yolo-detect" not in [t.name for t in studio.vision_tasks.list()]
    with pytest.raises(AtelierError):
        studio.extensions.remove("yolo")


@pytest.mark.skipif(ultralytics_runs(), reason="ultralytics runs here: the end-to-end test below covers it")
def test_enabling_without_a_working_ultralytics_refuses_with_why_and_what_to_install(studio):
    info = studio.extensions.enable("yolo")
    assert info["status"] == "failed" and "yolo-detect" not in [t.name for t in studio.vision_tasks.list()]
    error = info["error"]
    if importlib.util.find_spec("ultralytics") is None:
        assert "ultralytics==8.4.190" in error and "not installed" in error
        assert "torchvision==0.28.0+cpu" in error and "CPU wheel index" in error  # the manifest's note: the catch
    else:
        assert "torchvision::nms" in error and "pip install torchvision==" in error
    assert "yolo" in studio.settings.get().extensions_enabled  # the choice is remembered for the next start
    assert studio.extensions.disable("yolo")["status"] == "disabled"
    assert "yolo" not in studio.settings.get().extensions_enabled


@pytest.mark.skipif(not ultralytics_runs(), reason="needs ultralytics with a torchvision built for this torch "
                                                   "(see extensions/yolo/README.md); refused above otherwise")
def test_yolo_runs_detect_segment_pose_classify_end_to_end(studio, tmp_path):
    from PIL import Image, ImageDraw

    from modules.vision.params import VisionRequest, parse_vision

    info = studio.extensions.enable("yolo")
    assert info["status"] == "enabled", info["error"]
    from ultralytics import YOLO

    folder = studio.paths.model_dir("yolo")
    for suffix in ("", "-seg", "-pose", "-cls"):
        YOLO(f"yolov8n{suffix}.yaml").save(str(folder / f"yolov8n{suffix}.pt"))  # random weights, no download
    studio.registry.refresh("yolo")
    image = Image.new("RGB", (320, 240), (90, 140, 200))
    ImageDraw.Draw(image).ellipse([80, 60, 240, 200], fill=(240, 200, 40))

    def run(task, model):
        req = parse_vision(VisionRequest, {"task": task, "model": model, "image": image,
                                           "options": {"conf": 0.0001, "max_det": 5, "imgsz": 320}})
        job = studio.jobs.run("vision", req, timeout=300)
        assert job.state.finished
        return job

    refused = run("yolo-detect", "yolov8n.pt")
    assert refused.state.value == "failed" and refused.error_field == "model" and "sha256" in refused.error
    trust_route = next(r for r in studio.extensions.routes.list("yolo") if r.path == "/trust" and "POST" in r.methods)
    body_cls = trust_route.endpoint.__annotations__["body"]
    body_cls = getattr(sys.modules[trust_route.endpoint.__module__], body_cls) if isinstance(body_cls, str) else body_cls
    sha = part("trust").sha256_of
    for suffix in ("", "-seg", "-pose", "-cls"):
        name = f"yolov8n{suffix}.pt"
        trust_route.endpoint(body_cls(name=name, sha256=sha((folder / name).read_bytes())))

    for task, model in (("yolo-detect", "yolov8n.pt"), ("yolo-segment", "yolov8n-seg.pt"),
                        ("yolo-pose", "yolov8n-pose.pt"), ("yolo-classify", "yolov8n-cls.pt")):
        job = run(task, model)
        job.raise_for_error()
        out = job.result.to_json()
        assert {"model", "task", "prompt", "text", "width", "height", "objects", "invalid"} <= set(out)
        assert (out["width"], out["height"]) == (320, 240) and out["model"] == model
        assert job.result.overlay.size == (320, 240)
        if task == "yolo-classify":
            assert len(out["classes"]) == 5
        else:
            assert 1 <= len(out["objects"]) <= 5, out["text"]
            for obj in out["objects"]:
                assert len(obj["box"]) == 4 and len(obj["box_normalized"]) == 4 and 0 <= obj["score"] <= 1
                assert (obj["mask"] is not None) == (task == "yolo-segment")
                assert (len(obj.get("keypoints", [])) == 17) == (task == "yolo-pose")
    wrong = run("yolo-pose", "yolov8n.pt")
    assert wrong.state.value == "failed" and wrong.error_field == "task" and "yolo-detect" in wrong.error
    assert any(m["kind"] == "yolo" and m["location"] != "disk" for m in studio.models.describe())


@pytest.mark.skipif(not ultralytics_runs() or importlib.util.find_spec("onnxruntime") is None,
                    reason="needs ultralytics (see above) and onnxruntime")
def test_an_onnx_export_runs_without_trust(studio):
    from PIL import Image

    from modules.vision.params import VisionRequest, parse_vision

    assert studio.extensions.enable("yolo")["status"] == "enabled"
    from ultralytics import YOLO

    folder = studio.paths.model_dir("yolo")
    YOLO("yolov8n.yaml").save(str(folder / "tiny.pt"))
    YOLO(str(folder / "tiny.pt")).export(format="onnx", imgsz=320)  # the test's own file: loaded directly
    (folder / "tiny.pt").unlink()
    studio.registry.refresh("yolo")
    assert [e.name for e in studio.registry.list("yolo")] == ["tiny.onnx"]
    req = parse_vision(VisionRequest, {"task": "yolo-detect", "model": "tiny.onnx", "image": Image.new("RGB", (200, 150)),
                                       "options": {"conf": 0.0001, "max_det": 3, "imgsz": 320}})
    job = studio.jobs.run("vision", req, timeout=300)
    assert job.state.finished
    job.raise_for_error()
    out = job.result.to_json()
    assert out["model"] == "tiny.onnx" and (out["width"], out["height"]) == (200, 150)
    assert job.result.overlay.size == (200, 150)

"""The shipped YOLO extension (extensions/yolo): off until enabled; where the studio's torch cannot run
ultralytics (this machine's CPU-only torch) enabling refuses until confirmed, then builds the extension's
own environment (environment.txt) and runs every model in a worker process under it — never ultralytics
in the studio's process; the code paths that need no ultralytics (trust on first use of .pt files, the
worker's answer → the one JSON shape, the overlay with keypoints, the torch/torchvision check); and the
real thing end to end on models built from ultralytics' own yolov8n*.yaml (random weights, no download),
a crashed worker started again and unloading stopping it.

The environment is built once per clone into .cache/extension-envs (git-ignored; ~6 GB, measured 57-283 s
from this machine's package index, idle to loaded) through the studio's own enable step, and reused after."""
from __future__ import annotations

import importlib
import importlib.machinery
import importlib.metadata
import importlib.util
import os
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import psutil
import pytest

from modules.errors import AtelierError
from tests.conftest import wait_until

REPO = Path(__file__).resolve().parents[2]
YOLO_DIR = REPO / "extensions" / "yolo"
ENVS = REPO / ".cache" / "extension-envs"  # shared by every test session of this clone; rebuilt when missing
PACKAGE = "yolo_extension_under_test"
BUILD_S = 1500  # building the environment on a clean clone (measured 57-283 s; pip may download ~3 GB)


def part(name: str):
    """One module of the extension, imported as a package of its own (as the loader does)."""
    if PACKAGE not in sys.modules:
        spec = importlib.machinery.ModuleSpec(PACKAGE, None, is_package=True)
        pkg = importlib.util.module_from_spec(spec)
        pkg.__path__ = [str(YOLO_DIR)]
        sys.modules[PACKAGE] = pkg
    return importlib.import_module(f"{PACKAGE}.{name}")


def studio_with_envs(data_dir: Path, envs: Path):
    from modules.studio import Studio, StudioOptions

    s = Studio(StudioOptions(data_dir=data_dir, device="cpu", extension_envs=envs))
    s.load()
    assert s.load_error is None, s.load_error
    return s


@pytest.fixture
def yolo_studio(data_dir):
    """A studio whose extension environments live in the clone's cache (built on the first enable)."""
    s = studio_with_envs(data_dir, ENVS)
    yield s
    s.shutdown()


def enable_yolo(studio) -> Path:
    """The install-on-enable step, confirmed (it builds the environment when the cache has none); → the
    Python YOLO's workers run."""
    info = studio.extensions.enable("yolo", confirm_requirements=True)
    assert info["status"] == "enabled", info["error"]
    return studio.extensions.get("yolo").api.python


def in_worker_python(python: Path, code: str, cwd: Path) -> None:
    """Run ultralytics where the workers do (the test itself must not import it either)."""
    env = {**os.environ, "YOLO_OFFLINE": "1", "YOLO_CONFIG_DIR": str(cwd / ".ultralytics")}
    done = subprocess.run([str(python), "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]


def worker_pid(studio, name: str) -> int:
    row = next(m for m in studio.models.describe() if m["kind"] == "yolo" and m["name"] == name)
    assert "worker pid" in row["location"], row
    return int(row["location"].rsplit(" ", 1)[1].rstrip(")"))


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


def test_an_untrusted_pt_is_refused_with_its_sha256_before_a_worker_starts(tmp_path):
    from modules.devices import DeviceChoice
    from modules.extensions.api import ExtensionAPIv1
    from modules.models.adapters import AdapterContext
    from modules.models.quant import LoadOptions
    from modules.models.registry import ModelEntry

    trust, adapter = part("trust"), part("adapter")
    weights = tmp_path / "yolov8n.pt"
    weights.write_bytes(b"not really a model")
    api = ExtensionAPIv1(None, "yolo", 100, YOLO_DIR, tmp_path / "data", lambda *a: None, python=Path("/nowhere"))
    yolo = adapter.YoloAdapter(api, trust.TrustStore(tmp_path / "trusted.json"), {})
    entry = ModelEntry(kind="yolo", name="yolov8n.pt", path=weights, format="pickle", size=18)
    actx = AdapterContext(None, None, DeviceChoice("cpu", "float32"))
    with pytest.raises(AtelierError) as err:
        yolo.load(actx, entry, LoadOptions())
    digest = trust.sha256_of(weights.read_bytes())
    # Refused before a worker starts: its Python (/nowhere) would have failed with "could not start" instead.
    assert err.value.field == "model" and digest in err.value.message and "/ext/yolo/trust" in err.value.message


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


def test_the_workers_answer_becomes_the_one_json_shape_with_masks_keypoints_and_classes():
    import json

    from modules.vision import overlay
    from modules.vision.results import from_extension

    to_wire, to_vision = part("worker").to_wire, part("convert").to_vision

    def answer(task):  # what crosses the wire is JSON: masks travel as polygons
        return to_vision(json.loads(json.dumps(to_wire(fake_results(task), task))))

    det = answer("detect")
    assert det["text"] == "1 person, 1 car"
    assert [(o["label"], o["box"], round(o["score"], 2)) for o in det["objects"]] == [
        ("person", [10, 20, 61, 80], 0.91), ("car", [100, 10, 150, 50], 0.4)]
    seg = answer("segment")
    mask = seg["objects"][0]["mask"]
    assert mask.shape == (120, 160) and 45 * 55 <= mask.sum() <= 52 * 62 and not mask[:, 70:90].any()
    pose = answer("pose")
    assert len(pose["objects"][0]["keypoints"]) == 17 and pose["objects"][0]["keypoints"][0] == [30.0, 40.0, 0.9]
    cls = answer("classify")
    assert cls["text"] == "car" and cls["classes"][0] == {"label": "car", "score": 0.7} and cls["objects"] == []

    from PIL import Image

    image = Image.new("RGB", (160, 120), (0, 0, 0))
    for value, task in ((det, "yolo-detect"), (seg, "yolo-segment"), (pose, "yolo-pose"), (cls, "yolo-classify")):
        result = from_extension(value, model="yolov8n.pt", task=task, prompt="", width=160, height=120)
        out = result.to_json()
        assert {"model", "task", "prompt", "text", "width", "height", "objects", "invalid"} <= set(out)
        for obj in out["objects"]:
            assert len(obj["box_normalized"]) == 4 and obj["box"][2] > obj["box"][0]
            assert (obj["mask"] is None) == (task != "yolo-segment")
        assert overlay.draw(image, result.objects).size == (160, 120)
    drawn = overlay.draw(image, from_extension(pose, model="m", task="yolo-pose", prompt="", width=160,
                                               height=120).objects)
    assert drawn.getpixel((30, 40)) == (255, 255, 255), "pose keypoints are drawn"


def test_the_torch_torchvision_check_says_why_and_what_would_let_the_studio_host_it():
    problem = part("compat").problem
    measured = {"torch": "2.13.0+cpu", "torchvision": "0.28.0"}  # PyPI's torchvision beside the +cpu torch
    why = problem(lambda n: measured[n], lambda n: ["torch (==2.13.0)"])
    assert "torchvision::nms" in why and "CPU-only" in why
    assert "pip install torchvision==0.28.0+cpu --index-url https://download.pytorch.org/whl/cpu" in why

    def without_torchvision(torch_version):
        def read(name):
            if name == "torchvision":
                raise importlib.metadata.PackageNotFoundError(name)
            return torch_version
        return problem(read, lambda n: [])

    assert "PyPI has no torchvision for it" in without_torchvision("2.13.0+cpu")  # this machine: its own environment
    assert without_torchvision("2.14.1") is None  # PyPI's torch: pip brings the matching torchvision
    matched = {"torch": "2.14.1", "torchvision": "0.29.1"}
    assert problem(lambda n: matched[n], lambda n: ["torch (>=2.14.0)"]) is None
    behind = {"torch": "2.13.0", "torchvision": "0.29.1"}
    assert "needs torch ==2.14.1" in problem(lambda n: behind[n], lambda n: ["torch (==2.14.1)"])


def test_the_environment_pins_ultralytics_with_pypis_torch_and_torchvision():
    from modules.extensions.environment import read_lock
    from modules.extensions.manifest import read_manifest

    manifest = read_manifest(YOLO_DIR)
    pins = read_lock(YOLO_DIR / manifest.environment)
    for pin in ("ultralytics==8.4.190", "torch==2.14.1", "torchvision==0.29.1", "onnxruntime==1.31.1", "lap==0.5.13"):
        assert pin in pins
    from importlib.metadata import version

    assert f"pydantic=={version('pydantic')}" in pins, "the worker's entry imports modules.jobs, which needs it"
    assert manifest.requirements == ("ultralytics==8.4.190", "lap==0.5.13") and manifest.environment_check == "compat:problem"


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
    assert info["requirements"] == ["ultralytics==8.4.190", "lap==0.5.13"]
    assert "yolo-detect" not in [t.name for t in studio.vision_tasks.list()]
    with pytest.raises(AtelierError):
        studio.extensions.remove("yolo")


@pytest.mark.skipif(part("compat").problem() is None, reason="the studio's torch runs ultralytics here: YOLO runs "
                                                              "in the studio's Python (end-to-end test below)")
def test_enabling_beside_this_torch_refuses_until_confirmed_saying_why_and_where(data_dir, tmp_path):
    studio = studio_with_envs(data_dir, tmp_path / "no-envs-yet")
    try:
        info = studio.extensions.enable("yolo")
        assert info["status"] == "failed" and "yolo-detect" not in [t.name for t in studio.vision_tasks.list()]
        error = info["error"]
        assert "environment of its own" in error and "PyPI has no torchvision" in error
        assert str(tmp_path / "no-envs-yet" / "yolo") in error and "confirm_requirements" in error
        assert "ultralytics 8.4.190" in error and "6 GB" in error  # the manifest's note: what and how much
        assert info["environment"]["ready"] is False and info["environment"]["lock"] == "environment.txt"
        assert "yolo" in studio.settings.get().extensions_enabled  # the choice is remembered for the next start
        assert studio.extensions.disable("yolo")["status"] == "disabled"
        assert not (tmp_path / "no-envs-yet").exists(), "nothing is built without confirmation"
    finally:
        studio.shutdown()


@pytest.mark.timeout(BUILD_S + 600)
def test_yolo_runs_detect_segment_pose_classify_end_to_end_in_workers(yolo_studio, tmp_path):
    from PIL import Image, ImageDraw

    from modules.vision.params import VisionRequest, parse_vision

    studio = yolo_studio
    python = enable_yolo(studio)
    folder = studio.paths.model_dir("yolo")
    in_worker_python(python, "from ultralytics import YOLO\nfor s in ('', '-seg', '-pose', '-cls'):\n"
                             f"    YOLO(f'yolov8n{{s}}.yaml').save(f'{folder}/yolov8n{{s}}.pt')", tmp_path)  # no download
    studio.registry.refresh("yolo")
    image = Image.new("RGB", (320, 240), (90, 140, 200))
    ImageDraw.Draw(image).ellipse([80, 60, 240, 200], fill=(240, 200, 40))

    def run(task, model, **options):
        req = parse_vision(VisionRequest, {"task": task, "model": model, "image": image,
                                           "options": {"conf": 0.0001, "max_det": 5, "imgsz": 320, **options}})
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
    assert "ultralytics" not in sys.modules and "torchvision" not in sys.modules, "never in the studio's process"

    wrong = run("yolo-pose", "yolov8n.pt")
    assert wrong.state.value == "failed" and wrong.error_field == "task" and "yolo-detect" in wrong.error
    for options, field in (({"conf": 2}, "options.conf"), ({"confidence": 0.5}, "options.confidence")):
        with pytest.raises(AtelierError) as refused:  # at submit, before the queue: the task's own check
            run("yolo-detect", "yolov8n.pt", **options)
        assert refused.value.field == field
    with pytest.raises(AtelierError) as refused:
        studio.jobs.run("vision", parse_vision(VisionRequest, {"task": "yolo-detect", "image": image,
                                                               "question": "how many?"}))
    assert refused.value.field == "question", "YOLO reads no text: accepted would mean ignored"

    # A worker that dies (a crash, the OOM killer) fails nothing later: the next job starts a new one.
    pid = worker_pid(studio, "yolov8n.pt")
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE, 30,
               "the killed worker to end")
    again = run("yolo-detect", "yolov8n.pt")
    again.raise_for_error()
    assert 1 <= len(again.result.objects) <= 5 and worker_pid(studio, "yolov8n.pt") != pid

    pids = [worker_pid(studio, f"yolov8n{s}.pt") for s in ("", "-seg", "-pose", "-cls")]
    assert all(psutil.pid_exists(p) for p in pids)
    studio.models.unload("yolov8n-seg.pt", kind="yolo")  # unloading a model stops its worker
    assert not psutil.pid_exists(pids[1]) and psutil.pid_exists(pids[0])
    studio.extensions.disable("yolo")  # and so does disabling the extension, for every model
    assert not any(psutil.pid_exists(p) for p in pids)


@pytest.mark.timeout(BUILD_S + 300)
def test_an_onnx_export_runs_without_trust(yolo_studio, tmp_path):
    from PIL import Image

    from modules.vision.params import VisionRequest, parse_vision

    python = enable_yolo(yolo_studio)
    folder = yolo_studio.paths.model_dir("yolo")
    # Exported beside the environment's ultralytics (its onnx + onnxslim), as a user would with `yolo export`.
    in_worker_python(python, f"from ultralytics import YOLO\nYOLO('yolov8n.yaml').save('tiny.pt')\n"
                             f"YOLO('tiny.pt').export(format='onnx', imgsz=320)\nimport shutil\n"
                             f"shutil.move('tiny.onnx', {str(folder / 'tiny.onnx')!r})", tmp_path)
    yolo_studio.registry.refresh("yolo")
    assert [e.name for e in yolo_studio.registry.list("yolo")] == ["tiny.onnx"]
    req = parse_vision(VisionRequest, {"task": "yolo-detect", "model": "tiny.onnx", "image": Image.new("RGB", (200, 150)),
                                       "options": {"conf": 0.0001, "max_det": 3, "imgsz": 320}})
    job = yolo_studio.jobs.run("vision", req, timeout=300)
    assert job.state.finished
    job.raise_for_error()
    out = job.result.to_json()
    assert out["model"] == "tiny.onnx" and (out["width"], out["height"]) == (200, 150)
    assert job.result.overlay.size == (200, 150)
    row = next(m for m in yolo_studio.models.describe() if m["name"] == "tiny.onnx")
    assert row["location"].startswith("cpu (worker pid"), "ONNX Runtime on the CPU, in a worker"
    pid = worker_pid(yolo_studio, "tiny.onnx")
    yolo_studio.shutdown()
    assert not psutil.pid_exists(pid), "the studio's shutdown ends its workers"

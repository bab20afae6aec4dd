"""The "yolo" model kind for Atelier's model manager: .pt (after trust) and .onnx files, counted in the one
memory budget like every other model. A loaded model is a worker process (worker.py) held by the manager's
slot: loading starts it, moving it to the RAM cache moves its weights inside it, unloading stops it, and a
worker that died (a crash, a kill) is started again on the next use. The studio never imports ultralytics."""
from __future__ import annotations

import logging
from pathlib import Path

from .trust import PICKLE_SUFFIXES, NotTrusted, TrustStore, sha256_of

TASK_NAMES = ("detect", "segment", "pose", "classify")
WORKER = "worker.py:YoloWorker"
LOAD_TIMEOUT_S = 300.0  # the first import of torch and ultralytics on a busy machine, then the weights
PREDICT_TIMEOUT_S = 300.0

log = logging.getLogger("atelier.ext.yolo")


class YoloModel:
    """The handle jobs get from `api.use_model("yolo", name)`: the model's task and its worker."""

    def __init__(self, worker, task: str, names: dict, device: str):
        self.worker, self.task, self.names, self.device = worker, task, names, device

    def predict(self, image, options: dict) -> dict:
        """One PIL image → the worker's answer (worker.to_wire). The pixels travel as a raw RGB file in the
        worker's private folder: no codec on either side, nothing on the wire but the path."""
        rgb = image.convert("RGB")
        path = Path(self.worker.private_dir) / "image.rgb"
        path.write_bytes(rgb.tobytes())
        try:
            return self.worker.call("predict", timeout_s=PREDICT_TIMEOUT_S, image_path=str(path), width=rgb.width,
                                    height=rgb.height, options=options)
        finally:
            path.unlink(missing_ok=True)

    def track(self, image, options: dict, tracker: dict, persist: bool) -> dict:
        """One video frame through the worker's tracker (track.py): `persist` False starts new tracks."""
        rgb = image.convert("RGB")
        path = Path(self.worker.private_dir) / "frame.rgb"
        path.write_bytes(rgb.tobytes())
        try:
            return self.worker.call("track", timeout_s=PREDICT_TIMEOUT_S, image_path=str(path), width=rgb.width,
                                    height=rgb.height, options=options, tracker=tracker, persist=persist)
        finally:
            path.unlink(missing_ok=True)


class YoloAdapter:
    """ModelAdapter (modules/models/adapters.py) for ultralytics YOLO files in models/yolo."""

    def __init__(self, api, trust: TrustStore, worker_env: dict):
        self.api, self.trust, self.worker_env = api, trust, dict(worker_env)
        self.invalid, self.loaded_record = api.types.InvalidRequest, api.types.Loaded

    def residency(self, settings) -> dict:
        return {}

    def load(self, actx, entry, options):
        handle, footprint, digest = self._start(entry, actx.device.name)
        exported = Path(entry.path).suffix.lower() == ".onnx" or entry.format == "openvino"
        return self.loaded_record(kind=entry.kind, entry=entry, options=options, handle=handle, footprint=footprint,
                                  device=handle.device, movable=not exported,
                                  location_note=f" (worker pid {handle.worker.pid})",
                                  extra={"sha256": digest} if digest else {})

    def _start(self, entry, device: str) -> tuple[YoloModel, int, str | None]:
        """Check the file, start a worker and load the file in it."""
        path = Path(entry.path)
        suffix = path.suffix.lower()
        data = digest = None
        if suffix in PICKLE_SUFFIXES:
            data = path.read_bytes()
            digest = sha256_of(data)
            if not self.trust.trusted(digest):
                raise self.invalid(str(NotTrusted(entry.name, digest)), "model")
        elif suffix != ".onnx" and entry.format != "openvino":  # ONNX / OpenVINO: a graph and weights, no code
            raise self.invalid(f"{entry.name}: models/yolo takes ultralytics .pt and .onnx files and "
                               f"_openvino_model folders", "model")
        worker = self.api.start_worker(WORKER, env=self.worker_env)
        try:
            if data is None:
                info = worker.call("load", timeout_s=LOAD_TIMEOUT_S, path=str(path), name=entry.name, device=device)
            else:
                # The very bytes that were hashed, as a private copy: a file swapped after the check never loads.
                copy = Path(worker.private_dir) / f"model{suffix}"
                copy.write_bytes(data)
                try:
                    info = worker.call("load", timeout_s=LOAD_TIMEOUT_S, path=str(copy), name=entry.name,
                                       device=device)
                finally:
                    copy.unlink(missing_ok=True)
        except BaseException:
            worker.stop()
            raise
        return YoloModel(worker, info["task"], info["names"], info["device"]), int(info["footprint"]), digest

    def to(self, actx, loaded, device: str) -> None:
        if not loaded.movable:
            raise self.invalid(f"{loaded.entry.name} runs in ONNX Runtime / OpenVINO and stays where it is", "device")
        loaded.handle.worker.call("to", timeout_s=LOAD_TIMEOUT_S, device=device)
        loaded.handle.device = loaded.device = device

    def prepare(self, actx, loaded) -> None:
        """A worker that died since the last job (a crash, a kill) is started again, the file checked again."""
        if loaded.handle.worker.alive:
            return
        log.warning("the YOLO worker of %s is gone; starting it again", loaded.entry.name)
        handle, _footprint, _digest = self._start(loaded.entry, loaded.device)
        loaded.handle = handle
        loaded.location_note = f" (worker pid {handle.worker.pid})"

    def release(self, actx, loaded) -> None:
        if loaded.handle is not None:
            loaded.handle.worker.stop()
        loaded.handle = None

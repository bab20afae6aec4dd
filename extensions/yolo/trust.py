"""Trust on first use for pickled weights: a .pt file is a Python pickle, and unpickling it can run any
code (ultralytics loads it with torch.load(weights_only=False), since its files hold whole model objects).
So a .pt file loads only after the user has trusted its exact bytes: the sha256 they saw. The trusted
hashes are remembered in the extension's data dir; a file changed afterwards has another hash and is
refused again. ONNX files hold a graph and weights, no code, and need no trust.
"""
from __future__ import annotations

import hashlib
import json
import threading
import time
from pathlib import Path

PICKLE_SUFFIXES = (".pt", ".pth")


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class NotTrusted(Exception):
    def __init__(self, name: str, digest: str):
        super().__init__(f"{name} is a pickle (.pt): loading it can run code. Its sha256 is {digest}. If you trust "
                         f"where it came from, trust it once: POST /ext/yolo/trust with "
                         f'{{"name": "{name}", "sha256": "{digest}"}} (or export it to ONNX, which needs no trust)')
        self.name, self.digest = name, digest


class TrustStore:
    """sha256 → what the user trusted, in <data dir>/extensions-data/yolo/trusted.json (written atomically)."""

    def __init__(self, file: Path):
        self.file = Path(file)
        self._lock = threading.Lock()

    def _read(self) -> dict:
        try:
            data = json.loads(self.file.read_text(encoding="utf-8"))
            return data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            return {}

    def trusted(self, digest: str) -> bool:
        return digest in self._read()

    def listing(self) -> dict:
        return self._read()

    def trust(self, name: str, digest: str, data: bytes) -> dict:
        """Trust `data` if its hash is the `digest` the user confirmed (a file swapped since is refused)."""
        actual = sha256_of(data)
        if actual != digest.lower().strip():
            raise ValueError(f"{name} has sha256 {actual}, not the {digest} you confirmed; check the file again")
        with self._lock:
            data_now = self._read()
            data_now[actual] = {"name": name, "trusted_at": time.strftime("%Y-%m-%dT%H:%M:%S")}
            self.file.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.file.with_name(f".{self.file.name}.tmp")
            tmp.write_text(json.dumps(data_now, indent=2, sort_keys=True) + "\n", encoding="utf-8")
            tmp.replace(self.file)
        return {"name": name, "sha256": actual}

    def revoke(self, digest: str) -> None:
        with self._lock:
            data_now = self._read()
            if data_now.pop(digest, None) is not None:
                tmp = self.file.with_name(f".{self.file.name}.tmp")
                tmp.write_text(json.dumps(data_now, indent=2, sort_keys=True) + "\n", encoding="utf-8")
                tmp.replace(self.file)

"""Small pieces several test folders share (fixtures live in conftest.py)."""
from __future__ import annotations

import base64
import io
import subprocess
import sys
from pathlib import Path


class MaliciousPickle:
    """Unpickling this would create the marker file: the attack a malicious .ckpt carries."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('pwned')",))


def save_malicious_pickle(path: Path, marker: Path, layout: dict | None = None) -> Path:
    """A torch-saved file shaped like a real one (`layout`: its tensors) that carries the payload."""
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({**(layout or {"state_dict": {"w": torch.zeros(2)}}), "payload": MaliciousPickle(str(marker))}, path)
    return path


def assert_payloads_fire(planted: dict[Path, Path]) -> None:
    """Each {file: marker} payload really runs under an unsafe load — torch.load(weights_only=False) in a
    child process — so a test that then sees the studio refuse the file proves the guard, not a dud
    payload. The markers are removed again."""
    code = ("import sys, torch\n"
            "for path in sys.argv[1:]:\n"
            "    torch.load(path, map_location='cpu', weights_only=False)\n")
    done = subprocess.run([sys.executable, "-c", code, *map(str, planted)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    for path, marker in planted.items():
        assert Path(marker).exists(), f"the payload in {path} did not run even under an unsafe load: a dud"
        Path(marker).unlink()


def decode_png(b64: str):
    """The image a client gets: a whole PNG that decodes, or the test fails."""
    from PIL import Image

    raw = base64.b64decode(b64)
    assert raw[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    image = Image.open(io.BytesIO(raw))
    image.load()
    return image

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


# AUTOMATIC1111's sampler names and what each is in diffusers (the table in diffusers' scheduler docs):
# name -> (scheduler class, options it is built with by default, A1111's default schedule type).
# Written out here, apart from modules/diffusion/samplers.py, so a wrong mapping there (Heun as Euler,
# a lost Karras flag) fails the tests instead of being copied into them.
A1111_SAMPLERS: dict[str, tuple[str, dict, str]] = {
    "Euler a": ("EulerAncestralDiscreteScheduler", {}, "Automatic"),
    "Euler": ("EulerDiscreteScheduler", {"use_karras_sigmas": False}, "Automatic"),
    "LMS": ("LMSDiscreteScheduler", {"use_karras_sigmas": False}, "Automatic"),
    "Heun": ("HeunDiscreteScheduler", {"use_karras_sigmas": False}, "Automatic"),
    "DPM2": ("KDPM2DiscreteScheduler", {"use_karras_sigmas": True}, "Karras"),
    "DPM2 a": ("KDPM2AncestralDiscreteScheduler", {"use_karras_sigmas": True}, "Karras"),
    "DPM++ 2M": ("DPMSolverMultistepScheduler",
                 {"algorithm_type": "dpmsolver++", "solver_order": 2, "use_karras_sigmas": True}, "Karras"),
    "DPM++ SDE": ("DPMSolverSDEScheduler", {"use_karras_sigmas": True}, "Karras"),
    "DPM++ 2M SDE": ("DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++", "solver_order": 2,
                                                     "use_karras_sigmas": False, "use_exponential_sigmas": True},
                     "Exponential"),
    "DPM++ 2S a": ("DPMSolverSinglestepScheduler",
                   {"algorithm_type": "dpmsolver++", "solver_order": 2, "use_karras_sigmas": True}, "Karras"),
    "DDIM": ("DDIMScheduler", {}, "Automatic"),
    "PLMS": ("PNDMScheduler", {"skip_prk_steps": True}, "Automatic"),
    "UniPC": ("UniPCMultistepScheduler", {"use_karras_sigmas": False}, "Automatic"),
    "LCM": ("LCMScheduler", {}, "Automatic"),
}


def reference_scheduler(name: str, base_config, seed: int):
    """The scheduler plain diffusers users build for an A1111 sampler name, from A1111_SAMPLERS."""
    import inspect

    import diffusers

    cls_name, options, _ = A1111_SAMPLERS[name]
    cls = getattr(diffusers, cls_name)
    options = dict(options)
    if "noise_sampler_seed" in inspect.signature(cls.__init__).parameters:  # DPM++ SDE: seeded Brownian noise
        options["noise_sampler_seed"] = seed
    return cls.from_config(base_config, **options)


def rgb_pixels(image):
    """A PIL image as an int array of RGB values, for exact and difference comparisons."""
    import numpy as np

    return np.asarray(image.convert("RGB")).astype(int)

"""Face restorer models (AUTOMATIC1111's GFPGAN), loaded by spandrel, and what is missing when there is none.

A1111 keeps them in models/GFPGAN (kind "gfpgan"): a GFPGANv1.3 / v1.4 file, safetensors or a weights-only
.pth, detected by spandrel like the upscalers (the same adapter, purpose "FaceSR"). CodeFormer lives in
spandrel-extra-arches, whose package requires torchvision (which cannot import beside the `+cpu` torch):
it is refused, naming that, never silently skipped. A restorer works on a 512x512 aligned face; the
detection, crop and paste-back are modules/postprocess/faces.py.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from modules.errors import InvalidRequest

if TYPE_CHECKING:
    from modules.models.registry import ModelEntry, ModelRegistry

GFPGAN_KIND = "gfpgan"
RESTORERS = ("GFPGAN", "CodeFormer")  # A1111's names (the face_restoration_model setting)
FACE_SIZE = 512  # GFPGAN's input and output
CODEFORMER_MISSING = ("CodeFormer is not available in Atelier: its architecture is in spandrel-extra-arches, which "
                      "requires torchvision (it cannot import beside this torch); use GFPGAN (a GFPGANv1.4 file in "
                      "models/GFPGAN)")


def gfpgan_entries(registry: "ModelRegistry") -> list["ModelEntry"]:
    """The usable files of models/GFPGAN, read again at each use (a small folder; A1111 lists it each time):
    a file put there or taken away counts at once."""
    registry.refresh(GFPGAN_KIND)
    return [e for e in registry.list(GFPGAN_KIND) if not e.problem]


def installed(registry: "ModelRegistry") -> list[str]:
    """The restorer names that can run now (what /sdapi/v1/face-restorers lists)."""
    from modules.postprocess.faces import detector_problem

    return ["GFPGAN"] if gfpgan_entries(registry) and detector_problem() is None else []


def find(registry: "ModelRegistry", name: str, field: str) -> "ModelEntry":
    """The model file behind a restorer name, or a refusal naming `field` and what to install where."""
    from modules.postprocess.faces import detector_problem

    if name == "CodeFormer":
        raise InvalidRequest(CODEFORMER_MISSING, field)
    if name != "GFPGAN":
        raise InvalidRequest(f"unknown face restorer {name!r}; known: GFPGAN", field)
    problem = detector_problem()
    if problem:
        raise InvalidRequest(problem, field)
    entries = gfpgan_entries(registry)
    if not entries:
        folder = registry.paths.model_dir(GFPGAN_KIND)
        raise InvalidRequest(f"no GFPGAN model: put GFPGANv1.4.pth (or a .safetensors of it) in {folder}", field)
    preferred = [e for e in entries if "1.4" in e.stem]  # A1111 uses GFPGANv1.4 when several are there
    return (preferred or entries)[0]


@dataclass
class FaceRestorerModel:
    """What a job works with: spandrel's GFPGAN descriptor on the compute device (SpandrelAdapter's handle)."""

    entry: "ModelEntry"
    descriptor: Any
    device: str = "cpu"

    def restore(self, face):
        """One 512x512 RGB face (PIL) → the restored face (PIL), as A1111: the network sees [-1, 1] and gives
        [-1, 1] back (spandrel's own call clamps to [0, 1], so the network is called directly). The network's
        own noise buffers, not fresh noise: the same image and model give the same face."""
        import numpy as np
        import torch
        from PIL import Image

        rgb = np.asarray(face.convert("RGB"), dtype=np.float32) / 127.5 - 1.0
        model = self.descriptor.model
        dtype = next(model.parameters()).dtype
        tensor = torch.from_numpy(rgb).permute(2, 0, 1)[None].to(self.device, dtype)
        with torch.inference_mode():
            out = model(tensor, return_rgb=False, randomize_noise=False)[0]
            out = out[0].float().clamp_(-1, 1).add_(1).mul_(127.5).round_().to(torch.uint8).permute(1, 2, 0)
        return Image.fromarray(out.cpu().numpy())

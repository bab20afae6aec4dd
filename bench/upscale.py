"""Figures: an upscaler model run tile-wise through Atelier vs spandrel's own call on the whole image
(the same model object), and a 4x of a 2048 image, tiled, in a child process: seconds and peak RSS.

The model is a random-weights RRDBNet of RealESRGAN_x4plus's shapes (64 features, 23 blocks, 16.7 M
parameters; --quick: 4 blocks) in Real-ESRGAN's key layout, loaded by spandrel. The 2048 figure uses
the tests' 8-feature network so it finishes on 2 cores: it measures the tiler's own memory (the 8192²
output and its blending weights), which the real network's activations per tile only add to.
"""
from __future__ import annotations

import json
import subprocess
import sys

from bench.common import Figure, ratios, side_by_side

TITLE_TILED = "Upscaler 4x, 128² in 64² tiles (Atelier) vs one spandrel call (speed: spandrel / Atelier)"
TITLE_2048 = "4x of a 2048² image, tiled (192, overlap 8), 8-feature RRDBNet: seconds, peak RSS MiB"
_CHILD = """
import json, resource, sys, time
import numpy as np
from PIL import Image
from modules.models.demo_upscaler import realesrgan_state_dict
from modules.models.spandrel_registry import arch_registry
from modules.models.upscalers import UpscalerModel
descriptor = arch_registry().load(realesrgan_state_dict()); descriptor.eval()
model = UpscalerModel(entry=None, descriptor=descriptor)
image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (2048, 2048, 3), dtype=np.uint8))
start = time.perf_counter()
out = model.upscale_once(image, 192, 8)
print(json.dumps({"seconds": time.perf_counter() - start, "size": out.size,
                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def run(device: str, quick: bool, log) -> list[Figure]:
    import numpy as np
    import torch
    from PIL import Image

    from modules.models.demo_upscaler import realesrgan_state_dict
    from modules.models.spandrel_registry import arch_registry
    from modules.models.upscalers import UpscalerModel

    descriptor = arch_registry().load(realesrgan_state_dict(num_feat=64, num_block=4 if quick else 23))
    descriptor.eval().to(device)
    model = UpscalerModel(entry=None, descriptor=descriptor, device=device)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (128, 128, 3), dtype=np.uint8))
    tensor = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255).permute(2, 0, 1)[None].to(device)

    def plain():
        with torch.inference_mode():
            return descriptor(tensor)

    ours, theirs = side_by_side(lambda: model.upscale_once(image, 64, 8), plain, reps=2 if quick else 4, device=device)
    figures = [Figure.from_samples("upscale_tiled_vs_spandrel", TITLE_TILED, ratios(theirs, ours), unit="x",
                                   target="reported (tiles overlap: some pixels run twice)")]
    log("upscale: a 4x of a 2048 image in a child process …")
    done = subprocess.run([sys.executable, "-c", _CHILD], capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        figures.append(Figure.missing("upscale_2048", TITLE_2048, done.stderr[-400:]))
        return figures
    measured = json.loads(done.stdout.strip().splitlines()[-1])
    figures.append(Figure.from_samples("upscale_2048_seconds", TITLE_2048 + " (seconds)", [measured["seconds"]],
                                       unit="s", size=measured["size"]))
    figures.append(Figure.from_samples("upscale_2048_rss", TITLE_2048 + " (peak RSS)", [measured["peak_rss_mib"]],
                                       unit="MiB"))
    return figures

"""GPU smoke check: `python -m bench.gpu_smoke [cuda|cpu]` — txt2img with hires fix and an
"only masked" inpaint under each memory policy, on the demo model. For a session with a GPU:
the CUDA/fp16 and offload paths are otherwise untested. Prints GPU CHECK OK or FAILED."""
import sys, tempfile, time
from pathlib import Path
import torch
from modules.studio import Studio, StudioOptions
from modules.diffusion.params import Txt2ImgRequest, Img2ImgRequest
from modules.models.demo import save_demo_checkpoint, DEMO_NAME
from PIL import Image
import numpy as np

data = Path(tempfile.mkdtemp())
save_demo_checkpoint(data / "models" / "Stable-diffusion" / DEMO_NAME)
device = sys.argv[1] if len(sys.argv) > 1 else "cuda"
s = Studio(StudioOptions(data_dir=data, device=device, build_demo=False))
s.load(); print("load_error", s.load_error, "device", s.device)
ok = True
for policy in ["gpu", "model_offload", "sequential_offload"]:
    try:
        s.settings.update({"memory_policy": policy})
        s.models.unload()
        t = time.time()
        job = s.submit("txt2img", Txt2ImgRequest(prompt="a (cat:1.2) BREAK dog", steps=8, width=64, height=64, seed=5, batch_size=2, enable_hr=True, hr_scale=2)).wait(300)
        im = job.result.images[0].image if job.result else None
        arr = np.asarray(im) if im else None
        print(policy, job.state, job.error, round(time.time() - t, 2), None if arr is None else (arr.shape, arr.mean()), s.models.active.location if s.models.active else None)
        ok &= job.state.value == "done"
        init = im.resize((64, 64))
        mask = Image.new("L", (64, 64), 0); mask.paste(255, (16, 16, 48, 48))
        job2 = s.submit("img2img", Img2ImgRequest(prompt="x", init_images=[init], mask=mask, steps=6, width=64, height=64, denoising_strength=0.8, inpaint_full_res=True)).wait(300)
        out = np.asarray(job2.result.images[0].image).astype(int) if job2.result else None
        outside_same = out is not None and (out[:3] == np.asarray(init)[:3]).all()  # rows 16+ px from the mask: past the blur (3 sigma = 12 px)
        print(" inpaint", job2.state, job2.error, "outside unchanged:", outside_same)
        ok &= job2.state.value == "done" and outside_same
    except Exception as e:
        import traceback; traceback.print_exc(); ok = False
print("GPU CHECK", "OK" if ok else "FAILED")
s.shutdown()
sys.exit(0 if ok else 1)

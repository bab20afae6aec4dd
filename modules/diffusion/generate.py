"""Runs txt2img / img2img / inpaint jobs: typed request in, saved PNGs with infotext out."""
from __future__ import annotations

import random
from typing import TYPE_CHECKING

from modules.diffusion import infotext
from modules.diffusion.params import GeneratedImage, GenerationResult, Txt2ImgRequest
from modules.jobs import JobContext

if TYPE_CHECKING:
    from modules.studio import Studio


def run_txt2img(studio: "Studio", ctx: JobContext, req: Txt2ImgRequest) -> GenerationResult:
    import torch

    # Extension hooks (issue 5) run here, on the job worker, never in the UI event loop.
    req = studio.hooks.before_generate(req)
    seed = req.seed if req.seed != -1 else random.randrange(2**32)
    result = GenerationResult(request=req)
    with studio.models.checkpoint(req.checkpoint_override) as ckpt:
        pipe = ckpt.pipe
        pipe.scheduler = studio.samplers.make_scheduler(req.sampler_name, pipe.scheduler.config)
        ctx.set_parts(req.n_iter)
        for it in range(req.n_iter):
            seeds = [seed + it * req.batch_size + i for i in range(req.batch_size)]

            def on_step(p, step, timestep, kwargs, _it=it):
                ctx.progress(step + 1, req.steps, part=_it)
                if ctx.should_stop_item:
                    p._interrupt = True
                return kwargs

            out = pipe(
                prompt=[req.prompt] * req.batch_size,
                negative_prompt=[req.negative_prompt] * req.batch_size,
                num_inference_steps=req.steps, guidance_scale=req.cfg_scale,
                width=req.width, height=req.height,
                generator=[torch.Generator("cpu").manual_seed(s) for s in seeds],
                callback_on_step_end=on_step,
            )
            batch = GenerationResult(request=req)
            for image, s in zip(out.images, seeds):
                text = infotext.build(req.prompt, req.negative_prompt, {
                    "Steps": req.steps, "Sampler": req.sampler_name, "Schedule type": req.scheduler,
                    "CFG scale": req.cfg_scale, "Seed": s, "Size": f"{req.width}x{req.height}",
                    "Model": ckpt.entry.stem,
                })
                batch.images.append(GeneratedImage(image=image, infotext=text, seed=s, subseed=s))
            # after_generate may post-process the batch before it is saved; on_image_saved follows each save.
            batch = studio.hooks.after_generate(batch)
            for g in batch.images:
                if req.save_images:
                    g.path = studio.outputs.save_png(g.image, studio.settings.get().outdir_txt2img_samples, g.seed, g.infotext)
                    studio.hooks.image_saved(g)
                result.images.append(g)
            ctx.take_skip()
            if ctx.interrupted:
                result.interrupted = True
                break
    return result

"""What a generation job reports: the infotext of each image and A1111's `info` object."""
from __future__ import annotations

import time

from modules.diffusion import hires, infotext
from modules.diffusion.params import GeneratedImage, GenerationResult, Img2ImgRequest
from modules.diffusion.sampling import Run

VERSION = "atelier"


def image_params(run: Run, index: int, loras: list) -> dict:
    """The infotext's key: value line for image `index`, in A1111's order."""
    req, entry = run.req, run.ckpt.entry
    img2img = isinstance(req, Img2ImgRequest)
    vae = run.studio.settings.get().sd_vae
    params = {
        "Steps": req.steps,
        "Sampler": run.sampler,
        "Schedule type": run.schedule,
        "CFG scale": _num(req.cfg_scale),
        "Seed": run.plan.seeds[index],
        "Size": f"{req.width}x{req.height}",
        "Model hash": entry.short_hash,
        "Model": entry.stem,
        "VAE": vae if vae not in ("Automatic", "None", "") else None,
    }
    if run.plan.subseed_strength > 0:
        params["Variation seed"] = run.plan.subseeds[index]
        params["Variation seed strength"] = _num(run.plan.subseed_strength)
    if img2img:
        params["Denoising strength"] = _num(req.denoising_strength)
    elif req.enable_hr:
        params["Denoising strength"] = _num(hires.denoising(req))
    if run.clip_skip > 1:
        params["Clip skip"] = run.clip_skip
    if req.enable_hr and not img2img:
        if req.hr_resize_x or req.hr_resize_y:
            w, h = req.hires_size()
            params["Hires resize"] = f"{w}x{h}"
        else:
            params["Hires upscale"] = _num(req.hr_scale)
        if req.hr_second_pass_steps:
            params["Hires steps"] = req.hr_second_pass_steps
        params["Hires upscaler"] = req.hr_upscaler
    if img2img and req.is_inpaint:
        params["Mask blur"] = req.mask_blur
    if loras:
        params["Lora hashes"] = ", ".join(f"{a.entry.name}: {a.entry.short_hash or ''}" for a in loras)
    params["Version"] = VERSION
    return params


def _num(value):
    """7.0 -> 7, 0.75 -> 0.75 (as A1111 prints numbers)."""
    return int(value) if float(value).is_integer() else value


def build(run: Run, images: list, indices: list[int], prompt: str, negative: str, loras: list) -> GenerationResult:
    req = run.req
    result = GenerationResult(request=req)
    for image, i in zip(images, indices):
        text = infotext.build(prompt, negative, image_params(run, i, loras))
        result.images.append(GeneratedImage(image=image, infotext=text, seed=run.plan.seeds[i], subseed=run.plan.subseeds[i]))
    entry = run.ckpt.entry
    n = len(result.images)
    first = indices[0] if indices else 0
    result.info = {
        "prompt": prompt, "all_prompts": [prompt] * n,
        "negative_prompt": negative, "all_negative_prompts": [negative] * n,
        "seed": run.plan.seeds[first], "all_seeds": [run.plan.seeds[i] for i in indices],
        "subseed": run.plan.subseeds[first], "all_subseeds": [run.plan.subseeds[i] for i in indices],
        "subseed_strength": run.plan.subseed_strength,
        "width": req.width, "height": req.height,
        "sampler_name": run.sampler, "scheduler": run.schedule, "cfg_scale": req.cfg_scale, "steps": req.steps,
        "batch_size": req.batch_size, "restore_faces": False, "face_restoration_model": None,
        "sd_model_name": entry.stem, "sd_model_hash": entry.short_hash,
        "sd_vae_name": None, "sd_vae_hash": None,
        "seed_resize_from_w": -1, "seed_resize_from_h": -1,
        "denoising_strength": req.denoising_strength if isinstance(req, Img2ImgRequest) or req.enable_hr else None,
        "extra_generation_params": {}, "index_of_first_image": 0,
        "infotexts": [g.infotext for g in result.images], "styles": list(req.styles),
        "job_timestamp": time.strftime("%Y%m%d%H%M%S"), "clip_skip": run.clip_skip,
        "is_using_inpainting_conditioning": False, "version": VERSION,
    }
    if result.images:
        params = infotext.parse(result.images[0].infotext)
        result.info["extra_generation_params"] = {
            k: v for k, v in params.items()
            if k not in ("Prompt", "Negative prompt", "Steps", "Sampler", "CFG scale", "Seed", "Size", "Size-1",
                         "Size-2", "Model hash", "Model", "Version")}
    return result

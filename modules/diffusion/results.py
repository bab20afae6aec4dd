"""What a generation job reports: the infotext of each image and A1111's `info` object."""
from __future__ import annotations

import time

from modules.diffusion import hires, infotext
from modules.diffusion.params import GeneratedImage, GenerationResult, Img2ImgRequest
from modules.diffusion.sampling import Run

VERSION = "atelier"


def image_params(run: Run, index: int, loras: list) -> dict:
    """The infotext's key: value line for image `index`, in A1111's order."""
    req, entry, ckpt = run.req, run.ckpt.entry, run.ckpt
    img2img = isinstance(req, Img2ImgRequest)
    params = {
        "Steps": req.steps,
        "Sampler": run.sampler,
        "Schedule type": run.schedule,
        "CFG scale": _num(req.cfg_scale),
        "Seed": run.plan.seeds[index],
        "Face restoration": run.face_restorer if req.restore_faces else None,
        "Size": f"{req.width}x{req.height}",
        "Model hash": entry.short_hash,
        "Model": entry.stem,
        "VAE hash": getattr(ckpt, "vae_hash", None),  # set by the model manager when a VAE file is in use
        "VAE": getattr(ckpt, "vae_name", None),
        "Quantization": getattr(ckpt, "quantization", None),
    }
    if run.arch == "flux":  # Forge's key: Flux-dev's distilled guidance
        params = {**dict(list(params.items())[:4]), "Distilled CFG Scale": _num(req.distilled_cfg_scale),
                  **dict(list(params.items())[4:])}
    if run.plan.subseed_strength > 0:
        params["Variation seed"] = run.plan.subseeds[index]
        params["Variation seed strength"] = _num(run.plan.subseed_strength)
    if img2img:
        params["Denoising strength"] = _num(req.denoising_strength)
    elif req.enable_hr:
        params["Denoising strength"] = _num(hires.denoising(req))
    if run.clip_skip > 1:
        params["Clip skip"] = run.clip_skip
    if req.tiling:
        params["Tiling"] = "True"
    for i, module in enumerate(ckpt.modules):  # Forge's: the shared files a transformer-only file took
        params[f"Module {i + 1}"] = module
    if req.enable_hr and not img2img:
        if req.hr_resize_x or req.hr_resize_y:
            w, h = req.hires_size()
            params["Hires resize"] = f"{w}x{h}"
        else:
            params["Hires upscale"] = _num(req.hr_scale)
        if req.hr_second_pass_steps:
            params["Hires steps"] = req.hr_second_pass_steps
        params["Hires upscaler"] = req.hr_upscaler
        hr_sampler, hr_schedule = hires.sampler(run.samplers, req)
        if hr_sampler != run.sampler:
            params["Hires sampler"] = hr_sampler
        if hr_schedule != run.schedule:
            params["Hires schedule type"] = hr_schedule
        if req.hr_prompt and req.hr_prompt != req.prompt:
            params["Hires prompt"] = req.hr_prompt
        if req.hr_negative_prompt and req.hr_negative_prompt != req.negative_prompt:
            params["Hires negative prompt"] = req.hr_negative_prompt
    if img2img and req.is_inpaint:
        params["Mask blur"] = req.mask_blur
        if req.inpaint_full_res:
            params["Inpaint area"] = "Only masked"
            params["Masked area padding"] = req.inpaint_full_res_padding
    hashed = [a for a in loras if a.entry.short_hash]
    if hashed:
        params["Lora hashes"] = ", ".join(f"{a.entry.stem}: {a.entry.short_hash}" for a in hashed)
    used = _embeddings_in(ckpt, run.texts)
    if used:
        params["TI hashes"] = ", ".join(f"{e.stem}: {e.short_hash}" for e in used)
    params["Version"] = VERSION
    return params


def _embeddings_in(ckpt, req) -> list:
    """Textual-inversion embeddings loaded for this checkpoint that the prompts use (A1111's "TI hashes")."""
    import re

    text = f"{req.prompt}\n{req.negative_prompt}"
    return [e for e in getattr(ckpt, "embeddings", []) or []
            if e.short_hash and re.search(rf"(?<![\w]){re.escape(e.stem)}(?![\w])", text)]


def _num(value):
    """7.0 -> 7, 0.75 -> 0.75 (as A1111 prints numbers)."""
    return int(value) if float(value).is_integer() else value


def batch_result(run: Run, images: list, indices: list[int], prompt: str, negative: str, loras: list) -> GenerationResult:
    """The images of one batch with their infotexts (before after_generate and saving)."""
    result = GenerationResult(request=run.req)
    for image, i in zip(images, indices):
        text = infotext.build(prompt, negative, image_params(run, i, loras))
        result.images.append(GeneratedImage(image=image, infotext=text, seed=run.plan.seeds[i], subseed=run.plan.subseeds[i]))
    return result


def info(run: Run, images: list[GeneratedImage], prompt: str, negative: str) -> dict:
    """A1111's `info` object (the /sdapi/v1 responses carry it as JSON)."""
    req, entry, n = run.req, run.ckpt.entry, len(images)
    seeds, subseeds = [g.seed for g in images], [g.subseed for g in images]
    out = {
        "prompt": prompt, "all_prompts": [run.texts.prompt] * n,  # A1111's all_prompts: styles applied
        "negative_prompt": negative, "all_negative_prompts": [run.texts.negative_prompt] * n,
        "seed": seeds[0] if seeds else run.plan.seeds[0], "all_seeds": seeds,
        "subseed": subseeds[0] if subseeds else run.plan.subseeds[0], "all_subseeds": subseeds,
        "subseed_strength": run.plan.subseed_strength,
        "width": req.width, "height": req.height,
        "sampler_name": run.sampler, "scheduler": run.schedule, "cfg_scale": req.cfg_scale, "steps": req.steps,
        "batch_size": req.batch_size, "restore_faces": req.restore_faces,
        "face_restoration_model": run.face_restorer or None,
        "sd_model_name": entry.stem, "sd_model_hash": entry.short_hash,
        "sd_vae_name": getattr(run.ckpt, "vae_name", None), "sd_vae_hash": getattr(run.ckpt, "vae_hash", None),
        "seed_resize_from_w": -1, "seed_resize_from_h": -1,
        "denoising_strength": req.denoising_strength if isinstance(req, Img2ImgRequest) or req.enable_hr else None,
        "extra_generation_params": {}, "index_of_first_image": 0,
        "infotexts": [g.infotext for g in images], "styles": list(req.styles),
        "job_timestamp": time.strftime("%Y%m%d%H%M%S"), "clip_skip": run.clip_skip,
        "is_using_inpainting_conditioning": False, "version": VERSION,
    }
    if images:
        params = infotext.parse(images[0].infotext)
        out["extra_generation_params"] = {k: v for k, v in params.items() if k not in _BASE_KEYS}
    return out


_BASE_KEYS = ("Prompt", "Negative prompt", "Steps", "Sampler", "CFG scale", "Seed", "Size", "Size-1", "Size-2",
              "Model hash", "Model", "Version")

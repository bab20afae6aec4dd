"""Inpaint: img2img with a mask, A1111's way, on diffusers' inpaint pipeline.

- the mask is binarised (alpha if it has one, else luminance), optionally inverted, blurred;
- masked content: 0 fill (surrounding colours blurred in), 1 original, 2 latent noise,
  3 latent nothing (the last two edit the latents we hand to the pipeline);
- "only masked" (inpaint_full_res) crops the masked region plus padding, at the output's
  aspect ratio, works on it at width x height and pastes it back;
- after decoding, the original is composited back outside the blurred mask, so pixels
  the mask does not touch are exactly the original's.

The pipeline (a 4-channel UNet works: diffusers blends the original latents back outside
the mask each step) comes from `LoadedCheckpoint.pipeline("inpaint")` — shared weights.
"""
from __future__ import annotations

from dataclasses import dataclass

from modules.diffusion import flow, hires, sampling, seeds, variation
from modules.diffusion.resize import resize_image
from modules.diffusion.sampling import Run


@dataclass
class Prepared:
    work_image: object  # what the model sees, width x height
    work_mask: object  # blurred mask, width x height
    base: object  # the picture the result is composited onto
    overlay_mask: object  # blurred mask at the base's size
    box: tuple[int, int, int, int] | None  # where the work area sits in base (only masked)


def binary_mask(mask, invert: bool):
    from PIL import ImageOps

    if mask.mode in ("RGBA", "LA") and mask.getchannel("A").getextrema()[0] < 255:
        mask = mask.getchannel("A")
    mask = mask.convert("L").point(lambda v: 255 if v > 128 else 0)
    return ImageOps.invert(mask) if invert else mask


def crop_region(mask, padding: int) -> tuple[int, int, int, int]:
    box = mask.getbbox()
    if box is None:
        return (0, 0, mask.width, mask.height)
    x1, y1, x2, y2 = box
    return (max(x1 - padding, 0), max(y1 - padding, 0), min(x2 + padding, mask.width), min(y2 + padding, mask.height))


def expand_to_ratio(box, width: int, height: int, image_w: int, image_h: int):
    """Grow the crop box to the output's aspect ratio, staying inside the picture."""

    def grow(lo, hi, want, limit):
        diff = int(want - (hi - lo))
        lo, hi = lo - diff // 2, hi + diff - diff // 2
        if hi > limit:
            lo, hi = lo - (hi - limit), limit
        if lo < 0:
            hi, lo = min(hi - lo, limit), 0
        return lo, hi

    x1, y1, x2, y2 = box
    if (x2 - x1) / (y2 - y1) > width / height:
        y1, y2 = grow(y1, y2, (x2 - x1) * height / width, image_h)
    else:
        x1, x2 = grow(x1, x2, (y2 - y1) * width / height, image_w)
    return (x1, y1, x2, y2)


def fill(image, mask):
    """A1111's "fill": the masked area painted with ever less blurred copies of its surroundings."""
    from PIL import Image, ImageFilter, ImageOps

    keep = Image.new("RGBa", image.size)
    keep.paste(image.convert("RGBA").convert("RGBa"), mask=ImageOps.invert(mask.convert("L")))
    out = Image.new("RGBA", image.size)
    for radius, repeats in ((256, 1), (64, 1), (16, 2), (4, 4), (2, 2), (0, 1)):
        blurred = keep.filter(ImageFilter.GaussianBlur(radius)).convert("RGBA")
        for _ in range(repeats):
            out.alpha_composite(blurred)
    return out.convert("RGB")


def prepare(req, init) -> Prepared:
    from PIL import Image, ImageFilter

    mask = binary_mask(req.mask, bool(req.inpainting_mask_invert))
    if mask.size != init.size:
        mask = mask.resize(init.size, Image.Resampling.NEAREST)
    if req.mask_blur > 0:
        mask = mask.filter(ImageFilter.GaussianBlur(req.mask_blur))
    w, h = req.width, req.height
    if req.inpaint_full_res:
        box = expand_to_ratio(crop_region(mask, req.inpaint_full_res_padding), w, h, init.width, init.height)
        lanczos = Image.Resampling.LANCZOS
        return Prepared(init.crop(box).resize((w, h), lanczos), mask.crop(box).resize((w, h), lanczos), init, mask, box)
    mode = 0 if req.resize_mode == 3 else req.resize_mode
    sized, sized_mask = resize_image(mode, init, w, h), resize_image(mode, mask, w, h)
    return Prepared(sized, sized_mask, sized, sized_mask, None)


def composite(prep: Prepared, generated):
    """The original outside the (blurred) mask, the generated picture inside it."""
    from PIL import Image

    image = generated.convert("RGB")
    if prep.box is not None:
        x1, y1, x2, y2 = prep.box
        full = prep.base.copy()
        full.paste(image.resize((x2 - x1, y2 - y1), Image.Resampling.LANCZOS), (x1, y1))
        image = full
    return Image.composite(image, prep.base, prep.overlay_mask)


def _latent_fill(run: Run, pipe, preps: list[Prepared], gens: list, mode: int):
    """Masked content 2 (latent noise) / 3 (latent nothing): edit the encoded latents."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    latents = sampling.encode(pipe, [p.work_image for p in preps], gens)
    masks = torch.stack([torch.from_numpy(np.asarray(p.work_mask.convert("L"), dtype=np.float32) / 255.0) for p in preps])
    m = F.interpolate(masks[:, None], size=latents.shape[-2:], mode="bilinear").round().to(latents.device, latents.dtype)
    if mode == 2:
        noise = torch.cat([torch.randn((1, *latents.shape[1:]), generator=g, dtype=latents.dtype) for g in gens])
        return latents * (1 - m) + noise.to(latents.device) * m
    return latents * (1 - m)


def _masked(prep: Prepared):
    """The picture with the masked area grey (0 after normalising), as diffusers prepares it for 9-channel UNets."""
    from PIL import Image

    hard = prep.work_mask.convert("L").point(lambda v: 255 if v >= 128 else 0)
    return Image.composite(Image.new("RGB", prep.work_image.size, (128, 128, 128)), prep.work_image.convert("RGB"), hard)


def batch(run: Run, iteration: int, inits: list) -> list:
    req = run.req
    preps = [prepare(req, im) for im in inits]
    strength = req.denoising_strength
    if strength <= 0:
        return [composite(p, p.work_image) for p in preps]
    pipe = run.ckpt.pipeline("inpaint")
    indices = run.batch_indices(iteration)
    gens = seeds.generators(run.plan, indices)
    extra = {}
    if req.inpainting_fill in (2, 3):
        image = _latent_fill(run, pipe, preps, gens, req.inpainting_fill)
        if not flow.is_flow(run.arch) and pipe.unet.config.in_channels == 9:  # conditioned on the masked original
            extra["masked_image_latents"] = sampling.encode(pipe, [_masked(p) for p in preps], gens)
        else:
            extra["masked_image_latents"] = image  # only its shape matters to a 4-channel UNet or a transformer
    elif req.inpainting_fill == 0:
        image = [fill(p.work_image, p.work_mask) for p in preps]
    else:
        image = [p.work_image for p in preps]
    noise_for = indices  # the variation seeds blend into the noise the pipeline adds …
    if strength >= 1 and variation.wanted(run.plan):
        # at full strength inpaint starts from the noise itself (no add_noise): hand it the blended noise
        channels, factor = pipe.vae.config.latent_channels, pipe.vae_scale_factor
        dtype = pipe.unet.dtype
        extra["latents"], gens = seeds.make_noise(run.plan, indices, (channels, req.height // factor,
                                                                     req.width // factor), dtype)
        noise_for = None  # … or, at full strength, it is that noise already
    out = sampling.call(
        run, pipe, part=iteration, steps_hint=hires.steps_run(req.steps, strength, run.fix_steps),
        image=image, mask_image=[p.work_mask for p in preps], strength=strength,
        num_inference_steps=hires.img2img_steps(req.steps, strength, run.fix_steps), **flow.guidance(run),
        generator=gens, width=req.width, height=req.height, output_type="pil", noise_for=noise_for, **extra,
    )
    return [composite(p, im) for p, im in zip(preps, out.images)]

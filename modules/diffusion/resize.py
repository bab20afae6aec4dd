"""A1111's img2img resize modes (params.RESIZE_MODES names them), shared by img2img and inpaint."""
from __future__ import annotations


def resize_image(mode: int, image, width: int, height: int):
    """A1111's resize modes 0-2 (3 resizes like 0 here; img2img upscales its latents instead)."""
    from PIL import Image

    lanczos = Image.Resampling.LANCZOS
    if mode not in (1, 2):
        return image.resize((width, height), lanczos)
    ratio, src_ratio = width / height, image.width / image.height
    cover = (ratio > src_ratio) if mode == 1 else (ratio < src_ratio)  # 1 covers the frame, 2 fits inside it
    w = width if cover else max(1, round(image.width * height / image.height))
    h = height if not cover else max(1, round(image.height * width / image.width))
    resized = image.resize((w, h), lanczos)
    out = Image.new(image.mode, (width, height))
    left, top = (width - w) // 2, (height - h) // 2
    out.paste(resized, (left, top))
    if mode == 2:  # fill the empty bands by stretching the picture's edge rows / columns
        if top > 0:
            out.paste(resized.crop((0, 0, w, 1)).resize((w, top)), (left, 0))
            out.paste(resized.crop((0, h - 1, w, h)).resize((w, height - top - h)), (left, top + h))
        if left > 0:
            out.paste(resized.crop((0, 0, 1, h)).resize((left, h)), (0, top))
            out.paste(resized.crop((w - 1, 0, w, h)).resize((width - left - w, h)), (left + w, top))
    return out

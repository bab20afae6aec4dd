"""PaliGemma's detect / segment text → objects with pixel boxes and full-size masks (parse.py for the
text, the VQ-VAE for the codes, masks.py to put each mask in its box)."""
from __future__ import annotations

from typing import TYPE_CHECKING

from modules.vision import masks, parse
from modules.vision.results import VisionObject

if TYPE_CHECKING:
    from modules.vision.vqvae import MaskDecoder


def objects_from_text(text: str, width: int, height: int, segment: bool, asked: list[str],
                      decoder: "MaskDecoder | None" = None) -> tuple[list[VisionObject], int]:
    """(objects, invalid): every valid object of `text`; with `segment`, each with its mask (one decoder
    call for all of them). An object written without a label is the one object asked for, if one was."""
    parsed = parse.parse_objects(text, width, height, segment=segment,
                                 default_label=asked[0] if len(asked) == 1 else "")
    maps = [None] * len(parsed.objects)
    if segment and parsed.objects:
        if decoder is None:
            raise ValueError("segment needs the mask decoder")
        maps = decoder.decode([o.codes for o in parsed.objects])
    objects = [VisionObject(label=o.label, box=list(o.box), box_normalized=list(o.bins),
                            mask=None if m is None else masks.paste(m, o.box, width, height))
               for o, m in zip(parsed.objects, maps)]
    return objects, parsed.invalid

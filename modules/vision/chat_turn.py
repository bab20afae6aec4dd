"""A free question about an image for an image+text chat model (Gemma 3): one user turn through the
model's own chat template, greedy, the prompt sliced off.

Duplication to remove: this is one turn of what the chat engine (modules/chat/, being built beside
this) does. When that engine's "chat" job kind lands, this file becomes a submission of one "chat" job
with these messages (through a submit callable in VisionServices, since a task never imports another
task) and the chat engine's template, system-prompt and streaming handling apply here too.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from modules.models.hf import LanguageModel


def messages(image, question: str) -> list[dict]:
    return [{"role": "user", "content": [{"type": "image", "image": image.convert("RGB")},
                                         {"type": "text", "text": question.strip()}]}]


def ask(lm: "LanguageModel", image, question: str, max_new_tokens: int, stop=None) -> str:
    import torch

    from modules.vision.paligemma import stopping

    inputs = lm.processor.apply_chat_template(messages(image, question), add_generation_prompt=True, tokenize=True,
                                              return_dict=True, return_tensors="pt").to(lm.model.device)
    if "pixel_values" in inputs:
        inputs["pixel_values"] = inputs["pixel_values"].to(lm.model.dtype)
    kwargs = {"stopping_criteria": [stopping(stop)]} if stop is not None else {}
    with torch.inference_mode():
        out = lm.model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, **kwargs)
    return lm.processor.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True).strip()

"""One PaliGemma answer: the task's prefix (big_vision's prompts), the input built by PaliGemmaProcessor
(image tokens, <bos>, the prefix, "\\n"), greedy generation, the prompt sliced off and the rest decoded
keeping <locNNNN> / <segNNN> (they are added tokens, not special ones, so skip_special_tokens keeps them
and drops only <eos> / <pad>)."""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from modules.models.hf import LanguageModel
    from modules.vision.params import VisionOptions


def prefix(req: "VisionOptions") -> str:
    """PaliGemma's prompt for the request's task (mix / pt checkpoints' own prefixes)."""
    task, lang = req.task, req.language
    if task == "caption":
        return f"caption {lang}"
    if task == "describe":
        return f"describe {lang}"
    if task == "ocr":
        return "ocr"
    if task == "answer":
        return f"answer {lang} {req.question.strip()}"
    if task in ("detect", "segment"):
        return f"{task} " + " ; ".join(req.objects)
    if task == "raw":
        return req.prompt.strip()
    raise ValueError(f"{task!r} is not a PaliGemma task")


def generate(lm: "LanguageModel", image, text: str, max_new_tokens: int, stop=None) -> str:
    """Greedy answer to `text` about `image`; `stop()` true ends generation after the current token."""
    import torch

    processor = lm.processor
    # "<image>" first tells the processor where the image goes; it expands it and adds <bos> and "\n".
    inputs = processor(images=image.convert("RGB"), text="<image>" + text, return_tensors="pt")
    inputs = inputs.to(lm.model.device)
    if "pixel_values" in inputs:
        inputs["pixel_values"] = inputs["pixel_values"].to(lm.model.dtype)
    kwargs = {}
    if stop is not None:
        kwargs["stopping_criteria"] = [stopping(stop)]
    with torch.inference_mode():
        out = lm.model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, **kwargs)
    new = out[0, inputs["input_ids"].shape[1]:]
    return processor.decode(new, skip_special_tokens=True).strip()


def stopping(stop):
    from transformers import StoppingCriteria

    class Stop(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            import torch

            return torch.full((input_ids.shape[0],), bool(stop()), dtype=torch.bool, device=input_ids.device)

    return Stop()

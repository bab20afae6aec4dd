"""The PaliGemma LoRA / QLoRA training process (`modules.training.paligemma_lora_main:train`, under
`accelerate launch`).

Each batch is built by the model's own PaliGemmaProcessor from (image, prefix, suffix): the image's
tokens, <bos>, the prefix and "\\n" are the prompt (labels -100, attended both ways, as PaliGemma was
trained), the suffix and <eos> the answer — the only labelled tokens. The vision tower and the
projector stay frozen (LoRA on them only with train_vision_tower); LoRA goes on the language
model's linear layers (all, or the attention projections), through the loop every kind shares
(checkpoints, Stop, exact resume; peft_train.py). The result is a PEFT adapter folder in
models/LLM-loras naming its base, which the Vision tab offers under that model; with save_merged also
the base with the adapter merged in, as a model folder of models/VLM.
"""
from __future__ import annotations

import re
from pathlib import Path

from modules import atomic
from modules.errors import InvalidRequest
from modules.training import loop as tl
from modules.training import peft_train
from modules.training.params import PaliGemmaLoraRequest

_ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")
_EAGER_TEXT_TYPES = ("gemma2",)  # PaliGemma 2: Gemma 2's logit soft-capping is only in the eager attention path


def target_modules(model, req: PaliGemmaLoraRequest) -> str:
    """A regex (peft full-matches it against module names) of the linear layers that get LoRA: the language
    model's chosen ones, plus every linear layer of the vision tower and the projector when they are trained.
    Built from the model's own modules, so the vision tower's layers of the same name stay out."""
    import torch.nn as nn

    scopes = ("language_model",) + (("vision_tower", "multi_modal_projector") if req.train_vision_tower else ())
    wanted = req.target_modules
    patterns, language_leaves = set(), set()
    for name, module in model.named_modules():
        parts = name.split(".")
        scope = next((s for s in scopes if s in parts), None)
        if scope is None or not isinstance(module, nn.Linear):  # bitsandbytes' Linear4bit is an nn.Linear too
            continue
        if scope == "language_model":
            language_leaves.add(parts[-1])
            if wanted == "attention" and parts[-1] not in _ATTENTION:
                continue
            if isinstance(wanted, list) and parts[-1] not in wanted:
                continue
        patterns.add(r"\.".join(r"\d+" if p.isdigit() else re.escape(p) for p in parts))
    if isinstance(wanted, list) and set(wanted) - language_leaves:
        raise InvalidRequest(f"the language model has no layers named {sorted(set(wanted) - language_leaves)}; "
                             f"it has {', '.join(sorted(language_leaves))}", "target_modules")
    return "^(?:" + "|".join(sorted(patterns)) + ")$"


def load_model(base: dict, req: PaliGemmaLoraRequest, accelerator):
    from transformers import AutoConfig, AutoProcessor, PaliGemmaForConditionalGeneration

    processor = AutoProcessor.from_pretrained(base["path"], local_files_only=True)
    processor.tokenizer.padding_side = "right"  # positions count from the first token: pad after the answer
    kwargs = peft_train.load_kwargs(req, accelerator)
    config = AutoConfig.from_pretrained(base["path"], local_files_only=True)
    if config.text_config.model_type in _EAGER_TEXT_TYPES:
        kwargs["attn_implementation"] = "eager"
    model = PaliGemmaForConditionalGeneration.from_pretrained(base["path"], config=config, **kwargs)
    targets = target_modules(model, req)
    return peft_train.with_lora(model, req, targets, accelerator), processor, kwargs["dtype"]


def collate(rows, processor, cutoff: int, dtype) -> dict:
    """A batch from the processor itself: labels on the suffix only (its token_type_ids), the rest -100."""
    from PIL import Image

    images = []
    for row in rows:
        with Image.open(row.image) as im:
            images.append(im.convert("RGB"))
    # "<image>" first, as at inference (modules/vision/paligemma.py): the processor expands it, adds <bos>, "\n".
    batch = processor(text=["<image>" + row.prefix for row in rows], images=images, suffix=[r.suffix for r in rows],
                      padding="longest", truncation="only_second", max_length=cutoff, return_tensors="pt")
    batch["pixel_values"] = batch["pixel_values"].to(dtype)
    return dict(batch)


def save_merged(base: dict, adapter: Path, output: Path, report) -> dict:
    """The base (at its own dtype) with the adapter merged in, as a model folder with the base's processor."""
    import shutil

    from peft import PeftModel
    from transformers import AutoProcessor, PaliGemmaForConditionalGeneration

    model = PaliGemmaForConditionalGeneration.from_pretrained(base["path"], dtype="auto", local_files_only=True)
    merged = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    temp = output.with_name(f".{output.name}.tmp")
    shutil.rmtree(temp, ignore_errors=True)
    merged.save_pretrained(str(temp), safe_serialization=True)
    AutoProcessor.from_pretrained(base["path"], local_files_only=True).save_pretrained(str(temp))
    atomic.replace_dir(temp, output)
    report.log(f"wrote the merged model {output.name}/ into {output.parent.name}/")
    return {"merged_output": str(output)}


def train(ctx, payload: dict) -> dict:
    from modules.training.paligemma_dataset import read_rows

    begun = tl.begin(ctx, payload, PaliGemmaLoraRequest)
    req, _run, accelerator, report, _started_at = begun
    model, processor, dtype = load_model(payload["base"], req, accelerator)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    vision = "LoRA on the vision tower and projector too" if req.train_vision_tower else \
        "vision tower and projector frozen"
    report.log(f"loaded {payload['base']['name']}{' in nf4 (QLoRA)' if req.quantization == 'nf4' else ''}; "
               f"LoRA rank {req.rank} on the language model's {req.target_modules} layers, {vision}: "
               f"{trainable:,} trainable parameters")
    examples = read_rows(Path(payload["dataset_dir"]), Path(payload["data_root"]), processor.tokenizer,
                         processor.image_seq_length, req.cutoff_len)
    rows = examples.rows
    return peft_train.fit(ctx, payload, begun, model, len(rows),
                          lambda batch: collate([rows[i] for i in batch], processor, req.cutoff_len, dtype),
                          examples.digest(), "image + prefix → suffix lines",
                          after_save=(lambda: save_merged(payload["base"], Path(payload["output"]),
                                                          Path(payload["merged_output"]), report))
                          if payload.get("merged_output") else None)

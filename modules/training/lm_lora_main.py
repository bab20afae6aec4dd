"""The LLM LoRA / QLoRA training process (`modules.training.lm_lora_main:train`, under `accelerate launch`).

The base loads with transformers (QLoRA: bitsandbytes nf4 with double quant, made ready for training
with peft's `prepare_model_for_kbit_training`), gets a peft LoraConfig adapter ("all-linear" by
default), trains on the assistant tokens of its own chat template (or raw text chunks) through the
same loop as every kind (checkpoints, Stop, exact resume; peft_train.py), and is saved as a PEFT
adapter folder in models/LLM-loras that names its base, so the Chat tab lists it under that model at once.
"""
from __future__ import annotations

import json
from pathlib import Path

from modules.training import loop as tl
from modules.training import peft_train
from modules.training.params import LmLoraRequest
from modules.training.runfolder import RunFolder


def load_model(base: dict, req: LmLoraRequest, accelerator):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base["path"], local_files_only=True)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(base["path"], **peft_train.load_kwargs(req, accelerator))
    return peft_train.with_lora(model, req, req.target_modules, accelerator), tokenizer


def collate(rows: list[tuple[list[int], list[int]]], pad_id: int):
    """Right-padded input ids, attention mask and labels (-100 on the padding)."""
    import torch

    from modules.training.lm_dataset import IGNORE

    width = max(len(ids) for ids, _ in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for n, (row_ids, row_labels) in enumerate(rows):
        ids[n, :len(row_ids)] = torch.tensor(row_ids)
        labels[n, :len(row_labels)] = torch.tensor(row_labels)
        mask[n, :len(row_ids)] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def sample_replies(model, tokenizer, req: LmLoraRequest, step: int, run: RunFolder, report, ctx, is_main) -> list:
    import torch

    if not req.sample_prompts or not is_main:
        return []
    was_training = model.training
    model.eval()
    lines = []
    try:
        for prompt in req.sample_prompts:
            text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                                 add_generation_prompt=True)
            ids = tokenizer(text, add_special_tokens=False, return_tensors="pt").input_ids.to(model.device)
            with torch.no_grad():  # greedy: sampling would draw from the RNG a resumed run must see unchanged
                out = model.generate(input_ids=ids, max_new_tokens=req.sample_max_new_tokens, do_sample=False,
                                     pad_token_id=tokenizer.pad_token_id)
            reply = tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
            lines.append({"step": step, "prompt": prompt, "reply": reply})
            ctx.emit({"sample": reply, "prompt": prompt, "step": step})
    finally:
        if was_training:
            model.train()
    path = run.samples / f"step-{step:06d}.jsonl"
    path.write_text("".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines), encoding="utf-8")
    report.preview(path)
    report.log(f"step {step}: {len(lines)} sample repl{'y' if len(lines) == 1 else 'ies'} in samples/")
    return [str(path)]


def train(ctx, payload: dict) -> dict:
    from modules.training.lm_dataset import read_examples

    begun = tl.begin(ctx, payload, LmLoraRequest)
    req, run, accelerator, report, _started_at = begun
    model, tokenizer = load_model(payload["base"], req, accelerator)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    report.log(f"loaded {payload['base']['name']}{' in nf4 (QLoRA)' if req.quantization == 'nf4' else ''}; "
               f"LoRA rank {req.rank} on {req.target_modules}: {trainable:,} trainable parameters")
    examples = read_examples(Path(payload["dataset_dir"]), tokenizer, req.format, req.cutoff_len, req.packing)
    rows, pad, main = examples.rows, tokenizer.pad_token_id, accelerator.is_main_process

    def samples(step: int) -> list[str]:
        return sample_replies(model, tokenizer, req, step, run, report, ctx, main)

    def every(step: int) -> list[str]:
        return samples(step) if req.sample_every and step % req.sample_every == 0 else []

    return peft_train.fit(ctx, payload, begun, model, len(rows), lambda batch: collate([rows[i] for i in batch], pad),
                          _digest(rows), f"{examples.format} rows", after_step=every, at_end=samples)


def _digest(rows) -> str:
    import hashlib

    h = hashlib.sha256()
    for ids, labels in rows:
        h.update(json.dumps([ids, labels]).encode())
    return h.hexdigest()[:16]

"""The LLM LoRA / QLoRA training process (`modules.training.lm_lora_main:train`, under `accelerate launch`).

The base loads with transformers (QLoRA: bitsandbytes nf4 with double quant, made ready for training
with peft's `prepare_model_for_kbit_training`), gets a peft LoraConfig adapter ("all-linear" by
default), trains on the assistant tokens of its own chat template (or raw text chunks) through the
same loop as every kind (checkpoints, Stop, exact resume), and is saved as a PEFT adapter folder
in models/LLM-loras that names its base, so the Chat tab lists it under that model at once.
"""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from modules import atomic
from modules.training import loop as tl
from modules.training.params import LmLoraRequest
from modules.training.plan import step_math
from modules.training.runfolder import RunFolder


def load_model(base: dict, req: LmLoraRequest, accelerator):
    import torch
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

    half = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(accelerator.mixed_precision)
    kwargs = {"dtype": half or torch.float32, "local_files_only": True}
    if req.quantization == "nf4":
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=req.double_quant,
            bnb_4bit_compute_dtype=half or torch.float32)
        if accelerator.device.type == "cuda":
            kwargs["device_map"] = {"": accelerator.local_process_index}
    tokenizer = AutoTokenizer.from_pretrained(base["path"], local_files_only=True)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(base["path"], **kwargs)
    model.config.use_cache = False
    if req.quantization == "nf4":
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=req.gradient_checkpointing)
    elif req.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    config = LoraConfig(r=req.rank, lora_alpha=req.alpha, lora_dropout=req.dropout, bias="none",
                        target_modules=req.target_modules, task_type="CAUSAL_LM")
    model = get_peft_model(model, config)
    if req.quantization != "nf4":
        model.to(accelerator.device)
    return model, tokenizer


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


class ShuffledBatches:
    """Batches of row indices, shuffled by (seed, epoch): the data order is a function of the step."""

    def __init__(self, count: int, batch_size: int, seed: int):
        self.count, self.batch_size, self.seed, self.epoch = count, batch_size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        import torch

        order = torch.randperm(self.count, generator=torch.Generator().manual_seed(self.seed * 7919 + self.epoch))
        order = order.tolist()
        return iter([order[i:i + self.batch_size] for i in range(0, self.count, self.batch_size)])

    def __len__(self) -> int:
        return -(-self.count // self.batch_size)


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


def save_adapter(model, base: dict, output: Path) -> None:
    """The PEFT folder, written beside its final place and renamed (a scan never sees half of it)."""
    temp = output.with_name(f".{output.name}.tmp")
    shutil.rmtree(temp, ignore_errors=True)
    model.save_pretrained(str(temp), safe_serialization=True)
    config_file = temp / "adapter_config.json"
    config = json.loads(config_file.read_text(encoding="utf-8"))
    config["base_model_name_or_path"] = base["name"]  # the registry lists it under this model (adapters_for)
    config_file.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    atomic.replace_dir(temp, output)


def train(ctx, payload: dict) -> dict:
    from diffusers.optimization import get_scheduler
    from torch.utils.data import DataLoader

    import torch

    from modules.training.lm_dataset import read_examples
    from modules.training.optimizers import build_optimizer

    req, run, accelerator, report, started_at = tl.begin(ctx, payload, LmLoraRequest)
    model, tokenizer = load_model(payload["base"], req, accelerator)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    report.log(f"loaded {payload['base']['name']}{' in nf4 (QLoRA)' if req.quantization == 'nf4' else ''}; "
               f"LoRA rank {req.rank} on {req.target_modules}: {trainable:,} trainable parameters")
    examples = read_examples(Path(payload["dataset_dir"]), tokenizer, req.format, req.cutoff_len, req.packing)
    rows = examples.rows
    steps = step_math(len(rows), len(rows), req.epochs, req.batch_size, req.gradient_accumulation,
                      max_steps=req.max_steps, processes=accelerator.num_processes)
    report.log(f"{len(rows)} {examples.format} rows; step math: {steps.formula}")
    sampler = ShuffledBatches(len(rows), req.batch_size, req.seed)
    pad = tokenizer.pad_token_id
    # Its own generator: a DataLoader draws a seed from the global RNG per iterator, which a resume would shift.
    loader = DataLoader(range(len(rows)), batch_sampler=sampler, num_workers=0, generator=torch.Generator(),
                        collate_fn=lambda batch: collate([rows[i] for i in batch], pad))
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = build_optimizer(req.optimizer, [{"params": params, "lr": req.learning_rate}], req.weight_decay)
    lr_scheduler = get_scheduler(req.lr_scheduler, optimizer=optimizer,
                                 num_warmup_steps=req.lr_warmup_steps * accelerator.num_processes,
                                 num_training_steps=steps.total_steps * accelerator.num_processes)
    prepared_model, optimizer, loader, lr_scheduler = accelerator.prepare(model, optimizer, loader, lr_scheduler)
    tl.register_lora_hooks(accelerator, {"model": model})
    state = tl.TrainerState(req.seed, accelerator.process_index, _digest(rows))
    accelerator.register_for_checkpointing(state)
    if req.resume:
        checkpoint = run.latest_checkpoint()
        if checkpoint is None:
            from modules.errors import InvalidRequest

            raise InvalidRequest(f"the run {run.name!r} has no checkpoint to resume from", "resume")
        tl.load_checkpoint(accelerator, checkpoint, state)
        report.log(f"resumed from {checkpoint.name} (step {state.step} of {steps.total_steps})")
    samples: list[str] = []

    def loss_of(batch: dict):
        return prepared_model(**batch).loss

    def after_step(step: int) -> None:
        if req.sample_every and step % req.sample_every == 0 and step < steps.total_steps:
            samples.extend(sample_replies(model, tokenizer, req, step, run, report, ctx, accelerator.is_main_process))

    prepared_model.train()
    trainer = tl.Loop(accelerator, ctx, run, state, report, models=[prepared_model], params=params,
                      optimizer=optimizer, lr_scheduler=lr_scheduler, loader=loader, sampler=sampler,
                      total_steps=steps.total_steps, request=req)
    loop_started, steps_before = time.monotonic(), state.step
    outcome = trainer.run_steps(loss_of, after_step)
    seconds = time.monotonic() - loop_started
    steady = trainer.steady_steps_per_s()
    result = {"run": str(run.root), "name": req.output_name, "steps": state.step, "total_steps": steps.total_steps,
              "outcome": outcome, "checkpoint": str(trainer.last_checkpoint) if trainer.last_checkpoint else None,
              "train_seconds": round(seconds, 3), "first_step_s": trainer.first_step_s,
              "steps_per_s": round((state.step - steps_before) / seconds, 4) if seconds > 0 else None,
              "steady_steps_per_s": steady, "output": None, "samples": samples, "trainable_parameters": trainable,
              "started_at": started_at}
    if outcome == "done":
        samples.extend(sample_replies(model, tokenizer, req, state.step, run, report, ctx, accelerator.is_main_process))
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            save_adapter(accelerator.unwrap_model(prepared_model), payload["base"], Path(payload["output"]))
            result["output"] = payload["output"]
            report.log(f"wrote the adapter {Path(payload['output']).name}/")
    return tl.finish(accelerator, run, result, report)


def _digest(rows) -> str:
    import hashlib

    h = hashlib.sha256()
    for ids, labels in rows:
        h.update(json.dumps([ids, labels]).encode())
    return h.hexdigest()[:16]

"""What the training processes that write a PEFT adapter folder share (LLM LoRA, PaliGemma LoRA): the
base's load arguments (QLoRA: bitsandbytes nf4, double quant), the LoRA wrapping, the data order, the
optimizer / schedule / checkpoint / resume wiring around loop.py's Loop, and the adapter folder
written atomically into models/LLM-loras naming its base (so the registry lists it under that model).
Runs in the training process (torch), under accelerate.
"""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Callable

from modules import atomic
from modules.training import loop as tl
from modules.training.params import PeftAdapterRequest
from modules.training.plan import step_math


def load_kwargs(req: PeftAdapterRequest, accelerator) -> dict:
    """from_pretrained's arguments: the training's dtype, and for QLoRA the nf4 config on this process's GPU."""
    import torch
    from transformers import BitsAndBytesConfig

    half = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(accelerator.mixed_precision)
    kwargs = {"dtype": half or torch.float32, "local_files_only": True}
    if req.quantization == "nf4":
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=req.double_quant,
            bnb_4bit_compute_dtype=half or torch.float32)
        if accelerator.device.type == "cuda":
            kwargs["device_map"] = {"": accelerator.local_process_index}
    return kwargs


def with_lora(model, req: PeftAdapterRequest, target_modules, accelerator):
    """The base made ready (QLoRA: peft's prepare_model_for_kbit_training; gradient checkpointing) and
    wrapped with a LoRA adapter on `target_modules` (peft's "all-linear", names, or a regex), on the device."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    model.config.use_cache = False
    if req.quantization == "nf4":
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=req.gradient_checkpointing)
    elif req.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    config = LoraConfig(r=req.rank, lora_alpha=req.alpha, lora_dropout=req.dropout, bias="none",
                        target_modules=target_modules, task_type="CAUSAL_LM")
    model = get_peft_model(model, config)
    if req.quantization != "nf4":
        model.to(accelerator.device)
    return model


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


def peak_rss_bytes() -> int:
    """This training process's peak resident memory (it runs alone in its process: the training's peak)."""
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)  # bytes on macOS, KiB on Linux


def fit(ctx, payload: dict, begun: tuple, model, rows: int, collate: Callable[[list[int]], dict], digest: str,
        rows_text: str, after_step: Callable[[int], list[str]] | None = None,
        at_end: Callable[[int], list[str]] | None = None, after_save: Callable[[], dict] | None = None) -> dict:
    """Train `model` (a peft model) on `rows` examples batched by `collate(indices)` through loop.py's Loop,
    resume from the run's latest checkpoint when asked, save the adapter when done; returns the job's result.
    `after_step(step)` / `at_end(step)` return the sample files they wrote; `after_save()` (rank 0, once the
    adapter is written) returns what it adds to the result."""
    import torch
    from diffusers.optimization import get_scheduler
    from torch.utils.data import DataLoader

    from modules.training.optimizers import build_optimizer

    req, run, accelerator, report, started_at = begun
    steps = step_math(rows, rows, req.epochs, req.batch_size, req.gradient_accumulation,
                      max_steps=req.max_steps, processes=accelerator.num_processes)
    report.log(f"{rows} {rows_text}; step math: {steps.formula}")
    sampler = ShuffledBatches(rows, req.batch_size, req.seed)
    # Its own generator: a DataLoader draws a seed from the global RNG per iterator, which a resume would shift.
    loader = DataLoader(range(rows), batch_sampler=sampler, num_workers=0, generator=torch.Generator(),
                        collate_fn=collate)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = build_optimizer(req.optimizer, [{"params": params, "lr": req.learning_rate}], req.weight_decay)
    lr_scheduler = get_scheduler(req.lr_scheduler, optimizer=optimizer,
                                 num_warmup_steps=req.lr_warmup_steps * accelerator.num_processes,
                                 num_training_steps=steps.total_steps * accelerator.num_processes)
    prepared_model, optimizer, loader, lr_scheduler = accelerator.prepare(model, optimizer, loader, lr_scheduler)
    tl.register_lora_hooks(accelerator, {"model": model})
    state = tl.TrainerState(req.seed, accelerator.process_index, digest)
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

    def step_done(step: int) -> None:
        if after_step is not None and step < steps.total_steps:
            samples.extend(after_step(step))

    prepared_model.train()
    trainer = tl.Loop(accelerator, ctx, run, state, report, models=[prepared_model], params=params,
                      optimizer=optimizer, lr_scheduler=lr_scheduler, loader=loader, sampler=sampler,
                      total_steps=steps.total_steps, request=req)
    loop_started, steps_before = time.monotonic(), state.step
    outcome = trainer.run_steps(loss_of, step_done)
    seconds = time.monotonic() - loop_started
    trainable = sum(p.numel() for p in params)
    result = {"run": str(run.root), "name": req.output_name, "steps": state.step, "total_steps": steps.total_steps,
              "outcome": outcome, "checkpoint": str(trainer.last_checkpoint) if trainer.last_checkpoint else None,
              "train_seconds": round(seconds, 3), "first_step_s": trainer.first_step_s,
              "steps_per_s": round((state.step - steps_before) / seconds, 4) if seconds > 0 else None,
              "steady_steps_per_s": trainer.steady_steps_per_s(), "output": None, "samples": samples,
              "trainable_parameters": trainable, "started_at": started_at}
    if outcome == "done":
        if at_end is not None:
            samples.extend(at_end(state.step))
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            save_adapter(accelerator.unwrap_model(prepared_model), payload["base"], Path(payload["output"]))
            result["output"] = payload["output"]
            report.log(f"wrote the adapter {Path(payload['output']).name}/")
            if after_save is not None:
                result.update(after_save())
    result["peak_rss_bytes"] = peak_rss_bytes()
    return tl.finish(accelerator, run, result, report)

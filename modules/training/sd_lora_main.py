"""The SD LoRA training process (`modules.training.sd_lora_main:train`, run under `accelerate launch`).

In order: the Accelerator (device and processes from the launcher), the base checkpoint with LoRA
adapters, the dataset (buckets, caches), optimizer and LR schedule, accelerate's prepare, the
checkpoint to resume from, the loop (checkpoints, samples, Stop), the kohya-format file.
"""
from __future__ import annotations

import time
from pathlib import Path

from modules.training import loop as tl
from modules.training.dataset import scan_dataset
from modules.training.params import SdLoraRequest
from modules.training.plan import step_math


def train(ctx, payload: dict) -> dict:
    import torch
    from diffusers.optimization import get_scheduler

    from modules.training import kohya
    from modules.training.buckets import bucket_counts
    from modules.training.optimizers import build_optimizer
    from modules.training.sd_data import BucketBatchSampler, LatentSource, SdDataset, TextSource, make_loader
    from modules.training.sd_model import add_loras, load_parts, training_loss
    from modules.training.sd_sample import sample_images

    req, run, accelerator, report, started_at = tl.begin(ctx, payload, SdLoraRequest)
    dtype = tl.weight_dtype(accelerator)
    device = accelerator.device

    parts = load_parts(payload["base"], payload["data_root"])
    groups = add_loras(parts, req, device, dtype)
    report.log(f"loaded {payload['base']['name']} ({parts.arch.upper()}); LoRA rank {req.rank}, "
               f"alpha {req.network_alpha:g} on the UNet{' and text encoder' if req.train_text_encoder else ''}")

    scan = scan_dataset(Path(payload["dataset_dir"]), req.default_caption)
    data = SdDataset(scan, req.resolution, req.bucketing, report.log)
    if not data.items:
        from modules.errors import InvalidRequest

        raise InvalidRequest("no image of the dataset could be read", "dataset")
    latents = LatentSource(data, parts.vae, device, req.cache_latents)
    latents.prepare(report.log)
    texts = TextSource(parts, data, device, req.cache_text_encoder_outputs and not req.train_text_encoder)
    texts.prepare(report.log)
    if req.cache_latents:
        parts.vae.to("cpu")  # no longer needed on the device (samples bring it back for a moment)
    if texts.cache:
        for encoder in parts.text_encoders:
            encoder.to("cpu")

    buckets = bucket_counts([(i.width, i.height, i.repeats) for i in data.items], req.resolution, req.bucketing)
    steps = step_math(len(data.items), len(data.samples), req.epochs, req.batch_size, req.gradient_accumulation,
                      list(buckets.values()), max_steps=req.max_steps, processes=accelerator.num_processes)
    report.log(f"step math: {steps.formula}")
    sampler = BucketBatchSampler(data.samples, req.batch_size, req.seed)
    optimizer = build_optimizer(req.optimizer, groups, req.weight_decay)
    lr_scheduler = get_scheduler(req.lr_scheduler, optimizer=optimizer,
                                 num_warmup_steps=req.lr_warmup_steps * accelerator.num_processes,
                                 num_training_steps=steps.total_steps * accelerator.num_processes)
    trained_names = list(parts.trained)
    prepared = accelerator.prepare(*parts.trained.values(), optimizer, make_loader(data, sampler), lr_scheduler)
    models = list(prepared[:len(trained_names)])
    optimizer, loader, lr_scheduler = prepared[len(trained_names):]
    tl.register_lora_hooks(accelerator, dict(parts.trained))
    state = tl.TrainerState(req.seed, accelerator.process_index, scan.digest())
    accelerator.register_for_checkpointing(state)
    if req.resume:
        checkpoint = run.latest_checkpoint()
        if checkpoint is None:
            from modules.errors import InvalidRequest

            raise InvalidRequest(f"the run {run.name!r} has no checkpoint to resume from", "resume")
        tl.load_checkpoint(accelerator, checkpoint, state)
        report.log(f"resumed from {checkpoint.name} (step {state.step} of {steps.total_steps})")

    unet = models[0]
    encoders = [models[trained_names.index(n)] if n in trained_names else e
                for n, e in zip(("text_encoder", "text_encoder_2"), parts.text_encoders)]
    params = [p for group in groups for p in group["params"]]

    def loss_of(batch: list[int]):
        items = [data.samples[i].item for i in batch]
        lat = latents.latents(items, state.generator, dtype)
        hidden, pooled = texts.conditioning(items, encoders, dtype)
        time_ids = latents.sizes(items, device, dtype) if parts.is_sdxl else None
        return training_loss(parts, unet, lat, hidden, pooled, time_ids, state.generator, req)

    samples: list[str] = []

    def after_step(step: int) -> None:
        if req.sample_every and step % req.sample_every == 0 and step < steps.total_steps:
            samples.extend(sample_images(parts, req, accelerator, step, run, report))

    for module in models:
        module.train()
    trainer = tl.Loop(accelerator, ctx, run, state, report, models=models, params=params, optimizer=optimizer,
                      lr_scheduler=lr_scheduler, loader=loader, sampler=sampler, total_steps=steps.total_steps,
                      request=req)
    loop_started = time.monotonic()
    steps_before = state.step
    outcome = trainer.run_steps(loss_of, after_step)
    seconds = time.monotonic() - loop_started
    steady = trainer.steady_steps_per_s()
    result = {"run": str(run.root), "name": req.output_name, "steps": state.step, "total_steps": steps.total_steps,
              "outcome": outcome, "checkpoint": str(trainer.last_checkpoint) if trainer.last_checkpoint else None,
              "train_seconds": round(seconds, 3), "first_step_s": trainer.first_step_s,
              "steps_per_s": round((state.step - steps_before) / seconds, 4) if seconds > 0 else None,
              "steady_steps_per_s": steady, "output": None, "samples": samples}
    if outcome == "done":
        samples.extend(sample_images(parts, req, accelerator, state.step, run, report))
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            unwrapped = [accelerator.unwrap_model(m) for m in models]
            encoders_trained = unwrapped[1:] if req.train_text_encoder else []
            tensors = kohya.kohya_state_dict(unwrapped[0], encoders_trained, parts.arch, req.network_alpha)
            meta = kohya.metadata(req, payload["base"], parts.arch, scan, state.step, state.epoch + 1, started_at,
                                  req.resolution, buckets)
            kohya.write_lora(Path(payload["output"]), tensors, meta)
            result["output"] = payload["output"]
            report.log(f"wrote {Path(payload['output']).name} ({len(tensors)} tensors)")
    if torch.cuda.is_available():
        result["peak_memory_bytes"] = torch.cuda.max_memory_allocated()
    accelerator.end_training()
    if accelerator.is_main_process:
        tl.write_result_json(run, result)
    report.close()
    return result

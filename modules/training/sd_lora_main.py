"""The SD LoRA training process (`modules.training.sd_lora_main:train`, run under `accelerate launch`).

In order: the Accelerator (device and processes from the launcher), the base checkpoint with LoRA
adapters, the dataset (buckets, caches), optimizer and LR schedule, accelerate's prepare, the
checkpoint to resume from, the loop (checkpoints, samples, Stop), the kohya-format file.
"""
from __future__ import annotations

from pathlib import Path

from modules.training import loop as tl
from modules.training import sd_train
from modules.training.dataset import scan_dataset
from modules.training.params import SdLoraRequest
from modules.training.plan import step_math


def train(ctx, payload: dict) -> dict:
    from modules.training.buckets import bucket_counts
    from modules.training.sd_data import BucketBatchSampler, make_loader
    from modules.training.sd_model import add_loras, load_parts, training_loss

    req, run, accelerator, report, started_at = tl.begin(ctx, payload, SdLoraRequest)
    dtype = tl.weight_dtype(accelerator)
    device = accelerator.device

    parts = load_parts(payload["base"], payload["data_root"])
    groups = add_loras(parts, req, device, dtype)
    report.log(f"loaded {payload['base']['name']} ({parts.arch.upper()}); LoRA rank {req.rank}, "
               f"alpha {req.network_alpha:g} on the UNet{' and text encoder' if req.train_text_encoder else ''}")

    scan = scan_dataset(Path(payload["dataset_dir"]), req.default_caption)
    src = sd_train.sources(scan, req, parts, device, report)
    data, latents, texts = src.data, src.latents, src.texts
    sd_train.park_cached_parts(parts, req, texts)

    buckets = bucket_counts([(i.width, i.height, i.repeats) for i in data.items], req.resolution, req.bucketing)
    steps = step_math(len(data.items), len(data.samples), req.epochs, req.batch_size, req.gradient_accumulation,
                      list(buckets.values()), max_steps=req.max_steps, processes=accelerator.num_processes)
    report.log(f"step math: {steps.formula}")
    sampler = BucketBatchSampler(data.samples, req.batch_size, req.seed)
    prep = sd_train.prepare(accelerator, parts, groups, req, steps.total_steps, make_loader(data, sampler))
    models = prep.models
    tl.register_lora_hooks(accelerator, dict(parts.trained))
    state = tl.TrainerState(req.seed, accelerator.process_index, scan.digest())
    accelerator.register_for_checkpointing(state)
    sd_train.resume(req, run, accelerator, state, report, steps.total_steps)

    unet = models[0]

    def loss_of(batch: list[int]):
        items = [data.samples[i].item for i in batch]
        lat = latents.latents(items, state.generator, dtype)
        hidden, pooled = texts.conditioning(items, prep.encoders, dtype)
        time_ids = latents.sizes(items, device, dtype) if parts.is_sdxl else None
        return training_loss(parts, unet, lat, hidden, pooled, time_ids, state.generator, req)

    result = sd_train.run_loop(ctx, accelerator, run, state, report, parts, req, prep, sampler, steps.total_steps,
                               loss_of)
    if result["outcome"] == "done" and accelerator.is_main_process:
        count = sd_train.write_kohya_lora(accelerator, models, parts, req, payload, scan, state, started_at,
                                          buckets)
        result["output"] = payload["output"]
        report.log(f"wrote {Path(payload['output']).name} ({count} tensors)")
    return tl.finish(accelerator, run, result, report)

"""The DreamBooth training process (`modules.training.dreambooth_main:train`, under `accelerate launch`).

As the SD LoRA process (sd_train.py holds the shared steps), with three differences: mode "full"
trains the UNet's (and text encoder's) own weights instead of LoRA adapters; with prior preservation
each batch of instance samples trains beside as many class images (square crops at the resolution,
diffusers' way), taken in a fixed rotation that is a function of (seed, epoch, sample), so a resume
sees the same pairs; the result is a kohya LoRA or a new checkpoint (full_checkpoint.py).
"""
from __future__ import annotations

import hashlib
from pathlib import Path

from modules.training import loop as tl
from modules.training import sd_train
from modules.training.dataset import scan_dataset
from modules.training.params import DreamBoothRequest
from modules.training.plan import step_math


class ClassRotation:
    """Which class image trains beside instance sample `s` in epoch `e`: the class images in one shuffled
    order, walked on by one per sample, so every class image is used before any is used again."""

    def __init__(self, count: int, samples_per_epoch: int, seed: int):
        import torch

        self.order = torch.randperm(count, generator=torch.Generator().manual_seed(seed * 31 + 17)).tolist()
        self.samples_per_epoch = samples_per_epoch

    def __call__(self, epoch: int, samples: list[int]) -> list[int]:
        return [self.order[(epoch * self.samples_per_epoch + s) % len(self.order)] for s in samples]


def train(ctx, payload: dict) -> dict:
    from modules.training.buckets import bucket_counts
    from modules.training.sd_data import BucketBatchSampler, make_loader
    from modules.training.sd_model import add_full, add_loras, load_parts, prior_preservation_loss, training_loss

    req, run, accelerator, report, started_at = tl.begin(ctx, payload, DreamBoothRequest)
    dtype = tl.weight_dtype(accelerator)
    device = accelerator.device

    parts = load_parts(payload["base"], payload["data_root"])
    groups = (add_loras if req.mode == "lora" else add_full)(parts, req, device, dtype)
    trained = f"LoRA rank {req.rank}, alpha {req.network_alpha:g}" if req.mode == "lora" else "full fine-tune"
    report.log(f"loaded {payload['base']['name']} ({parts.arch.upper()}); DreamBooth, {trained} of the UNet"
               f"{' and text encoder' if req.train_text_encoder else ''}")

    scan = scan_dataset(Path(payload["dataset_dir"]), req.instance_prompt)
    inst = sd_train.sources(scan, req, parts, device, report)
    digest = scan.digest()
    prior = None
    if req.prior_preservation:
        class_scan = scan_dataset(Path(payload["class_dir"]), req.class_prompt)
        class_scan.items = class_scan.items[:req.num_class_images]  # the first ones, by name (diffusers: the same)
        prior = sd_train.sources(class_scan, req, parts, device, report, bucketing=False, field="class_dataset")
        digest = hashlib.sha256(f"{digest}\0{class_scan.digest()}".encode()).hexdigest()[:16]
        report.log(f"prior preservation: {len(prior.data.items)} class images (\"{req.class_prompt}\"), "
                   f"loss weight {req.prior_loss_weight:g}")
    sd_train.park_cached_parts(parts, req, inst.texts)

    data = inst.data
    buckets = bucket_counts([(i.width, i.height, i.repeats) for i in data.items], req.resolution, req.bucketing)
    steps = step_math(len(data.items), len(data.samples), req.epochs, req.batch_size, req.gradient_accumulation,
                      list(buckets.values()), class_images=prior is not None, max_steps=req.max_steps,
                      processes=accelerator.num_processes)
    report.log(f"step math: {steps.formula}")
    sampler = BucketBatchSampler(data.samples, req.batch_size, req.seed)
    prep = sd_train.prepare(accelerator, parts, groups, req, steps.total_steps, make_loader(data, sampler))
    models = prep.models
    if req.mode == "lora":
        tl.register_lora_hooks(accelerator, dict(parts.trained))  # full: accelerate saves the whole models
    state = tl.TrainerState(req.seed, accelerator.process_index, digest)
    accelerator.register_for_checkpointing(state)
    sd_train.resume(req, run, accelerator, state, report, steps.total_steps)

    unet = models[0]
    rotation = ClassRotation(len(prior.data.items), len(data.samples), req.seed) if prior else None

    def conditioning(source: sd_train.Sources, items: list[int]) -> tuple:
        lat = source.latents.latents(items, state.generator, dtype)
        hidden, pooled = source.texts.conditioning(items, prep.encoders, dtype)
        return lat, hidden, pooled, source.latents.sizes(items, device, dtype) if parts.is_sdxl else None

    def loss_of(batch: list[int]):
        instance = conditioning(inst, [data.samples[i].item for i in batch])
        if prior is None:
            return training_loss(parts, unet, *instance, state.generator, req)
        classes = conditioning(prior, rotation(state.epoch, batch))
        return prior_preservation_loss(parts, unet, instance, classes, state.generator, req)

    result = sd_train.run_loop(ctx, accelerator, run, state, report, parts, req, prep, sampler, steps.total_steps,
                               loss_of)
    if result["outcome"] == "done" and accelerator.is_main_process:
        result["output"] = payload["output"]
        result["files"] = _write_output(accelerator, models, parts, req, payload, scan, state, started_at,
                                        buckets, len(prior.data.items) if prior else 0)
        report.log("wrote " + ", ".join(Path(f).name for f in result["files"]))
    return tl.finish(accelerator, run, result, report)


def _write_output(accelerator, models, parts, req: DreamBoothRequest, payload: dict, scan, state, started_at: float,
                  buckets: dict, class_images: int) -> list[str]:
    from modules.training import kohya

    meta = {"ss_training_comment": "DreamBooth, trained in Atelier", "ss_num_reg_images": str(class_images),
            "ss_prior_loss_weight": str(req.prior_loss_weight if class_images else 0),
            "ss_instance_prompt": req.instance_prompt, "ss_class_prompt": req.class_prompt if class_images else ""}
    if req.mode == "lora":
        sd_train.write_kohya_lora(accelerator, models, parts, req, payload, scan, state, started_at, buckets, meta)
        return [payload["output"]]
    from modules.training.dreambooth_check import full_outputs
    from modules.training.full_checkpoint import write_checkpoint

    single, folder, sidecar = full_outputs(Path(payload["output"]).parent, req.output_name)
    base = payload["base"]
    meta |= {"ss_sd_model_name": base.get("name", ""), "ss_new_sd_model_hash": base.get("sha256") or "",
             "ss_base_model_version": kohya.BASE_VERSIONS.get(parts.arch, parts.arch), "ss_steps": str(state.step),
             "ss_seed": str(req.seed), "ss_learning_rate": str(req.unet_lr),
             "ss_resolution": f"({req.resolution}, {req.resolution})"}
    return [str(p) for p in write_checkpoint(parts.pipe, single, folder, sidecar, meta)]

"""The steps the SD trainings' processes share (sd_lora_main, dreambooth_main), in their order: a
dataset's sources (images in buckets, latent and text caches), the parts left on the CPU once cached,
optimizer + LR schedule + accelerate's prepare, the resume, the loop and its result."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass
class Sources:
    data: object  # SdDataset
    latents: object  # LatentSource
    texts: object  # TextSource


def sources(scan, request, parts, device, report, bucketing: bool | None = None, field: str = "dataset") -> Sources:
    """Images resized into their buckets (`bucketing` None: the request's), latents and captions encoded
    once when cached."""
    from modules.errors import InvalidRequest
    from modules.training.sd_data import LatentSource, SdDataset, TextSource

    data = SdDataset(scan, request.resolution, request.bucketing if bucketing is None else bucketing, report.log)
    if not data.items:
        raise InvalidRequest(f"no image of {scan.folder.name}/ could be read", field)
    latents = LatentSource(data, parts.vae, device, request.cache_latents)
    latents.prepare(report.log)
    texts = TextSource(parts, data, device, request.cache_text_encoder_outputs and not request.train_text_encoder)
    texts.prepare(report.log)
    return Sources(data, latents, texts)


def park_cached_parts(parts, request, texts) -> None:
    """What the caches replace waits on the CPU (samples bring it back for a moment)."""
    if request.cache_latents:
        parts.vae.to("cpu")
    if texts.cache:
        for encoder in parts.text_encoders:
            encoder.to("cpu")


@dataclass
class Prepared:
    models: list  # the trained modules, as accelerate prepared them (UNet first)
    encoders: list  # every text encoder: the prepared one when it is trained
    params: list
    optimizer: object
    loader: object
    lr_scheduler: object


def prepare(accelerator, parts, groups: list[dict], request, total_steps: int, loader) -> Prepared:
    from diffusers.optimization import get_scheduler

    from modules.training.optimizers import build_optimizer

    optimizer = build_optimizer(request.optimizer, groups, request.weight_decay)
    lr_scheduler = get_scheduler(request.lr_scheduler, optimizer=optimizer,
                                 num_warmup_steps=request.lr_warmup_steps * accelerator.num_processes,
                                 num_training_steps=total_steps * accelerator.num_processes)
    names = list(parts.trained)
    prepared = accelerator.prepare(*parts.trained.values(), optimizer, loader, lr_scheduler)
    models = list(prepared[:len(names)])
    optimizer, loader, lr_scheduler = prepared[len(names):]
    encoders = [models[names.index(n)] if n in names else e
                for n, e in zip(("text_encoder", "text_encoder_2"), parts.text_encoders)]
    params = [p for group in groups for p in group["params"]]
    return Prepared(models, encoders, params, optimizer, loader, lr_scheduler)


def resume(request, run, accelerator, state, report, total_steps: int) -> None:
    from modules.training import loop as tl

    if not request.resume:
        return
    checkpoint = run.latest_checkpoint()
    if checkpoint is None:
        from modules.errors import InvalidRequest

        raise InvalidRequest(f"the run {run.name!r} has no checkpoint to resume from", "resume")
    tl.load_checkpoint(accelerator, checkpoint, state)
    report.log(f"resumed from {checkpoint.name} (step {state.step} of {total_steps})")


def run_loop(ctx, accelerator, run, state, report, parts, request, prep: Prepared, sampler, total_steps: int,
             loss_of) -> dict:
    """The steps (samples every `sample_every`, checkpoints, Stop), then the last samples when it ran to the
    end; the result without its output (the caller writes that on rank 0 when the outcome is "done")."""
    import time

    from modules.training import loop as tl
    from modules.training.sd_sample import sample_images

    samples: list[str] = []

    def after_step(step: int) -> None:
        if request.sample_every and step % request.sample_every == 0 and step < total_steps:
            samples.extend(sample_images(parts, request, accelerator, step, run, report))

    for module in prep.models:
        module.train()
    trainer = tl.Loop(accelerator, ctx, run, state, report, models=prep.models, params=prep.params,
                      optimizer=prep.optimizer, lr_scheduler=prep.lr_scheduler, loader=prep.loader, sampler=sampler,
                      total_steps=total_steps, request=request)
    started, steps_before = time.monotonic(), state.step
    outcome = trainer.run_steps(loss_of, after_step)
    seconds = time.monotonic() - started
    result_ = {"run": str(run.root), "name": request.output_name, "steps": state.step, "total_steps": total_steps,
               "outcome": outcome, "checkpoint": str(trainer.last_checkpoint) if trainer.last_checkpoint else None,
               "train_seconds": round(seconds, 3), "first_step_s": trainer.first_step_s,
               "steps_per_s": round((state.step - steps_before) / seconds, 4) if seconds > 0 else None,
               "steady_steps_per_s": trainer.steady_steps_per_s(), "output": None, "samples": samples}
    if outcome == "done":
        samples.extend(sample_images(parts, request, accelerator, state.step, run, report))
        accelerator.wait_for_everyone()
    return result_


def write_kohya_lora(accelerator, models: list, parts, request, payload: dict, scan, state, started_at: float,
                     buckets: dict, extra_meta: dict | None = None) -> int:
    """The trained LoRA as a kohya-format file at payload["output"] (rank 0); returns its tensor count."""
    from modules.training import kohya

    unwrapped = [accelerator.unwrap_model(m) for m in models]
    encoders_trained = unwrapped[1:] if request.train_text_encoder else []
    tensors = kohya.kohya_state_dict(unwrapped[0], encoders_trained, parts.arch, request.network_alpha)
    meta = kohya.metadata(request, payload["base"], parts.arch, scan, state.step, state.epoch + 1, started_at,
                          request.resolution, buckets) | (extra_meta or {})
    kohya.write_lora(Path(payload["output"]), tensors, meta)
    return len(tensors)

"""The step math the Train tab shows before Start, and the training loop follows.

images x repeats x epochs gives the samples (x 2 with DreamBooth's class images: each batch of
instance samples trains with as many class images beside it, as diffusers' train_dreambooth.py
pairs them, so the class images double the images seen, not the steps); batches are made within
each aspect-ratio bucket, so a bucket's last batch may be short; an optimizer step takes
`gradient_accumulation` batches; several GPUs share the batches.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class StepMath:
    images: int
    samples_per_epoch: int  # images x repeats (x 2 with class images: what the UNet sees an epoch)
    epochs: int
    batch_size: int
    gradient_accumulation: int
    processes: int
    batches_per_epoch: int  # per process
    steps_per_epoch: int  # optimizer steps
    total_steps: int
    max_steps: int | None
    formula: str

    def to_json(self) -> dict:
        return asdict(self)


def step_math(images: int, samples_per_epoch: int, epochs: int, batch_size: int, gradient_accumulation: int = 1,
              bucket_samples: list[int] | None = None, class_images: bool = False, max_steps: int | None = None,
              processes: int = 1) -> StepMath:
    """Optimizer steps for a dataset; `bucket_samples` (samples per bucket) makes batches per bucket."""
    samples = samples_per_epoch * (2 if class_images else 1)
    batches = sum(math.ceil(n / batch_size) for n in (bucket_samples or [samples_per_epoch]))
    batches_per_process = math.ceil(batches / max(1, processes))
    steps_per_epoch = max(1, math.ceil(batches_per_process / gradient_accumulation)) if samples else 0
    total = max_steps if max_steps else epochs * steps_per_epoch
    repeats = f"{samples_per_epoch / images:g}" if images else "0"
    parts = [f"{images} images x {repeats} repeats"] + (["x 2 (class images)"] if class_images else [])
    parts += [f"x {epochs} epochs", f"/ batch {2 * batch_size} ({batch_size} instance + {batch_size} class)"
              if class_images else f"/ batch {batch_size}"]
    if gradient_accumulation > 1:
        parts.append(f"/ accumulation {gradient_accumulation}")
    if processes > 1:
        parts.append(f"/ {processes} GPUs")
    formula = " ".join(parts) + f" = {epochs * steps_per_epoch} steps"
    if max_steps:
        formula += f"; max_steps {max_steps} decides: {max_steps} steps"
    return StepMath(images, samples, epochs, batch_size, gradient_accumulation, processes, batches_per_process,
                    steps_per_epoch, total, max_steps, formula)


def epochs_needed(math_: StepMath) -> int:
    """Epochs the loop runs (max_steps may end inside one, or need more than `epochs`)."""
    if math_.steps_per_epoch <= 0:
        return 0
    return math.ceil(math_.total_steps / math_.steps_per_epoch)

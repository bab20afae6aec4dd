"""Figures: SD LoRA training steps/s vs a plain diffusers + peft loop, and the process-backed job's
start-to-first-step overhead.

"Ours" is the studio's own training job (a child process under `accelerate launch`); its steps/s
is the training loop's, as the process reports it (loading and caching are before the loop). The
plain loop is written the way diffusers' examples/text_to_image/train_text_to_image_lora.py is: an
Accelerator, peft's LoraConfig on the UNet's attention, AdamW, a constant schedule, and per step
VAE encode → noise → text encoder → UNet → MSE → backward → clip → step. Same model (a random-weights
SD1.5-size checkpoint), same images (256x256), batch 1, rank 4, fp32 (the CPU) or fp16 (CUDA).
Ours runs twice: without caches (≥ 1.0x) and with latent + text-encoder caching on (≥ 1.3x).
"""
from __future__ import annotations

import shutil
import time
from pathlib import Path

from bench.common import Figure

RESOLUTION, RANK, IMAGES = 256, 4, 4
TITLE_PLAIN = "SD LoRA train steps/s, no caches, vs plain diffusers+peft loop"
TITLE_CACHED = "SD LoRA train steps/s, latent+TE caching, vs plain diffusers+peft loop"
TITLE_OVERHEAD = "training job: submit to first step (demo model, child process)"


def run(device: str, quick: bool, log=print) -> list[Figure]:
    from bench.sd15 import ensure_sd15_folder
    from bench.studio_setup import demo_folder, make_data_dir, open_studio

    try:
        sd15 = ensure_sd15_folder(log)
        root = make_data_dir(demo_folder(), sd15, name="training")  # the demo sorts first: it is what loads at start
        _images(root / "datasets" / "bench")
        studio = open_studio(root, device)
    except Exception as exc:  # report why, never a made-up number
        why = f"{type(exc).__name__}: {exc}"[:400]
        return [Figure.missing(k, t, why) for k, t in (("train_nocache", TITLE_PLAIN), ("train_cached", TITLE_CACHED),
                                                         ("train_overhead", TITLE_OVERHEAD))]
    try:
        figures = [_overhead(studio, log)]
        figures += _steps(studio, sd15, root, device, quick, log)
        return figures
    finally:
        studio.shutdown()
        shutil.rmtree(root, ignore_errors=True)


def _images(folder: Path) -> None:
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(IMAGES):
        Image.fromarray(rng.integers(0, 255, (RESOLUTION, RESOLUTION, 3), dtype=np.uint8)).save(folder / f"{i}.png")
        (folder / f"{i}.txt").write_text(f"a photo of thing number {i}", encoding="utf-8")


def _request(name: str, base: str, steps: int, device: str, **extra) -> dict:
    return {"kind": "sd_lora", "output_name": name, "overwrite": True, "dataset": "datasets/bench",
            "base_model": base, "resolution": RESOLUTION, "rank": RANK, "max_steps": steps, "batch_size": 1,
            "mixed_precision": "fp16" if device == "cuda" else "no", "max_grad_norm": 1.0, **extra}


def _train(studio, request: dict) -> dict:
    from modules.training.params import parse

    job = studio.jobs.run("train_sd_lora", parse(request), timeout=3600)
    job.raise_for_error()
    return job.result


def _overhead(studio, log) -> Figure:
    from modules.models.demo import DEMO_NAME
    from modules.training.params import parse

    samples, detail = [], {}
    for rep in range(2):
        start = time.perf_counter()
        job = studio.submit("train_sd_lora", parse({**_request(f"overhead{rep}", DEMO_NAME, 2, "cpu"),
                                                    "resolution": 64, "mixed_precision": "no"}))
        while job.progress.step < 1 and not job.state.finished:
            time.sleep(0.01)
        samples.append(time.perf_counter() - start)
        job.wait(600)
        job.raise_for_error()
        detail[f"rep{rep}_child_first_step_s"] = job.result["first_step_s"]
    log(f"  submit → first step: {samples}")
    return Figure.from_samples("train_overhead", TITLE_OVERHEAD, samples, unit="s",
                               target="reported (no target)", **detail)


def _steps(studio, sd15: Path, root: Path, device: str, quick: bool, log) -> list[Figure]:
    steps, reps = (3, 1) if quick else (4, 2)
    nocache, cached, plain = [], [], []
    for rep in range(reps):
        log(f"  rep {rep + 1}/{reps}: ours without caches …")
        nocache.append(_train(studio, _request("bench-nocache", sd15.name, steps, device, cache_latents=False,
                                               cache_text_encoder_outputs=False))["steady_steps_per_s"])
        log(f"  rep {rep + 1}/{reps}: plain diffusers+peft loop …")
        plain.append(plain_loop(sd15, root / "datasets" / "bench", steps, device))
        log(f"  rep {rep + 1}/{reps}: ours with latent + text caching …")
        cached.append(_train(studio, _request("bench-cached", sd15.name, steps, device))["steady_steps_per_s"])
        log(f"    steps/s: ours {nocache[-1]:.4f}, cached {cached[-1]:.4f}, plain {plain[-1]:.4f}")
    detail = {"steps": steps, "resolution": RESOLUTION, "rank": RANK, "ours_nocache_sps": nocache,
              "ours_cached_sps": cached, "plain_sps": plain}
    return [
        Figure.from_samples("train_nocache", TITLE_PLAIN, [a / b for a, b in zip(nocache, plain)],
                            target=">= 1.0x", ok=lambda r: r >= 1.0, **detail),
        Figure.from_samples("train_cached", TITLE_CACHED, [a / b for a, b in zip(cached, plain)],
                            target=">= 1.3x", ok=lambda r: r >= 1.3, **detail),
    ]


def plain_loop(folder: Path, images: Path, steps: int, device: str) -> float:
    """Steps/s of the loop train_text_to_image_lora.py runs, on the same model and images."""
    import numpy as np
    import torch
    import torch.nn.functional as F
    from accelerate import Accelerator
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from diffusers.optimization import get_scheduler
    from diffusers.training_utils import cast_training_params
    from peft import LoraConfig
    from PIL import Image
    from transformers import CLIPTextModel, CLIPTokenizer

    accelerator = Accelerator(mixed_precision="fp16" if device == "cuda" else "no", cpu=device == "cpu")
    weight_dtype = torch.float16 if device == "cuda" else torch.float32
    tokenizer = CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer", local_files_only=True)
    text_encoder = CLIPTextModel.from_pretrained(folder, subfolder="text_encoder", local_files_only=True)
    vae = AutoencoderKL.from_pretrained(folder, subfolder="vae", local_files_only=True)
    unet = UNet2DConditionModel.from_pretrained(folder, subfolder="unet", local_files_only=True)
    noise_scheduler = DDPMScheduler.from_pretrained(folder, subfolder="scheduler", local_files_only=True)
    for m in (unet, vae, text_encoder):
        m.requires_grad_(False)
    unet.to(accelerator.device, dtype=weight_dtype)
    vae.to(accelerator.device, dtype=weight_dtype)
    text_encoder.to(accelerator.device, dtype=weight_dtype)
    unet.add_adapter(LoraConfig(r=RANK, lora_alpha=RANK, init_lora_weights="gaussian",
                                target_modules=["to_k", "to_q", "to_v", "to_out.0"]))
    if weight_dtype != torch.float32:
        cast_training_params(unet, dtype=torch.float32)
    lora_layers = [p for p in unet.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(lora_layers, lr=1e-4, betas=(0.9, 0.999), weight_decay=1e-2, eps=1e-8)
    files = sorted(images.glob("*.png"))
    pixel_values = [torch.from_numpy(np.asarray(Image.open(f).convert("RGB"), dtype=np.float32) / 127.5 - 1)
                    .permute(2, 0, 1) for f in files]
    input_ids = [tokenizer(f.with_suffix(".txt").read_text(), max_length=tokenizer.model_max_length,
                           padding="max_length", truncation=True, return_tensors="pt").input_ids[0] for f in files]
    dataset = [{"pixel_values": p, "input_ids": i} for p, i in zip(pixel_values, input_ids)]
    loader = torch.utils.data.DataLoader(dataset, shuffle=True, batch_size=1, collate_fn=lambda ex: {
        "pixel_values": torch.stack([e["pixel_values"] for e in ex]).float(),
        "input_ids": torch.stack([e["input_ids"] for e in ex])})
    lr_scheduler = get_scheduler("constant", optimizer=optimizer, num_warmup_steps=0, num_training_steps=steps)
    unet, optimizer, loader, lr_scheduler = accelerator.prepare(unet, optimizer, loader, lr_scheduler)
    unet.train()
    done, start = 0, None
    while done < steps:
        for batch in loader:
            with accelerator.accumulate(unet):
                latents = vae.encode(batch["pixel_values"].to(dtype=weight_dtype)).latent_dist.sample()
                latents = latents * vae.config.scaling_factor
                noise = torch.randn_like(latents)
                timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (latents.shape[0],),
                                          device=latents.device).long()
                noisy = noise_scheduler.add_noise(latents, noise, timesteps)
                encoder_hidden_states = text_encoder(batch["input_ids"], return_dict=False)[0]
                pred = unet(noisy, timesteps, encoder_hidden_states, return_dict=False)[0]
                loss = F.mse_loss(pred.float(), noise.float(), reduction="mean")
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(lora_layers, 1.0)
                optimizer.step()
                lr_scheduler.step()
                optimizer.zero_grad()
            done += 1
            if start is None:  # after the first step, as the studio's figure (its one-time costs left out)
                start = time.perf_counter()
            if done >= steps:
                break
    seconds = time.perf_counter() - start
    accelerator.free_memory()
    del unet, vae, text_encoder, optimizer
    return (steps - 1) / seconds

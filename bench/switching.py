"""Figure 3: model switching on SD1.5-size checkpoints, through the model manager's public methods.

- cached switch: A <-> B with both kept in the RAM cache (target < 0.5 s on CPU);
- cold switch vs a plain safetensors load of the same files (target <= 1.3x), with the
  cache limited to one checkpoint and three names cycled, so every switch reads the disk: same
  architecture (the model manager keeps the module skeleton, skeleton.py, and reads only the
  weights), and a new architecture (configs no skeleton was kept for: the ordinary load, reported);
  and same-architecture A1111 single files (switching_single.py, target <= 1.3x);
- peak resident memory during the cold switches (reported);
- LoRA apply + remove of a rank-16 kohya LoRA (target < 0.2 s): the same set on and off, as jobs
  alternating with and without it; and a weight change between jobs (the set already fused: the
  difference added in place, LoraState.reweigh);
- txt2img with that LoRA active vs without, through the job engine (target <= 1.05x).
The checkpoints are hard links of one random-weights SD1.5 folder (same bytes, other names).
"""
from __future__ import annotations

import gc
import os
import statistics
from pathlib import Path

from bench.common import Figure, ratios, side_by_side, sync, timed
from bench.switching_single import TITLE as SINGLE_TITLE, single_file_figure

LORA_NAME = "bench-lora-r16"
T_CACHED, T_COLD, T_LORA, T_LORA_GEN = "< 0.5 s", "<= 1.3x plain safetensors", "< 0.2 s", "<= 1.05x"


def _plain_load(folder: Path, device: str) -> None:
    """What a cold switch cannot beat: read every safetensors file of the checkpoint onto the device."""
    from safetensors.torch import load_file

    tensors = [t for f in sorted(folder.rglob("*.safetensors")) for t in load_file(str(f), device=device).values()]
    _touch(tensors, device)
    del tensors


def _touch(tensors, device: str) -> None:
    """Read one value per 4 KiB page of every CPU tensor. safetensors maps files lazily, so a
    "load" can return in milliseconds and pay the reading at the first generation instead; both
    sides of every switch figure are timed until the weights are really in memory."""
    if device != "cpu":
        sync(device)
        return
    for t in tensors:
        if t.numel():
            t.detach().reshape(-1)[:: max(1, 4096 // t.element_size())].sum()


def _switch(models, name: str, device: str) -> str:
    """Switch to `name` and touch its weights; returns how it was built ("skeleton" or "files")."""
    import torch

    ckpt = models.load(name)
    modules = [m for m in ckpt.pipe.components.values() if isinstance(m, torch.nn.Module)]
    _touch([t for m in modules for t in (*m.parameters(), *m.buffers())], device)
    return ckpt.built_from


def _new_arch_copy(src: Path, dst: Path, index: int) -> Path:
    """A copy of `src` whose scheduler config ends in `index` + 1 more spaces: other config bytes, so no
    skeleton kept so far fits it and the switch goes the ordinary (new-architecture) way."""
    import shutil

    from bench.sd15 import link_copy

    link_copy(src, dst)
    config = dst / "scheduler" / "scheduler_config.json"
    text = config.read_text(encoding="utf-8")
    config.unlink()  # a hard link: write a file of its own
    config.write_text(text + " " * (1 + index), encoding="utf-8")
    shutil.rmtree(dst / ".cache", ignore_errors=True)
    return dst


def _rss() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def run(device: str, quick: bool, log=print) -> list[Figure]:
    from bench.lora_file import ensure_lora
    from bench.sd15 import ensure_sd15_folder
    from bench.server import RssSampler
    from bench.studio_setup import make_data_dir, open_studio

    src = ensure_sd15_folder(log)
    names = [f"{src.name}-{c}" for c in "abc"]
    data = make_data_dir(name="switching")
    from bench.sd15 import link_copy

    for n in names:
        link_copy(src, data / "models" / "Stable-diffusion" / n)
    ensure_lora(src, data / "models" / "Lora" / f"{LORA_NAME}.safetensors")
    reps = 4 if quick else 6  # even: side_by_side pairs them ABBA
    figures: list[Figure] = []
    studio = None
    try:
        studio = open_studio(data, device)
        models = studio.models

        # -- cached switches ------------------------------------------------
        try:
            studio.settings.update({"sd_checkpoints_limit": 2, "sd_checkpoint_cache_gb": 64.0})
            _switch(models, names[0], device), _switch(models, names[1], device)  # both now in the cache
            log(f"  cached switch: {2 * reps} switches between two SD1.5-size checkpoints …")
            # Strictly A, B, A, B: each call is a real switch (ABBA order would time "switches" to the active one).
            times = [timed(lambda n=names[i % 2]: _switch(models, n, device), device) for i in range(2 * reps)]
            figures.append(Figure.from_samples("switch_cached", "cached checkpoint switch, SD1.5 size", times,
                                               unit="s", target=T_CACHED, ok=lambda s: s < 0.5))
        except Exception as exc:
            figures.append(Figure.missing("switch_cached", "cached checkpoint switch, SD1.5 size", _why(exc), T_CACHED))

        # -- cold switches vs plain safetensors, and the memory they take ---
        try:
            studio.settings.update({"sd_checkpoints_limit": 1, "sd_checkpoint_cache_gb": 0.0})
            gc.collect()
            cycle = iter(range(10**6))
            cold = lambda: _switch(models, names[next(cycle) % 3], device)
            plain = lambda: _plain_load(src, device)
            models.load(names[2])
            log(f"  cold switch: {reps} cold switches alternating with {reps} plain safetensors loads …")
            ta, tb = side_by_side(cold, plain, reps, device, warmup=0)
            built = {_switch(models, n, device) for n in names}
            gc.collect()
            before = _rss()
            gpu_before = _gpu_allocated(device, reset=True)
            with RssSampler(os.getpid(), 0.02) as sampler:  # the manager's switches alone
                for _ in range(3):
                    cold()
            in_memory = _weights_bytes(models.load(names[0]).pipe)
            fig = Figure.from_samples("switch_cold", "cold checkpoint switch, same architecture, vs plain safetensors load",
                                      ratios(ta, tb), target=T_COLD, ok=lambda r: r <= 1.3,
                                      cold_s=_spread(ta), plain_s=_spread(tb), built_from=sorted(built))
            if built != {"skeleton"}:
                fig.met = False
                fig.detail["problem"] = "the same-architecture switches did not all go through the skeleton"
            figures.append(fig)
            figures.append(_new_arch_figure(models, src, data, device, reps, log))
            try:
                figures.append(single_file_figure(models, src, data, device, reps, log, _switch, _touch))
            except Exception as exc:
                figures.append(Figure.missing("switch_cold_single_file", SINGLE_TITLE, _why(exc), T_COLD))
            if device == "cpu":
                peak, growth = sampler.peak, sampler.peak - before
            else:
                peak = _gpu_allocated(device, peak=True)
                growth = peak - gpu_before
            figures.append(Figure("switch_peak_mem", "peak memory while cold-switching (CPU: RSS; GPU: allocated)",
                                  "MiB", None, round(peak / 2**20), None, "— (reported)", None, None,
                                  {"before_mib": round((before if device == "cpu" else gpu_before) / 2**20),
                                   "one_checkpoint_in_memory_mib": round(in_memory / 2**20),
                                   "growth_in_checkpoints": round(growth / in_memory, 3)}))
        except Exception as exc:
            figures.append(Figure.missing("switch_cold", "cold checkpoint switch vs plain safetensors load", _why(exc), T_COLD))
            figures.append(Figure.missing("switch_peak_mem", "peak RSS while switching", _why(exc)))

        # -- LoRA apply + remove, and generation with it ---------------------
        figures += _lora_figures(studio, names[0], device, quick, log)
    except Exception as exc:
        why = _why(exc)
        for key, title, target in (("switch_cached", "cached checkpoint switch, SD1.5 size", T_CACHED),
                                   ("switch_cold", "cold checkpoint switch vs plain safetensors load", T_COLD),
                                   ("switch_cold_new_arch", "cold checkpoint switch, new architecture", ""),
                                   ("switch_cold_single_file", SINGLE_TITLE, T_COLD),
                                   ("switch_peak_mem", "peak RSS while switching", ""),
                                   ("lora_apply_remove", "LoRA rank 16 apply + remove, SD1.5", T_LORA),
                                   ("lora_weight_change", "LoRA rank 16 weight change between jobs, SD1.5", T_LORA),
                                   ("lora_generation", "txt2img with LoRA active vs without", T_LORA_GEN)):
            if not any(f.key == key for f in figures):
                figures.append(Figure.missing(key, title, why, target))
    finally:
        if studio is not None:
            studio.shutdown()
        import shutil

        shutil.rmtree(data, ignore_errors=True)
    return figures


def _new_arch_figure(models, src: Path, data: Path, device: str, reps: int, log) -> Figure:
    """Cold switches to checkpoints whose configs no skeleton fits (each its own), vs the plain read."""
    title = "cold checkpoint switch, new architecture, vs plain safetensors load"
    folders = [_new_arch_copy(src, data / "models" / "Stable-diffusion" / f"{src.name}-new{i}", i) for i in range(reps)]
    models.registry.refresh("checkpoint")
    queue = iter(f.name for f in folders)
    built: set[str] = set()
    log(f"  cold switch, new architecture: {reps} switches alternating with {reps} plain safetensors loads …")
    ta, tb = side_by_side(lambda: built.add(_switch(models, next(queue), device)), lambda: _plain_load(src, device),
                          reps, device, warmup=0)
    fig = Figure.from_samples("switch_cold_new_arch", title, ratios(ta, tb), target="— (reported)",
                              cold_s=_spread(ta), plain_s=_spread(tb), built_from=sorted(built))
    return fig


def _lora_figures(studio, checkpoint: str, device: str, quick: bool, log) -> list[Figure]:
    import numpy as np

    from modules.diffusion.params import Txt2ImgRequest
    from modules.jobs import JobState

    out = []
    title_a, title_g = "LoRA rank 16 apply + remove, SD1.5", "txt2img with LoRA active vs without, SD1.5"
    title_w = "LoRA rank 16 weight change between jobs, SD1.5"
    reps = 5 if quick else 10
    try:
        studio.registry.refresh()
        loras = studio.models.loras
        studio.settings.update({"sd_checkpoints_limit": 2, "sd_checkpoint_cache_gb": 64.0})
        ckpt = studio.models.load(checkpoint)

        def apply_remove():  # fuse into the weights, then restore the base weights exactly
            with loras(ckpt, [(LORA_NAME, 1.0)]):
                pass
            with loras(ckpt, []):
                pass

        apply_remove()
        log(f"  LoRA: {reps} apply + remove cycles …")
        times = [timed(apply_remove, device) for _ in range(reps)]
        out.append(Figure.from_samples("lora_apply_remove", title_a, times, unit="s", target=T_LORA, ok=lambda s: s < 0.2,
                                       what="the same LoRA on, then off: jobs alternating with and without it"))
        weights = iter([0.7, 0.9] * reps)

        def reweigh():  # the same LoRA fused now, another weight: the difference added in place
            with loras(ckpt, [(LORA_NAME, next(weights))]):
                pass

        # Fused at 0.9 first, untimed: a first fuse from the base (the row before ends with none) is not a change.
        with loras(ckpt, [(LORA_NAME, 0.9)]):
            pass
        log(f"  LoRA: {reps} weight changes …")
        times, in_place = [], 0
        for _ in range(reps):
            times.append(timed(reweigh, device))
            in_place += ckpt.loras.steps > 0  # 0: this change re-fused from the base (every MAX_DELTA_STEPS)
        with loras(ckpt, []):
            pass
        out.append(Figure.from_samples("lora_weight_change", title_w, times, unit="s", target=T_LORA, ok=lambda s: s < 0.2,
                                       what="weight 0.7 <-> 0.9 between jobs, the set fused before each: the "
                                            "difference added in place (a re-fuse from the base every 8 changes)",
                                       in_place=in_place))
    except Exception as exc:
        out += [Figure.missing(key, title, _why(exc), T_LORA) for key, title in
                (("lora_apply_remove", title_a), ("lora_weight_change", title_w)) if not any(f.key == key for f in out)]
    try:
        # Quick runs use 128x128 (a quarter of the UNet work); the LoRA's share of each step is the same.
        steps, greps, side = (2, 6, 128) if quick else (8, 6, 256)  # even: each side first in half the pairs
        images = {}

        def gen(tag: str):
            def go(n: int = steps):
                req = Txt2ImgRequest(prompt="a lighthouse at dusk" + tag, steps=n, width=side, height=side, seed=7,
                                     sampler_name="Euler a", save_images=False,
                                     override_settings={"sd_model_checkpoint": checkpoint})
                job = studio.jobs.run("txt2img", req)
                if job.state != JobState.DONE:
                    raise RuntimeError(f"txt2img ended {job.state.value}: {job.error}")
                images[bool(tag)] = np.asarray(job.result.images[0].image)
            return go

        with_lora, without = gen(f" <lora:{LORA_NAME}:1>"), gen("")
        with_lora(1), without(1)  # warm-up
        log(f"  LoRA: {greps} generations with the LoRA alternating with {greps} without …")
        ta, tb = [], []
        for i in range(greps):  # ABBA; before each timed run a 1-step run of the same kind does the switch
            for fn, times in ((with_lora, ta), (without, tb)) if i % 2 == 0 else ((without, tb), (with_lora, ta)):
                fn(1)  # fusing / restoring happens here (lora_apply_remove measures it); timed: the steps
                times.append(timed(fn, device))
        changed = not np.array_equal(images[True], images[False])
        fig = Figure.from_samples("lora_generation", title_g, ratios(ta, tb), target=T_LORA_GEN,
                                  ok=lambda r: r <= 1.05, with_lora_s=_spread(ta), without_s=_spread(tb),
                                  lora_changed_image=changed, steps=steps, size=f"{side}x{side}")
        if not changed:
            fig.met = False
            fig.detail["problem"] = "the LoRA did not change the image: it was not applied"
        out.append(fig)
    except Exception as exc:
        out.append(Figure.missing("lora_generation", title_g, _why(exc), T_LORA_GEN))
    return out


def _gpu_allocated(device: str, reset: bool = False, peak: bool = False) -> int:
    if not device.startswith("cuda"):
        return 0
    import torch

    torch.cuda.synchronize()
    if reset:
        torch.cuda.reset_peak_memory_stats()
    return torch.cuda.max_memory_allocated() if peak else torch.cuda.memory_allocated()


def _weights_bytes(pipe) -> int:
    import torch

    modules = [m for m in pipe.components.values() if isinstance(m, torch.nn.Module)]
    return sum(t.numel() * t.element_size() for m in modules for t in (*m.parameters(), *m.buffers()))


def _spread(xs: list[float]) -> dict:
    return {"min": round(min(xs), 4), "median": round(statistics.median(xs), 4), "max": round(max(xs), 4)}


def _why(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}"[:400]

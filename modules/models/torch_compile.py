"""The compile_unet speed setting: torch.compile of the denoiser (the UNet; Flux / SD3: the transformer).

The module is compiled in place (`nn.Module.compile`): the pipeline keeps the same object, so LoRA
loading, the skeleton switch and the img2img / inpaint pipelines built by `from_pipe` (which share it)
see the module they always saw, and the compiled state lives on the checkpoint that owns it.
dynamic=False: every latent shape (batch × height × width: a new image size, hires fix's second pass)
is its own bucket, traced and compiled once.
Weights are never baked in: torch 2.13 always inlines nn.Modules, so parameters are graph inputs read
at every call (inductor's `freezing`, which would fold them into constants, stays off). A LoRA fused
in place or a switch's new tensors act on the next call; the Python state a LoRA changes (peft's
layers, their merged flag) fails a dynamo guard and traces again — served from the FX graph cache
when the graph is one it has seen.
Compiled artefacts go to data/cache/torch-compile (TORCHINDUCTOR_CACHE_DIR, set before the first
compile unless the user set it): a restart compiles from the cache.
"""
from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

log = logging.getLogger("atelier.models")


def denoiser(pipe):
    """The module that runs every step: the UNet, or Flux / SD3's transformer."""
    return pipe.unet if getattr(pipe, "unet", None) is not None else pipe.transformer


def why_not(ckpt) -> str | None:
    """Why this checkpoint runs eagerly whatever the setting says (None: it can be compiled)."""
    if ckpt.policy != "gpu":
        return f"the checkpoint is under {ckpt.policy} (offload hooks move the weights during the call)"
    if ckpt.quantization:
        return f"the checkpoint is quantized ({ckpt.quantization})"
    return None


def sync(ckpt, mode: str, cache_dir: Path | None = None) -> None:
    """Compile, or go back to eager, so that `ckpt.compiled` is `mode` where it can be."""
    want = mode if mode == "off" or why_not(ckpt) is None else "off"
    if want == ckpt.compiled:
        return
    module = denoiser(ckpt.pipe)
    if want == "off":
        module._compiled_call_impl = None  # what nn.Module.compile set: __call__ runs the eager forward again
    else:
        _point_cache_at(cache_dir)
        # Bucket bound: torch's recompile_limit (8) graphs per module; past it dynamo runs that call eagerly.
        module.compile(mode=None if want == "default" else want, dynamic=False)
        log.info("compile_unet %s: %s of %s compiles at its next use", want, type(module).__name__, ckpt.name)
    ckpt.compiled = want


def _point_cache_at(folder: Path) -> None:
    """TORCHINDUCTOR_CACHE_DIR (read at each cache access) to the studio's folder, unless the user chose another.
    Importing diffusers already wrote torch's default there (cache_dir() writes back what it picks), so the
    default — or another studio's folder, in a process that opened two — counts as not chosen."""
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    current = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    if current is None or Path(current) == Path(default_cache_dir()).resolve() or \
            Path(current).parts[-2:] == folder.parts[-2:]:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(folder)


@contextlib.contextmanager
def reported(job_log, ckpt, mode: str):
    """Around one generation: the seconds torch.compile spent in it go to the job's log (the first job at a
    new size, LoRA set or checkpoint pays them), and a setting this checkpoint cannot honour is said there."""
    if mode != "off" and ckpt.compiled == "off" and (reason := why_not(ckpt)):
        job_log(f"compile_unet {mode}: not applied, {reason}; this job runs eagerly")
    if ckpt.compiled == "off":
        yield
        return
    from torch._dynamo.utils import calculate_time_spent

    before = calculate_time_spent().get("entire_frame_compile", 0.0)
    try:
        yield
    finally:
        spent = calculate_time_spent().get("entire_frame_compile", 0.0) - before
        if spent > 0.0:
            ckpt.compile_seconds += spent
            line = (f"compile_unet {ckpt.compiled}: {spent:.1f} s compiling {type(denoiser(ckpt.pipe)).__name__} of "
                    f"{ckpt.name} in this job (once per image size, LoRA set and checkpoint; cached in "
                    f"{os.environ.get('TORCHINDUCTOR_CACHE_DIR')})")
            log.info(line)
            job_log(line)

"""Where a checkpoint's weights live while it runs: the memory policy, and the retry on out-of-memory.

Policies, lightest last (AUTOMATIC1111's default / --medvram / --lowvram):
  gpu                 everything on the device
  model_offload       diffusers' enable_model_cpu_offload: one whole model at a time on the device
  sequential_offload  diffusers' enable_sequential_cpu_offload: one layer at a time
"auto" picks from the device's free memory. On the CPU there is nothing to offload to, so the
policy is always "gpu" (meaning: on the device) and only VAE tiling/slicing can lighten a run.
"""
from __future__ import annotations

import logging

from modules.devices import device_type, free_accelerator_memory
from modules.errors import AtelierError

log = logging.getLogger("atelier.models")

POLICIES = ("gpu", "model_offload", "sequential_offload")


class OutOfMemory(AtelierError):
    """The device ran out of memory even after the lighter policy; the message says what to change."""

    status = 422  # the request as sized does not fit this machine; the message says what to change


def footprint_bytes(pipe) -> int:
    """Bytes of every parameter and buffer of the pipeline's torch modules."""
    total = 0
    for module in modules_of(pipe):
        for t in list(module.parameters()) + list(module.buffers()):
            total += t.numel() * t.element_size()
    return total


def modules_of(pipe):
    import torch

    return [m for m in pipe.components.values() if isinstance(m, torch.nn.Module)]


def choose_policy(wanted: str, device_name: str, pipe) -> str:
    """The policy to use: `wanted` unless "auto"; auto fits the model to the device's free memory."""
    if device_type(device_name) != "cuda":
        return "gpu"
    if wanted in POLICIES:
        return wanted
    import torch

    free, _total = torch.cuda.mem_get_info()
    need = footprint_bytes(pipe)
    biggest = max((footprint_bytes_module(m) for m in modules_of(pipe)), default=0)
    headroom = 2 * 1024**3  # activations of a 1024² SDXL step fit in about this
    if free >= need + headroom:
        return "gpu"
    if free >= biggest + headroom:
        return "model_offload"
    return "sequential_offload"


def footprint_bytes_module(module) -> int:
    return sum(t.numel() * t.element_size() for t in list(module.parameters()) + list(module.buffers()))


def _all_on_cpu(pipe) -> bool:
    import torch

    modules = [c for c in pipe.components.values() if isinstance(c, torch.nn.Module)]
    return all(t.device.type == "cpu" for m in modules for t in (*m.parameters(), *m.buffers()))


def apply_policy(pipe, policy: str, device) -> None:
    """Put the pipeline's weights where `policy` says (the old hooks are removed first)."""
    device_name = getattr(device, "type", str(device))
    if hasattr(pipe, "remove_all_hooks"):
        pipe.remove_all_hooks()
    if device_name == "cpu" or policy == "gpu":
        if device_name != "cpu" or not _all_on_cpu(pipe):  # diffusers' .to walks every module even when nothing
            pipe.to(device)                                 # moves (~0.1 s for SD1.5, a tenth of a cold switch)
    elif policy == "model_offload":
        pipe.to("cpu")
        pipe.enable_model_cpu_offload(device=device)
    elif policy == "sequential_offload":
        pipe.to("cpu")
        pipe.enable_sequential_cpu_offload(device=device)
    else:
        raise ValueError(f"unknown memory policy {policy!r}")


def lighter(policy: str) -> str | None:
    i = POLICIES.index(policy) if policy in POLICIES else 0
    return POLICIES[i + 1] if i + 1 < len(POLICIES) else None


def configure_vae_tiling(pipe, threshold_pixels: int) -> None:
    """Tile the VAE only for images larger than the threshold (settings.vae_tiling_pixels; 0: never).

    diffusers' AutoencoderKL tiles when a side exceeds `tile_sample_min_size` (its config's
    sample_size); raising that to the threshold's side keeps ordinary sizes untiled, bit-exact.
    """
    vae = getattr(pipe, "vae", None)
    if vae is None or not hasattr(vae, "tile_sample_min_size"):
        return
    if threshold_pixels <= 0:
        vae.disable_tiling()
        return
    side = max(int(vae.config.sample_size), int(threshold_pixels ** 0.5))
    vae.tile_sample_min_size = side
    vae.tile_latent_min_size = side // 2 ** (len(vae.config.block_out_channels) - 1)
    vae.enable_tiling()


def lightest_vae(pipe) -> None:
    """After an out-of-memory: the library's own tile size, and one image of a batch at a time."""
    vae = getattr(pipe, "vae", None)
    if vae is None or not hasattr(vae, "tile_sample_min_size"):
        return
    configure_vae_tiling(pipe, 1)
    vae.enable_slicing()


def is_oom(exc: BaseException) -> bool:
    import torch

    if isinstance(exc, torch.OutOfMemoryError):
        return True
    # The CPU allocator reports exhaustion as a RuntimeError with this text.
    return isinstance(exc, RuntimeError) and "DefaultCPUAllocator: can't allocate memory" in str(exc)


def oom_message(device_name: str, policy: str) -> str:
    if device_type(device_name) == "cuda" and lighter(policy):
        change = f"set memory_policy to {lighter(policy)} (like --medvram/--lowvram)"
    elif device_type(device_name) == "cuda":
        change = "the lightest policy (sequential_offload) is already in use"
    else:
        change = "close other programs to free RAM"
    return (f"out of memory on {device_name} even after freeing caches and retrying; "
            f"make the image smaller or the batch size lower, or {change}")


def retry_on_oom(ckpt, fn, device_name: str, move_to=None):
    """Call fn(); on out-of-memory free the caches, move the checkpoint to the next lighter policy (`move_to`,
    on CUDA, unquantized) and the VAE to its lightest mode, and call it once more; a second OOM is refused
    with what to change."""
    try:
        return fn()
    except Exception as exc:
        if not is_oom(exc):
            raise
        log.warning("out of memory with policy %s; freeing caches and retrying lighter", ckpt.policy)
    free_accelerator_memory(device_name)
    policy_before = ckpt.policy
    nxt = lighter(ckpt.policy) if device_type(device_name) == "cuda" else None
    if nxt is not None and not ckpt.quantization and move_to is not None:
        move_to(nxt)
    lightest_vae(ckpt.pipe)
    try:
        return fn()
    except Exception as exc:
        if not is_oom(exc):
            raise
        free_accelerator_memory(device_name)
        raise OutOfMemory(oom_message(device_name, nxt or policy_before), "width") from None

"""Device and dtype choice, and memory readings. torch is imported only when asked."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DeviceChoice:
    name: str  # "cuda", "mps" or "cpu"
    dtype_name: str  # "float16" or "float32"

    @property
    def torch_device(self):
        import torch

        return torch.device(self.name)

    @property
    def dtype(self):
        import torch

        return getattr(torch, self.dtype_name)


def choose_device(preference: str = "auto") -> DeviceChoice:
    """CUDA, then MPS, then CPU; fp16 on accelerators, fp32 on the CPU."""
    import torch

    pref = (preference or "auto").lower()
    if pref not in ("auto", "cpu", "cuda", "mps"):
        raise ValueError(f"--device must be auto, cpu, cuda or mps, not {preference!r}")
    if pref == "auto":
        if torch.cuda.is_available():
            pref = "cuda"
        elif getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            pref = "mps"
        else:
            pref = "cpu"
    if pref == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for, but torch sees no CUDA GPU")
    return DeviceChoice(pref, "float32" if pref == "cpu" else "float16")


def memory_readings(device_name: str) -> dict:
    """Real readings: process RSS, system RAM, and the GPU's free/total when there is one."""
    import psutil

    vm = psutil.virtual_memory()
    out = {
        "ram": {"total": vm.total, "available": vm.available, "used": vm.total - vm.available},
        "process_rss": psutil.Process().memory_info().rss,
    }
    if device_name == "cuda":
        import torch

        free, total = torch.cuda.mem_get_info()
        out["cuda"] = {
            "total": total, "free": free, "used": total - free,
            "allocated": torch.cuda.memory_allocated(), "reserved": torch.cuda.memory_reserved(),
            "peak_allocated": torch.cuda.max_memory_allocated(),
        }
    return out


def free_accelerator_memory(device_name: str) -> None:
    import gc

    gc.collect()
    if device_name == "cuda":
        import torch

        torch.cuda.empty_cache()
    elif device_name == "mps":
        import torch

        torch.mps.empty_cache()


def device_total_memory(device_name: str) -> int:
    """Bytes of memory on the accelerator (0 when there is none)."""
    import torch

    if device_name == "cuda":
        return torch.cuda.mem_get_info()[1]
    if device_name == "mps":
        return int(torch.mps.recommended_max_memory())
    return 0

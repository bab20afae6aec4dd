"""Device and dtype choice, and memory readings. torch is imported only when asked."""
from __future__ import annotations

import re
from dataclasses import dataclass

# One device ("auto", "cpu", "cuda", "mps", "cuda:1") or a list of them ("cuda:0,cuda:2"; "cpu,cpu" simulates
# a pool of two devices on the CPU, for tests and the bench).
DEVICE_FLAG = re.compile(r"^(auto|cpu|cuda|mps|cuda:\d+)$|^((cpu|cuda:\d+)(,(cpu|cuda:\d+))+)$")
DEVICE_FLAG_FORMS = "auto, cpu, cuda, mps, cuda:N or a list like cuda:0,cuda:2"


@dataclass(frozen=True)
class DeviceChoice:
    name: str  # the torch device: "cuda", "cuda:1", "mps" or "cpu"
    dtype_name: str  # "float16" or "float32"
    label: str = ""  # the pool's name for it when it differs from `name` ("cpu:1" in a simulated pool)

    @property
    def lane(self) -> str:
        """The name the job engine and the model manager know this device by (unique in the pool)."""
        return self.label or self.name

    @property
    def type(self) -> str:
        return device_type(self.name)

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


def device_type(device_name: str) -> str:
    """"cuda:1" -> "cuda": what kind of device a torch device name is."""
    return device_name.split(":", 1)[0]


def choose_devices(preference: str = "auto") -> list[DeviceChoice]:
    """The pool of compute devices: `cuda` on a machine with several GPUs is every GPU (cuda:0, cuda:1, …);
    `cuda:0,cuda:2` picks some; one device (and every other choice) is a pool of one, named as today."""
    import torch

    pref = (preference or "auto").lower()
    if not DEVICE_FLAG.match(pref):
        raise ValueError(f"--device must be {DEVICE_FLAG_FORMS}; not {preference!r}")
    names = pref.split(",")
    if len(names) == 1 and not names[0].startswith("cuda:"):
        one = choose_device(pref)
        count = torch.cuda.device_count() if one.name == "cuda" else 1
        if count <= 1:
            return [one]
        return [DeviceChoice(f"cuda:{i}", "float16") for i in range(count)]
    if len(set(names)) != len(names) and set(names) != {"cpu"}:
        raise ValueError(f"--device lists a GPU twice: {preference!r}")
    pool = []
    for i, name in enumerate(names):
        if name == "cpu":
            pool.append(DeviceChoice("cpu", "float32", label=f"cpu:{i}" if len(names) > 1 else ""))
            continue
        index = int(name.split(":")[1])
        if index >= torch.cuda.device_count():
            raise ValueError(f"--device {name} was asked for, but torch sees {torch.cuda.device_count()} CUDA GPU(s)")
        pool.append(DeviceChoice(name, "float16"))
    return pool


def memory_readings(device_name: str) -> dict:
    """Real readings: process RSS, system RAM, and the GPU's free/total when there is one."""
    import psutil

    vm = psutil.virtual_memory()
    out = {
        "ram": {"total": vm.total, "available": vm.available, "used": vm.total - vm.available},
        "process_rss": psutil.Process().memory_info().rss,
    }
    if device_type(device_name) == "cuda":
        import torch

        free, total = torch.cuda.mem_get_info(device_name)
        out["cuda"] = {
            "total": total, "free": free, "used": total - free,
            "allocated": torch.cuda.memory_allocated(device_name), "reserved": torch.cuda.memory_reserved(device_name),
            "peak_allocated": torch.cuda.max_memory_allocated(device_name),
        }
    return out


def free_accelerator_memory(device_name: str) -> None:
    import gc

    gc.collect()
    if device_type(device_name) == "cuda":
        import torch

        torch.cuda.empty_cache()
    elif device_name == "mps":
        import torch

        torch.mps.empty_cache()


def device_total_memory(device_name: str) -> int:
    """Bytes of memory on the accelerator (0 when there is none)."""
    import torch

    if device_type(device_name) == "cuda":
        return torch.cuda.mem_get_info(device_name)[1]
    if device_name == "mps":
        return int(torch.mps.recommended_max_memory())
    return 0

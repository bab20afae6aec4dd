"""What every figure shares: side-by-side timing, the Figure record, the machine description."""
from __future__ import annotations

import contextlib
import gc
import os
import platform
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Callable


@dataclass
class Figure:
    """One row of the table: a ratio or a value, its spread, its target and whether it is met.

    `met` is True only when every sample meets the target; None when the issue sets no target for the row (it is reported, not judged),
    and `not_measured` says why a row has no number at all — never a made-up one.
    """

    key: str
    title: str
    unit: str = "x"
    min: float | None = None
    median: float | None = None
    max: float | None = None
    target: str = ""
    met: bool | None = None
    not_measured: str | None = None
    detail: dict = field(default_factory=dict)

    @classmethod
    def from_samples(cls, key: str, title: str, samples: list[float], unit: str = "x", target: str = "",
                     ok: Callable[[float], bool] | None = None, **detail) -> "Figure":
        med = statistics.median(samples)
        # Met only when the whole spread meets it: a min–max that straddles the target is a miss.
        met = None if ok is None else bool(ok(min(samples)) and ok(max(samples)))
        return cls(key, title, unit, min(samples), med, max(samples), target, met, None,
                   {"samples": [round(s, 6) for s in samples], **detail})

    @classmethod
    def missing(cls, key: str, title: str, why: str, target: str = "") -> "Figure":
        return cls(key, title, target=target, not_measured=why)

    def to_json(self) -> dict:
        return asdict(self)


def sync(device: str) -> None:
    """Wait for queued GPU work, so a timer stops when the work is done, not when it was queued."""
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def timed(fn: Callable[[], object], device: str = "cpu") -> float:
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def side_by_side(a: Callable[[], object], b: Callable[[], object], reps: int, device: str = "cpu",
                 warmup: int = 1) -> tuple[list[float], list[float]]:
    """Time A and B alternately (ABBA order, so neither always runs second); returns both lists.

    `reps` is rounded up to an even number: the first run of a pair is the slower one on a shared machine
    (issue 13: Atelier-first vs Atelier-second ratios 1.27 vs 0.36 in one run), so with an odd count the
    side that runs first once more is penalised — the quick overhead figure (3 pairs) was biased that way."""
    reps += reps % 2
    for _ in range(warmup):
        a()
        b()
    ta, tb = [], []
    for i in range(reps):
        gc.collect()
        order = ((a, ta), (b, tb)) if i % 2 == 0 else ((b, tb), (a, ta))
        for fn, out in order:
            out.append(timed(fn, device))
    return ta, tb


@contextlib.contextmanager
def on_worker_thread(fn: Callable[..., object]):
    """`fn` called on a persistent thread of its own, as a job runs on the engine's worker thread: the plain side
    of an overhead figure run this way tells the thread's share of a difference from Atelier's own work."""
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bench-plain")
    try:
        yield lambda *args: pool.submit(fn, *args).result()
    finally:
        pool.shutdown()


def ratios(ta: list[float], tb: list[float]) -> list[float]:
    """Per-repetition ratios A/B: each pair ran back to back, so machine drift cancels."""
    return [x / y for x, y in zip(ta, tb)]


def machine_info(device: str) -> dict:
    import psutil

    info = {
        "cpu": _cpu_model(),
        "cores_logical": os.cpu_count(),
        "cores_physical": psutil.cpu_count(logical=False),
        "ram_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "os": platform.platform(),
        "python": platform.python_version(),
        "device": device,
        "gpu": None,
    }
    versions = {}
    for name in ("torch", "diffusers", "transformers", "gradio", "peft", "safetensors"):
        try:
            from importlib.metadata import version

            versions[name] = version(name)
        except Exception:
            versions[name] = None
    info["versions"] = versions
    try:
        import torch

        if torch.cuda.is_available():
            props = torch.cuda.get_device_properties(0)
            info["gpu"] = {"name": props.name, "memory_gib": round(props.total_memory / 2**30, 1),
                           "cuda": torch.version.cuda}
    except Exception:
        pass
    return info


def _cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def quiet_libraries() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")

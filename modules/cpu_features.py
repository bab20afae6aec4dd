"""What this CPU can do for inference, read from /proc/cpuinfo (Linux) when asked, never at import.

bf16 autocast pays off only where the processor multiplies bf16 natively: AVX-512 BF16 (Cooper
Lake, Zen 4 and later) or AMX (Sapphire Rapids and later). Elsewhere oneDNN emulates it, slower
than fp32, so the setting is refused there rather than accepted and made slower.
"""
from __future__ import annotations

import functools
from pathlib import Path

BF16_FLAGS = ("amx_bf16", "avx512_bf16")


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str]:
    try:
        for line in cpuinfo.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def bf16_flags() -> list[str]:
    """The native-bf16 instruction sets this CPU has (empty: none)."""
    flags = cpu_flags()
    return [f for f in BF16_FLAGS if f in flags]


def bf16_note() -> str:
    """One line for the UI and the bench: whether bf16 autocast is available on this CPU, and why."""
    found = bf16_flags()
    if found:
        return f"available: this CPU has {', '.join(found)}"
    return "not available: this CPU has neither AVX-512 BF16 nor AMX (bf16 would be emulated, slower than fp32)"


@functools.cache  # the machine's cores do not change while the studio runs; read once, not every job
def physical_cores() -> int:
    import psutil

    return psutil.cpu_count(logical=False) or psutil.cpu_count() or 1

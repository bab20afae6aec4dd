"""Keep freed tensor memory in the process for the next step instead of handing it back to the OS (glibc).

By default glibc serves every allocation above its mmap threshold (at most 32 MiB) with a fresh mmap and
unmaps it on free, and a worker thread's arena trims its heaps as well: every diffusion step's activations
(attention and VAE buffers of tens to hundreds of MB) are then page-faulted in and zeroed anew. Measured on
this project's 2-core CPU (`python -m bench --only allocator`): ~300 k minor page faults per 4-step SD1.5 256²
plain diffusers call, ~0 with these settings, and the call 1.16x faster. A1111's webui.sh preloads tcmalloc for the same reason; this needs no extra library.

One arena, so the job's worker thread reuses what any thread freed (thread arenas' heaps are capped at
64 MiB and fall back to mmap); a high mmap threshold and no trimming, so freed blocks stay mapped. The cost:
the process keeps its peak RAM after a job (reused by the next one, not returned to the OS).
Set before any thread allocates (the first thing `python -m webui` does); `--system-allocator` skips it.
"""
from __future__ import annotations

import ctypes
import sys

# glibc's mallopt parameters (malloc.h)
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD, M_ARENA_MAX = -1, -2, -3, -8
INT_MAX = 2**31 - 1  # mallopt takes a C int: a larger value would wrap (a trim threshold of 0 trims every free)
SETTINGS = {M_ARENA_MAX: 1, M_MMAP_THRESHOLD: 1 << 30, M_TRIM_THRESHOLD: INT_MAX, M_TOP_PAD: 1 << 28}


def keep_freed_memory() -> bool:
    """Apply SETTINGS; False where the C library is not glibc (macOS, Windows, musl), which keeps its own."""
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None)  # the process's own symbols (libc among them); find_library would spawn ldconfig at start
    try:
        mallopt = libc.mallopt
        libc.gnu_get_libc_version  # noqa: B018 — glibc only; musl has no such symbol (and no mallopt that acts)
    except AttributeError:
        return False
    return all(mallopt(param, value) == 1 for param, value in SETTINGS.items())

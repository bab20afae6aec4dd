"""The allocator setting (modules/allocator.py): a job's buffers freed on the worker thread are reused by the next
job, not page-faulted in anew. Each case runs in a fresh interpreter, since one arena must be set before any thread
allocates, as `python -m webui` does."""
from __future__ import annotations

import subprocess
import sys

import pytest

# A job's pattern: a 64 MiB activation made, used and freed on a persistent worker thread, again and again.
SNIPPET = """
import resource, sys
from concurrent.futures import ThreadPoolExecutor
if sys.argv[1] == "kept":
    from modules.allocator import keep_freed_memory
    assert keep_freed_memory()
import torch

def step():
    buffer = torch.ones(16 << 20)  # 64 MiB of float32, every page written
    return float(buffer[-1])

pool = ThreadPoolExecutor(1)
for _ in range(20):  # the first ones map their pages either way, until the heap has room for a job's buffers
    pool.submit(step).result()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    pool.submit(step).result()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", SNIPPET, mode], capture_output=True, text=True, timeout=120,
                         check=True)
    return int(out.stdout.split()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc only")
def test_freed_buffers_are_reused_by_the_next_job_instead_of_faulted_in_again():
    pages = (64 << 20) // 4096
    default, kept = _faults("default"), _faults("kept")
    assert default > 8 * pages, f"glibc's default should map each 64 MiB buffer anew ({default} faults for 10)"
    assert kept < 2 * pages, f"with the setting, the 10 buffers should reuse the pages of the first ({kept} faults)"

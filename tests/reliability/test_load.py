"""Load: 40 concurrent API generations all answer with a valid PNG, the queue drains, and the
server's memory comes back to where it was."""
from __future__ import annotations

import gc
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.reliability.helpers import body, decode_png, rss

N = 40


@pytest.fixture(scope="module")
def server(plain_server):
    return plain_server  # the session's shared server


def _settled_rss(server, seconds: float = 1.5) -> int:
    """RSS after the allocator has had a moment (the lowest of a few readings)."""
    readings = []
    for _ in range(int(seconds / 0.25)):
        readings.append(rss(server))
        time.sleep(0.25)
    return min(readings)


def test_forty_concurrent_generations_all_answer_and_memory_returns(server):
    def post(seed: int):
        r = httpx.post(server.url + "/sdapi/v1/txt2img", json=body(seed=seed, steps=2), timeout=300)
        return r.status_code, r.json() if r.headers.get("content-type", "").startswith("application/json") else r.text

    # Warm-up: the first generation allocates caches that then stay; the baseline is after it.
    for seed in range(2):
        assert post(seed)[0] == 200
    gc.collect()
    before = _settled_rss(server)

    with ThreadPoolExecutor(N) as pool:
        answers = list(pool.map(post, range(100, 100 + N)))

    failures = [(status, str(data)[:200]) for status, data in answers if status != 200]
    assert not failures, f"{len(failures)} of {N} requests failed: {failures[:3]}"
    seeds = set()
    for _, data in answers:
        assert len(data["images"]) == 1
        image = decode_png(data["images"][0])
        assert image.size == (64, 64)
        seeds.add(__import__("json").loads(data["info"])["seed"])
    assert seeds == set(range(100, 100 + N)), "each request got its own image"

    progress = httpx.get(server.url + "/sdapi/v1/progress", timeout=10).json()
    assert progress["state"]["job_count"] == 0 and progress["state"].get("queue_pending", 0) == 0, progress
    assert server.proc.poll() is None

    after = _settled_rss(server, 3.0)
    assert after <= before * 1.10, f"RSS grew from {before / 2**20:.0f} MiB to {after / 2**20:.0f} MiB after the burst"

"""Figures 4 and 5: 16 concurrent txt2img API requests on the demo model, side by side with the
same 16 sent one after another; and the server's resident memory, idle and while generating.

"Nothing lost" means every request answered 200 with a PNG that decodes and every image
asked to be saved is on disk. Memory is read with psutil on the server's PID.
"""
from __future__ import annotations

import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench.common import Figure
from bench.server import RssSampler, Server, png_ok, txt2img_body

N_REQUESTS = 16


def _post(url: str, seed: int) -> tuple[float, bool]:
    import httpx

    start = time.perf_counter()
    try:
        r = httpx.post(url + "/sdapi/v1/txt2img", json=txt2img_body(seed=seed, steps=10, save_images=True), timeout=600)
        ok = r.status_code == 200 and len(r.json().get("images", [])) == 1 and png_ok(r.json()["images"][0])
    except Exception:
        ok = False
    return time.perf_counter() - start, ok


def _burst(url: str, concurrent: bool, seed0: int) -> tuple[float, list[float], int]:
    """(wall seconds, per-request latencies, answers that were not a valid image)."""
    seeds = range(seed0, seed0 + N_REQUESTS)
    start = time.perf_counter()
    if concurrent:
        with ThreadPoolExecutor(N_REQUESTS) as pool:
            results = list(pool.map(lambda s: _post(url, s), seeds))
    else:
        results = [_post(url, s) for s in seeds]
    wall = time.perf_counter() - start
    return wall, [lat for lat, _ in results], sum(1 for _, ok in results if not ok)


def _pngs(outputs: Path) -> int:
    return sum(1 for p in outputs.rglob("*.png") if not p.name.startswith("."))


def run(device: str, quick: bool, log=print) -> list[Figure]:
    from bench.studio_setup import demo_folder, make_data_dir

    reps = 2 if quick else 5
    data = make_data_dir(demo_folder(), name="throughput")
    server = Server(data, device)
    titles = ("throughput: 16 concurrent vs 16 sequential requests", "p50 / p95 latency, 16 concurrent",
              "nothing lost under concurrency", "server RSS idle, demo model loaded",
              "server peak RSS while generating / idle")
    try:
        server.wait_ready()
        _post(server.url, 0)  # warm-up: first-call allocations are not part of either side
        time.sleep(1.0)
        idle = [server.rss()]
        log(f"  throughput: {reps} x ({N_REQUESTS} concurrent, {N_REQUESTS} sequential) requests …")
        rates, seq_rates, latencies, lost, sent = [], [], [], 0, 1
        with RssSampler(server.proc.pid) as sampler:
            for i in range(reps):
                for concurrent in ((True, False) if i % 2 == 0 else (False, True)):
                    wall, lats, bad = _burst(server.url, concurrent, seed0=1000 * (i + 1) + 100 * concurrent)
                    sent += N_REQUESTS
                    lost += bad
                    (rates if concurrent else seq_rates).append(N_REQUESTS / wall)
                    if concurrent:
                        latencies.extend(lats)
        time.sleep(1.0)
        idle.append(server.rss())
        on_disk = _pngs(data / "outputs")
        server.check_alive()
    except Exception as exc:
        why = f"{type(exc).__name__}: {exc}"[:500]
        return [Figure.missing(k, t, why) for k, t in zip(("throughput", "latency", "lost", "rss_idle", "rss_peak"), titles)]
    finally:
        server.stop()
    lat_sorted = sorted(latencies)
    p = lambda q: lat_sorted[min(len(lat_sorted) - 1, int(round(q * (len(lat_sorted) - 1))))]
    idle_mib = [x / 2**20 for x in idle]
    figures = [
        Figure.from_samples("throughput", titles[0], [c / s for c, s in zip(rates, seq_rates)],
                            target=">= 0.95x (concurrency costs nothing)", ok=lambda r: r >= 0.95,
                            concurrent_req_per_s=[round(r, 3) for r in rates],
                            sequential_req_per_s=[round(r, 3) for r in seq_rates]),
        Figure("latency", titles[1], "s", round(min(lat_sorted), 3), round(p(0.5), 3), round(p(0.95), 3),
               "— (reported: min / p50 / p95)", None, None,
               {"p50_s": round(p(0.5), 3), "p95_s": round(p(0.95), 3), "requests": len(lat_sorted)}),
        Figure("lost", titles[2], "requests", lost, lost, lost, "0 lost", lost == 0 and on_disk == sent, None,
               {"sent": sent, "bad_answers": lost, "pngs_on_disk": on_disk}),
        Figure.from_samples("rss_idle", titles[3], idle_mib, unit="MiB", target="— (reported)",
                            readings="after warm-up, and after the bursts"),
        Figure("rss_peak", titles[4], "x", None, sampler.peak / idle[0], None, "— (reported)", None, None,
               {"peak_mib": round(sampler.peak / 2**20, 1), "idle_mib": round(idle[0] / 2**20, 1)}),
    ]
    return figures

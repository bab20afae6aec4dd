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


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def run(device: str, quick: bool, log=print) -> list[Figure]:
    from bench.studio_setup import demo_folder, make_data_dir

    reps = 2 if quick else 5
    data = make_data_dir(demo_folder(), name="throughput")
    server = Server(data, device)
    rows = {
        "throughput": ("throughput: 16 concurrent vs 16 sequential requests", ">= 0.95x (concurrency costs nothing)"),
        "requests_per_s": ("requests/s, 16 concurrent, demo model 64x64 10 steps", "— (reported)"),
        "latency_p50": ("latency p50, 16 concurrent", "— (reported)"),
        "latency_p95": ("latency p95, 16 concurrent", "— (reported)"),
        "lost": ("requests lost under concurrency", "0 lost"),
        "rss_idle": ("server RSS idle, demo model loaded", "— (reported)"),
        "rss_generating": ("server peak RSS while generating", "— (reported)"),
    }
    try:
        server.wait_ready()
        _post(server.url, 0)  # warm-up: first-call allocations are not part of either side
        time.sleep(1.0)
        idle = [server.rss()]
        log(f"  throughput: {reps} x ({N_REQUESTS} concurrent, {N_REQUESTS} sequential) requests …")
        rates, seq_rates, p50, p95, peaks, lost, sent = [], [], [], [], [], 0, 1
        for i in range(reps):
            for concurrent in ((True, False) if i % 2 == 0 else (False, True)):
                with RssSampler(server.proc.pid) as sampler:
                    wall, lats, bad = _burst(server.url, concurrent, seed0=1000 * (i + 1) + 100 * concurrent)
                peaks.append(sampler.peak / 2**20)
                sent += N_REQUESTS
                lost += bad
                (rates if concurrent else seq_rates).append(N_REQUESTS / wall)
                if concurrent:
                    p50.append(_pct(lats, 0.5)), p95.append(_pct(lats, 0.95))
            time.sleep(1.0)
            idle.append(server.rss())
        on_disk = _pngs(data / "outputs")
        server.check_alive()
    except Exception as exc:
        why = f"{type(exc).__name__}: {exc}"[:500]
        return [Figure.missing(k, t, why, target) for k, (t, target) in rows.items()]
    finally:
        server.stop()
    fig = lambda key, samples, unit, ok=None, **d: Figure.from_samples(key, rows[key][0], samples, unit=unit,
                                                                       target=rows[key][1], ok=ok, **d)
    return [
        fig("throughput", [c / q for c, q in zip(rates, seq_rates)], "x", lambda r: r >= 0.95,
            concurrent_req_per_s=[round(r, 3) for r in rates], sequential_req_per_s=[round(r, 3) for r in seq_rates]),
        fig("requests_per_s", rates, "req/s"),
        fig("latency_p50", p50, "s"),
        fig("latency_p95", p95, "s"),
        Figure("lost", rows["lost"][0], "requests", lost, lost, lost, rows["lost"][1], lost == 0 and on_disk == sent, None,
               {"sent": sent, "bad_answers": lost, "pngs_on_disk": on_disk}),
        fig("rss_idle", [x / 2**20 for x in idle], "MiB", readings="after warm-up and after each repetition"),
        fig("rss_generating", peaks, "MiB", idle_mib=round(idle[0] / 2**20, 1),
            peak_over_idle=round(max(peaks) / (idle[0] / 2**20), 3)),
    ]

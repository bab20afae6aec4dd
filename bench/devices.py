"""Several devices: 16 concurrent txt2img API requests on a pool of two devices vs one device.

The requests alternate between two checkpoints (8 each): a model is never loaded twice, so a
job for a checkpoint goes to the device holding it, and two checkpoints are what lets two
devices work at once. `--device cpu` compares `--device cpu,cpu` (two workers on the CPU,
the simulated pool) with `--device cpu`; torch already uses every core for one job, so on
the CPU two jobs at once only share the cores (below 1x on 2 cores: each job's threads compete).
`--device cuda` compares every GPU (`--device cuda`) with the first (`cuda:0`); on a machine
with one GPU that row is not measured.
"""
from __future__ import annotations

import shutil
import time
from concurrent.futures import ThreadPoolExecutor

from bench.common import Figure
from bench.server import Server, png_ok, txt2img_body

N_REQUESTS = 16
SECOND = "atelier-bench-second"


def _second_folder():
    """A second tiny checkpoint (other random weights), built once per machine into the bench cache."""
    from bench.sd15 import cache_root
    from modules.models.demo import save_demo_checkpoint

    folder = cache_root() / SECOND
    if not (folder / "model_index.json").exists():
        shutil.rmtree(folder, ignore_errors=True)
        save_demo_checkpoint(folder, seed=1)
    return folder


def _post(url: str, seed: int, checkpoint: str, steps: int) -> bool:
    import httpx

    body = txt2img_body(seed=seed, steps=steps, override_settings={"sd_model_checkpoint": checkpoint})
    try:
        r = httpx.post(url + "/sdapi/v1/txt2img", json=body, timeout=600)
        return r.status_code == 200 and len(r.json().get("images", [])) == 1 and png_ok(r.json()["images"][0])
    except Exception:
        return False


def _burst(url: str, names: tuple[str, str], seed0: int, steps: int) -> tuple[float, int]:
    """(requests per second, answers that were not a valid image) for 16 concurrent requests."""
    start = time.perf_counter()
    with ThreadPoolExecutor(N_REQUESTS) as pool:
        oks = list(pool.map(lambda i: _post(url, seed0 + i, names[i % 2], steps), range(N_REQUESTS)))
    return N_REQUESTS / (time.perf_counter() - start), oks.count(False)


def _pair(device: str) -> tuple[str, str] | None:
    """(one device, the pool) for the bench's --device, or None when there is no pool to compare."""
    if device == "cpu":
        return "cpu", "cpu,cpu"
    import torch

    return ("cuda:0", "cuda") if torch.cuda.device_count() >= 2 else None


def run(device: str, quick: bool, log=print) -> list[Figure]:
    from bench.studio_setup import demo_folder, make_data_dir
    from modules.models.demo import DEMO_NAME

    reps, steps = (2, 6) if quick else (4, 10)
    rows = {
        "pool_throughput": (f"device pool: {N_REQUESTS} concurrent requests, 2 checkpoints, pool vs one device",
                            "— (reported: on the CPU both devices share the cores; on N GPUs up to N x)"),
        "pool_requests_per_s": ("requests/s on the pool, demo models 64x64", "— (reported)"),
        "pool_lost": ("requests lost on the pool", "0 lost"),
    }
    pair = _pair(device)
    if pair is None:
        why = "torch sees fewer than 2 CUDA GPUs: no pool to compare"
        return [Figure.missing(k, t, why, target) for k, (t, target) in rows.items()]
    names = (DEMO_NAME, SECOND)
    servers = []
    try:
        for flag in pair:
            servers.append(Server(make_data_dir(demo_folder(), _second_folder(), name="devices"), flag))
        for server in servers:
            server.wait_ready()
            for name in names:  # warm-up: each checkpoint loaded, first-call allocations paid
                _post(server.url, 0, name, steps)
        log(f"  devices: {reps} x ({N_REQUESTS} concurrent on {pair[0]}, on {pair[1]}) …")
        one, pool, lost = [], [], 0
        for i in range(reps):
            order = (0, 1) if i % 2 == 0 else (1, 0)
            for which in order:
                rate, bad = _burst(servers[which].url, names, seed0=1000 * (i + 1), steps=steps)
                (one if which == 0 else pool).append(rate)
                lost += bad if which == 1 else 0
        for server in servers:
            server.check_alive()
    except Exception as exc:
        why = f"{type(exc).__name__}: {exc}"[:500]
        return [Figure.missing(k, t, why, target) for k, (t, target) in rows.items()]
    finally:
        for server in servers:
            server.stop()
    return [
        Figure.from_samples("pool_throughput", rows["pool_throughput"][0], [p / o for p, o in zip(pool, one)],
                            unit="x", target=rows["pool_throughput"][1],
                            one_device=pair[0], pool=pair[1], one_req_per_s=[round(r, 3) for r in one],
                            pool_req_per_s=[round(r, 3) for r in pool]),
        Figure.from_samples("pool_requests_per_s", rows["pool_requests_per_s"][0], pool, unit="req/s",
                            target=rows["pool_requests_per_s"][1]),
        Figure("pool_lost", rows["pool_lost"][0], "requests", lost, lost, lost, rows["pool_lost"][1], lost == 0, None,
               {"sent": reps * N_REQUESTS}),
    ]

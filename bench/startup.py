"""Figure 2: `python3 launch.py --skip-install` to the first HTTP 200 on / and to the first
image over the API, side by side with `python -c "import gradio"` on the same machine.

The UI target (<= 1.5x import gradio) holds only when heavy imports and model loading
happen after the port is open. Each start uses a fresh data folder holding the demo model.
"""
from __future__ import annotations

import shutil
import statistics
import subprocess
import sys
import time

from bench.common import Figure
from bench.server import REPO, Server, png_ok, server_env, txt2img_body

TARGET_UI = "<= 1.5x import gradio"


def _launcher() -> list[str]:
    # The README's command, run by the interpreter the bench runs in: a python3 from PATH may be another
    # environment (a user's activated venv, a CI runner, a notebook), where launch.py would make an empty ./venv.
    return [sys.executable, str(REPO / "launch.py"), "--skip-install"]


def _import_gradio() -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import gradio"], check=True, env=server_env(), cwd=REPO,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def _one_start(device: str) -> tuple[float, float, int]:
    """(seconds to HTTP 200 on /, seconds to the first image over the API, refused API attempts)."""
    import httpx

    from bench.studio_setup import demo_folder, make_data_dir

    data = make_data_dir(demo_folder(), name="startup")
    server = Server(data, device, _launcher())
    try:
        ui = server.wait_http_200("/")
        refused = 0
        with httpx.Client(timeout=300) as client:
            while True:
                server.check_alive()
                r = client.post(server.url + "/sdapi/v1/txt2img", json=txt2img_body(steps=5))
                if r.status_code == 200 and png_ok(r.json()["images"][0]):
                    image = time.perf_counter() - server.started
                    break
                refused += 1  # models still loading: a client retries, as a script would
                if time.perf_counter() - server.started > 300:
                    raise TimeoutError(f"no image within 300 s; last answer {r.status_code}: {r.text[:300]}")
                time.sleep(0.1)
        return ui, image, refused
    finally:
        server.stop()
        shutil.rmtree(data, ignore_errors=True)


def run(device: str, quick: bool, log=print) -> list[Figure]:
    reps = 2 if quick else 5
    log(f"  start-up: {reps} starts of launch.py alternating with {reps} runs of `import gradio` …")
    try:
        _import_gradio()  # warm the file cache for both sides
        ui, image, gradio, refused = [], [], [], []
        for i in range(reps):
            if i % 2:
                gradio.append(_import_gradio())
            u, im, n = _one_start(device)
            ui.append(u), image.append(im), refused.append(n)
            if not i % 2:
                gradio.append(_import_gradio())
    except Exception as exc:
        why = f"{type(exc).__name__}: {exc}"[:500]
        return [Figure.missing("startup_ui", "start-up to UI (HTTP 200 on /)", why, TARGET_UI),
                Figure.missing("startup_first_image", "start-up to first API image", why)]
    spread = lambda xs: {"min": round(min(xs), 3), "median": round(statistics.median(xs), 3), "max": round(max(xs), 3)}
    return [
        Figure.from_samples("startup_ui", "start-up to UI (HTTP 200 on /)", [u / g for u, g in zip(ui, gradio)],
                            target=TARGET_UI, ok=lambda r: r <= 1.5, ui_s=spread(ui), import_gradio_s=spread(gradio)),
        Figure.from_samples("startup_first_image", "start-up to first API image (vs import gradio)",
                            [m / g for m, g in zip(image, gradio)], target="— (reported)",
                            first_image_s=spread(image), import_gradio_s=spread(gradio), refused_while_loading=refused),
    ]

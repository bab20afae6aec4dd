"""Shared by the reliability tests: real servers over fresh data folders, PNG checks, memory."""
from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import psutil

from tests.conftest import LiveServer, make_data_dir, start_live_server
from tests.support import decode_png  # noqa: F401 (re-exported for the reliability tests)


def start(tmp_path_factory, demo_checkpoint, *flags, prepare=None, auth=None, env=None) -> LiveServer:
    """A `python -m webui` subprocess over a fresh data folder; `prepare(data_dir)` runs before it starts."""
    data = make_data_dir(tmp_path_factory.mktemp("rel-data"), demo_checkpoint)
    if prepare:
        prepare(data)
    return start_live_server(data, *flags, env=env, auth=auth)


def body(seed: int = 1, steps: int = 3, side: int = 64, **extra) -> dict:
    return {"prompt": "a small red boat", "steps": steps, "width": side, "height": side, "seed": seed,
            "sampler_name": "Euler a", **extra}



def rss(server: LiveServer) -> int:
    return psutil.Process(server.proc.pid).memory_info().rss


def assert_json_error(response, where: str = "") -> dict:
    """A refusal: a 4xx with a JSON object body naming the error — never a 500, never HTML."""
    assert 400 <= response.status_code < 500, f"{where}: {response.status_code} {response.text[:300]}"
    assert response.headers.get("content-type", "").startswith("application/json"), f"{where}: {response.text[:200]}"
    data = response.json()
    assert isinstance(data, dict) and (data.get("error") or data.get("detail")), f"{where}: {data}"
    return data


class ProgressWatcher:
    """Polls /sdapi/v1/progress in a thread: the highest step seen per (job, part), for interrupt tests."""

    def __init__(self, url: str, auth=None):
        self.url = url
        self.auth = auth
        self.seen: dict[tuple[str, int], int] = {}
        self.last: dict = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(timeout=5, auth=self.auth) as client:
            while not self._stop.is_set():
                try:
                    state = client.get(self.url + "/sdapi/v1/progress?skip_current_image=true").json()["state"]
                except (httpx.HTTPError, ValueError, KeyError):
                    time.sleep(0.05)
                    continue
                self.last = state
                if state.get("job"):
                    key = (state["job"], state.get("job_no", 0))
                    self.seen[key] = max(self.seen.get(key, 0), state.get("sampling_step", 0))
                time.sleep(0.005)

    def wait_for(self, predicate, timeout: float = 60) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self.last
            if state and predicate(state):
                return state
            time.sleep(0.005)
        raise TimeoutError(f"progress never reached the expected state; last: {self.last}")

    def __enter__(self) -> "ProgressWatcher":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(30)


def all_pngs(folder: Path) -> list[Path]:
    return [p for p in Path(folder).rglob("*.png")]

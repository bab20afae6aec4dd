"""API test helpers: real servers (tests/conftest.py LiveServer), decoding, error-shape checks.

Read-mostly tests use the session's shared servers (tests/conftest.py: plain_server,
two_model_server); start_server is for a flag set or a data folder no other module shares.
"""
from __future__ import annotations

import base64
import io
import shutil
from pathlib import Path

from tests.conftest import SECOND, LiveServer, make_data_dir, start_live_server  # noqa: F401 (SECOND re-exported)
from tests.support import decode_png as png  # noqa: F401 (re-exported)


def start_server(tmp_path_factory, demo_checkpoint, *flags, checkpoints=(), env=None, auth=None) -> LiveServer:
    data = make_data_dir(tmp_path_factory.mktemp("api-data"), demo_checkpoint)
    for ckpt in checkpoints:
        shutil.copytree(ckpt, data / "models" / "Stable-diffusion" / Path(ckpt).name)
    return start_live_server(data, *flags, env=env, auth=auth)



def b64_of(image, fmt: str = "PNG") -> str:
    buf = io.BytesIO()
    image.save(buf, format=fmt)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def assert_json_error(response, low: int = 400, high: int = 499, case=None) -> dict:
    """A refusal: a 4xx with a JSON body {"error", "detail", "field"?}, never a 500 or HTML."""
    assert low <= response.status_code <= high, (str(case)[:200], response.status_code, response.text[:300])
    assert response.headers.get("content-type", "").startswith("application/json"), response.text[:200]
    body = response.json()
    assert isinstance(body, dict) and body.get("error") and body.get("detail"), (str(case)[:200], body)
    return body


def server_errors(server: LiveServer) -> list[str]:
    """Lines of the server log that show an unexpected exception (there must be none)."""
    text = server.log_path.read_text(errors="replace")
    return [line for line in text.splitlines() if "unexpected error on" in line or "Exception in ASGI" in line]

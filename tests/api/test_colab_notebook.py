"""notebooks/colab.ipynb, executed as Colab would run it (nbclient, a real kernel): the settings form
filled in, install (the README's command), start with --share (offline here: no link, the login
still printed last), a model downloaded through the studio's downloader first, the API called from a
later cell, then stopped — so a broken cell is found before a user finds it."""
from __future__ import annotations

import functools
import http.server
import re
import threading
from pathlib import Path

import nbformat
import pytest
import torch
from nbclient import NotebookClient
from safetensors.torch import save_file

from tests.conftest import REPO, free_port, make_data_dir

NOTEBOOK = REPO / "notebooks" / "colab.ipynb"
DEAD_PROXY = "http://127.0.0.1:9"  # the share link's request fails at once, as offline


def set_param(source: str, name: str, value) -> str:
    """Fill one `name = …  #@param` form field, as a Colab user does in the form."""
    pattern = re.compile(rf"^{name} = .*?(\s+#@param.*)?$", re.M)
    assert pattern.search(source), f"no form field {name!r}"
    return pattern.sub(lambda m: f"{name} = {value!r}{m.group(1) or ''}", source, count=1)


@pytest.fixture()
def file_server(tmp_path):
    """A plain HTTP server with one small .safetensors: what the notebook's download field points at."""
    served = tmp_path / "served"
    served.mkdir()
    save_file({"lora_unet_down.lora_down.weight": torch.zeros(2, 4)}, served / "tiny-style.safetensors")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_port}/tiny-style.safetensors"
    httpd.shutdown()


def test_the_colab_notebook_installs_starts_downloads_answers_and_stops(tmp_path, demo_checkpoint, file_server,
                                                                         monkeypatch):
    for key in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.setenv(key, DEAD_PROXY)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    data = make_data_dir(tmp_path / "colab-data", demo_checkpoint)
    nb = nbformat.read(NOTEBOOK, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    settings, install, start, try_api, stop = code
    for name, value in (("hub_model", file_server), ("model_kind", "lora"), ("data_dir", str(data)),
                        ("atelier_dir", str(REPO)), ("port", free_port())):
        settings.source = set_param(settings.source, name, value)
    try_api.source = set_param(set_param(try_api.source, "steps", 2), "size", 64)

    client = NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    try:
        client.execute()
    finally:
        log = data / "atelier-server.log"
        server_log = log.read_text(errors="replace")[-3000:] if log.exists() else "(no log)"

    def printed(cell) -> str:
        return "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")

    assert "Installed" in printed(install)
    login = (data / "login.json").read_text()
    lines = printed(start).strip().splitlines()
    assert lines[-1].startswith("Login:") and re.search(r"'atelier', password '([^']+)'", lines[-1]).group(1) in login
    assert lines[-2].startswith("Public URL:"), "the public URL and the login are the last output"
    assert "Downloaded tiny-style.safetensors into lora" in printed(start), server_log
    assert (data / "models" / "Lora" / "tiny-style.safetensors").is_file()
    assert "(64, 64)" in printed(try_api), server_log
    assert any(o.output_type == "execute_result" and "image/png" in o.get("data", {}) for o in try_api.outputs)
    assert "stopped with exit status" in printed(stop)
    assert "Atelier stopped." in server_log

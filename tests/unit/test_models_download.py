"""Downloads against a small local HTTP server (127.0.0.1) standing in for the Hugging Face hub and
for a direct URL: progress through the job, resume after a cut connection, no half file that
looks complete, and the file lands in the right models/ folder."""
from __future__ import annotations

import hashlib
import http.server
import json
import threading
import time

import pytest

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB
COMMIT = "0123456789abcdef0123456789abcdef01234567"
SNAPSHOT = {"model_index.json": b'{"_class_name": "StableDiffusionPipeline"}', "unet/config.json": b"{}",
            "unet/diffusion_pytorch_model.safetensors": PAYLOAD[:5000]}


class Hub(http.server.BaseHTTPRequestHandler):
    """`/<owner>/<repo>/resolve/<rev>/<file>` like the hub; `/files/<name>` like any web server.
    `/cut/...` sends half the body of the first full request and drops the connection."""

    files: dict = {}
    cut_once: set = set()
    ranges: list = []  # (path, first byte asked for) of every GET with a Range header

    def log_message(self, *args):
        pass

    def _lookup(self):
        path = self.path.split("?")[0]
        if "/resolve/" in path:
            name = path.split("/resolve/", 1)[1].split("/", 1)[1]
            if name in SNAPSHOT:
                return SNAPSHOT[name]
        elif path.startswith(("/files/", "/cut/", "/slow/")):
            name = path.rsplit("/", 1)[-1]
        else:
            return None
        return self.files.get(name)

    def _headers(self, data: bytes, start: int) -> None:
        self.send_header("Content-Length", str(len(data) - start))
        self.send_header("ETag", '"' + hashlib.sha256(data).hexdigest() + '"')
        self.send_header("X-Repo-Commit", COMMIT)
        self.send_header("Accept-Ranges", "bytes")

    def do_HEAD(self):
        data = self._lookup()
        if data is None:
            self.send_response(404)
            self.send_header("X-Error-Code", "EntryNotFound")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self._headers(data, 0)
        self.end_headers()

    def do_GET(self):
        if self.path.startswith("/api/models/"):  # repo info and file tree, as snapshot_download asks
            if "/tree/" in self.path:
                body = json.dumps([{"type": "file", "path": n, "size": len(d), "oid": "0" * 40}
                                   for n, d in SNAPSHOT.items()]).encode()
            else:
                body = json.dumps({"id": "someone/tiny-model", "sha": COMMIT,
                                   "siblings": [{"rfilename": n} for n in SNAPSHOT]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        data = self._lookup()
        if data is None:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        start = 0
        rng = self.headers.get("Range")
        if rng and rng.startswith("bytes="):
            start = int(rng[6:].split("-")[0] or 0)
            self.ranges.append((self.path, start))
        if start:
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        self._headers(data, start)
        self.end_headers()
        body = data[start:]
        if self.path.startswith("/cut/") and self.path not in self.cut_once and not start:
            self.cut_once.add(self.path)
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.connection.shutdown(2)  # the connection drops mid-file
            return
        if self.path.startswith("/slow/"):
            for i in range(0, len(body), 65536):  # a slow link: time to interrupt mid-file
                self.wfile.write(body[i:i + 65536])
                self.wfile.flush()
                time.sleep(0.05)
            return
        self.wfile.write(body)


@pytest.fixture(scope="module")
def hub():
    Hub.files = {"tiny.safetensors": PAYLOAD, "style.pt": PAYLOAD[:1000]}
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture
def studio(tmp_path, monkeypatch, hub):
    from modules.studio import Studio, StudioOptions

    monkeypatch.setenv("HF_ENDPOINT", hub)
    import huggingface_hub.constants as c

    # conftest sets HF_HUB_OFFLINE=1 for the whole run and the library reads it once, at import.
    monkeypatch.setattr(c, "HF_HUB_OFFLINE", False)
    s = Studio(StudioOptions(data_dir=tmp_path / "data", device="cpu", build_demo=False))
    yield s
    s.shutdown()


def _run(studio, request):
    return studio.jobs.run("download", request, timeout=120)


def test_download_from_a_hub_repo_lands_in_the_right_folder_with_progress(studio):
    job = _run(studio, {"source": "someone/tiny-lora", "filename": "tiny.safetensors", "kind": "lora"})
    job.raise_for_error()
    target = studio.paths.model_dir("lora") / "tiny.safetensors"
    assert target.read_bytes() == PAYLOAD
    assert job.result["sha256"] == hashlib.sha256(PAYLOAD).hexdigest()
    assert job.progress.total == len(PAYLOAD) and job.progress.step == len(PAYLOAD)
    assert [e.name for e in studio.registry.list("lora")] == ["tiny.safetensors"]


def test_direct_url_resumes_after_a_cut_and_never_leaves_a_complete_looking_file(studio, hub):
    folder = studio.paths.model_dir("checkpoint")
    url = f"{hub}/cut/tiny.safetensors"
    first = _run(studio, {"source": url})
    assert first.state.value == "failed" and first.error_status < 500, first.error
    assert not (folder / "tiny.safetensors").exists(), "a half file must not look complete"
    assert studio.registry.list("checkpoint") == []
    (part,) = (folder / ".downloads").glob("tiny.safetensors.*.part")
    assert 0 < part.stat().st_size < len(PAYLOAD), "the partial download is kept for a resume"
    have = part.stat().st_size
    second = _run(studio, {"source": url})
    second.raise_for_error()
    assert ("/cut/tiny.safetensors", have) in Hub.ranges, "the second attempt resumed where the first stopped"
    assert (folder / "tiny.safetensors").read_bytes() == PAYLOAD
    assert not part.exists()


def test_whole_repo_becomes_a_folder_in_the_kind_folder(studio):
    job = _run(studio, {"source": "someone/tiny-model"})
    job.raise_for_error()
    folder = studio.paths.model_dir("checkpoint") / "tiny-model"
    assert (folder / "unet" / "diffusion_pytorch_model.safetensors").read_bytes() == PAYLOAD[:5000]
    assert not (folder / ".cache").exists()
    assert [(e.name, e.format) for e in studio.registry.list("checkpoint")] == [("tiny-model", "diffusers")]


def test_interrupted_download_keeps_its_part_and_resumes(studio, hub):
    folder = studio.paths.model_dir("vae")
    job = studio.submit("download", {"source": f"{hub}/slow/tiny.safetensors", "kind": "vae"})
    deadline = time.monotonic() + 30
    while job.progress.step == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    studio.jobs.interrupt(job.id)
    job.wait(60)
    assert job.state.value in ("interrupted", "done") and job.result == {"interrupted": True, "resumable": True}
    (part,) = (folder / ".downloads").glob("tiny.safetensors.*.part")
    assert 0 < part.stat().st_size < len(PAYLOAD) and not (folder / "tiny.safetensors").exists()
    done = _run(studio, {"source": f"{hub}/slow/tiny.safetensors", "kind": "vae"})
    done.raise_for_error()
    assert (folder / "tiny.safetensors").read_bytes() == PAYLOAD


def test_a_file_the_hub_does_not_have_fails_the_job_naming_the_source(studio):
    job = _run(studio, {"source": "someone/tiny-lora", "filename": "missing.safetensors"})
    assert job.state.value == "failed" and job.error_status < 500 and job.error_field == "source", job.error


@pytest.mark.parametrize("request_body,field", [
    ({"source": "someone/tiny-lora", "filename": "readme.md"}, "filename"),
    ({"source": "someone/tiny-lora", "filename": "../../etc/x.safetensors"}, "filename"),
    ({"source": "not a repo"}, "source"),
    ({"source": "someone/tiny-lora", "filename": "tiny.safetensors", "kind": "nonsense"}, "kind"),
])
def test_bad_downloads_are_refused_at_submit_naming_the_field(studio, request_body, field):
    """Refused before the job waits in the queue (nothing to fetch decides these)."""
    from modules.errors import AtelierError

    with pytest.raises(AtelierError) as refused:
        studio.jobs.submit("download", request_body)
    assert refused.value.status < 500 and refused.value.field == field, (refused.value.field, str(refused.value))
    assert not any(p.is_file() and not p.name.startswith(".") for p in studio.paths.models.rglob("*")
                   if ".downloads" not in p.parts)

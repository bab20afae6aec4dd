"""Add a model from a Hugging Face repo or a direct URL, into the right models/ folder, as a job.

Hub files go through huggingface_hub (`hf_hub_download`, which honours HF_ENDPOINT and resumes
from its `.incomplete` file); a direct URL is streamed with HTTP Range resume. Both write into a
hidden `.downloads/` folder inside the kind's folder (the registry skips dot-names) and only a
complete file is renamed into place, so a failed or interrupted download never leaves a file
that looks complete — and the next attempt resumes where it stopped.
"""
from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

from pydantic import BaseModel, ConfigDict, ValidationError

from modules.errors import AtelierError, InvalidRequest
from modules.paths import resolve_inside

log = logging.getLogger("atelier.models")

ALLOWED_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin", ".gguf")
_REPO = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}/[\w.-]{1,96}$")


class DownloadRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source: str  # "owner/repo", "owner/repo/path/file.safetensors" or an http(s) URL
    kind: str = "checkpoint"  # which models/ folder: checkpoint, lora, vae, embedding, llm, vlm
    filename: str | None = None  # the file inside the repo (with a repo id)
    revision: str = "main"


class _Stopped(Exception):
    """Raised from the progress callback when the job is interrupted."""


def parse(request) -> DownloadRequest:
    try:
        req = request if isinstance(request, DownloadRequest) else DownloadRequest.model_validate(request)
    except ValidationError as exc:
        raise InvalidRequest.from_validation(exc, default="source") from None
    req.source = req.source.strip()
    if not req.source or len(req.source) > 2000:
        raise InvalidRequest("give a Hugging Face repo id (owner/name) or an http(s) URL", "source")
    return req


def _target_name(name: str) -> str:
    base = Path(unquote(name)).name
    if not base.lower().endswith(ALLOWED_SUFFIXES):
        raise InvalidRequest(f"{base!r} is not a model file; expected one of {', '.join(ALLOWED_SUFFIXES)}",
                             "filename")
    return base


@dataclass(frozen=True)
class DownloadPlan:
    """Where a download comes from and lands: checked before anything is fetched."""

    how: str  # "url", "snapshot" (a whole repo) or "file" (one file of a repo)
    folder: Path  # the kind's models/ folder
    final: Path  # the file or folder it becomes
    repo: str | None = None
    filename: str | None = None


def plan_download(req: DownloadRequest, paths) -> DownloadPlan:
    """Every check that needs no network: the kind, the source's shape, the target name inside the folder."""
    folder = paths.model_dir(req.kind)  # an unknown kind is refused here, naming the field
    if urlparse(req.source).scheme in ("http", "https"):
        name = _target_name(req.filename or urlparse(req.source).path)
        return DownloadPlan("url", folder, resolve_inside(folder, name, field_name="filename", must_exist=False))
    if "/" in req.source and not req.filename and len(req.source.split("/")) == 2:
        repo = _repo_and_file(req, need_file=False)[0]
        final = resolve_inside(folder, repo.split("/")[1], field_name="source", must_exist=False)
        return DownloadPlan("snapshot", folder, final, repo)  # a diffusers or transformers folder
    repo, filename = _repo_and_file(req)
    final = resolve_inside(folder, _target_name(filename), field_name="filename", must_exist=False)
    return DownloadPlan("file", folder, final, repo, filename)


def run_download_job(services, ctx, request) -> dict:
    req = parse(request)
    plan = plan_download(req, services.paths)
    folder, final, name = plan.folder, plan.final, plan.final.name
    folder.mkdir(parents=True, exist_ok=True)
    staging = folder / ".downloads"
    staging.mkdir(exist_ok=True)
    try:
        if plan.how == "url":
            # The part file is tied to its URL, so a resume never appends another file's bytes.
            url_id = hashlib.sha1(req.source.encode()).hexdigest()[:8]
            done = _download_url(req.source, staging / f"{name}.{url_id}.part", ctx, name)
        elif plan.how == "snapshot":
            done = _download_snapshot(plan.repo, req.revision, staging / re.sub(r"[^\w.-]", "--", plan.repo), ctx, name)
        else:
            done = _download_hub(plan.repo, plan.filename, req.revision, staging / re.sub(r"[^\w.-]", "--", plan.repo),
                                 ctx, name)
    except _Stopped:
        return {"interrupted": True, "resumable": True}
    if final.exists():
        raise InvalidRequest(f"{final.name} is already in {folder.name}/; delete or rename it first", "filename")
    os.replace(done, final)  # appears whole or not at all
    services.registry.refresh(req.kind)
    entry = services.registry.get(req.kind, final.relative_to(folder).as_posix())
    services.registry.ensure_hash(entry)
    return {"kind": req.kind, "name": entry.name, "size": entry.size, "sha256": entry.sha256}


def _repo_and_file(req: DownloadRequest, need_file: bool = True) -> tuple[str, str | None]:
    parts = req.source.split("/")
    repo = "/".join(parts[:2])
    filename = req.filename or ("/".join(parts[2:]) if len(parts) > 2 else None)
    if not _REPO.match(repo) or ".." in repo:
        raise InvalidRequest(f"{req.source!r} is neither an http(s) URL nor a Hugging Face repo id (owner/name)",
                             "source")
    if not filename:
        if not need_file:
            return repo, None
        raise InvalidRequest("name the file inside the repo (filename), e.g. model.safetensors", "filename")
    if filename.startswith("/") or ".." in filename.split("/"):
        raise InvalidRequest("must be a path inside the repo", "filename")
    return repo, filename


def _progress_class(ctx, label: str):
    """A tqdm class that reports huggingface_hub's byte counts to the job and stops on interrupt."""
    from tqdm.auto import tqdm

    class JobProgress(tqdm):
        def __init__(self, *args, **kwargs):
            kwargs["disable"] = False
            kwargs["file"] = open(os.devnull, "w")  # nothing on the console; the job shows progress
            super().__init__(*args, **kwargs)

        def update(self, n=1):
            out = super().update(n)
            if self.total:
                ctx.progress(int(self.n), int(self.total), text=f"downloading {label}")
            if ctx.interrupted:
                raise _Stopped()
            return out

        def close(self):
            super().close()
            with_fp = self.fp
            if with_fp is not None and not with_fp.closed:
                with_fp.close()

    return JobProgress


def _download_hub(repo: str, filename: str, revision: str, staging: Path, ctx, label: str) -> Path:
    from huggingface_hub import constants, hf_hub_download

    if constants.HF_HUB_OFFLINE:
        raise InvalidRequest("HF_HUB_OFFLINE is set, so the hub cannot be reached; unset it (or give a direct URL) "
                             "to download", "source")
    try:
        # HF_ENDPOINT is read here, not only at import, so a mirror set later is honoured too.
        path = hf_hub_download(repo, filename, revision=revision, local_dir=str(staging),
                               endpoint=os.environ.get("HF_ENDPOINT") or None, tqdm_class=_progress_class(ctx, label))
    except _Stopped:
        raise
    except AtelierError:
        raise
    except Exception as exc:  # not found, no network, refused: say which and keep the partial file for a resume
        raise InvalidRequest(f"could not download {filename} from {repo}: {type(exc).__name__}: "
                             f"{str(exc).splitlines()[0][:300] if str(exc) else ''}", "source") from None
    return Path(path)


def _download_snapshot(repo: str, revision: str, staging: Path, ctx, label: str) -> Path:
    """A whole hub repo into `staging` (files already there are kept: a resume), without hub metadata."""
    from huggingface_hub import constants, snapshot_download

    if constants.HF_HUB_OFFLINE:
        raise InvalidRequest("HF_HUB_OFFLINE is set, so the hub cannot be reached; unset it to download", "source")
    try:
        snapshot_download(repo, revision=revision, local_dir=str(staging), max_workers=2,
                          endpoint=os.environ.get("HF_ENDPOINT") or None, tqdm_class=_progress_class(ctx, label))
    except (_Stopped, AtelierError):
        raise
    except Exception as exc:
        raise InvalidRequest(f"could not download {repo}: {type(exc).__name__}: "
                             f"{str(exc).splitlines()[0][:300] if str(exc) else ''}", "source") from None
    shutil.rmtree(staging / ".cache", ignore_errors=True)  # huggingface_hub's resume bookkeeping
    if not any(staging.iterdir()):
        raise InvalidRequest(f"{repo} has no files", "source")
    return staging


def _download_url(url: str, part: Path, ctx, label: str) -> Path:
    """Stream `url` into `part`, resuming from its size; returns `part` once complete."""
    import httpx

    have = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={have}-"} if have else {}
    try:
        with httpx.stream("GET", url, headers=headers, follow_redirects=True, timeout=60) as r:
            if r.status_code == 416 and have:  # already complete
                return part
            if r.status_code >= 400:
                raise InvalidRequest(f"{url} answered HTTP {r.status_code}", "source")
            if r.status_code != 206:
                have = 0  # the server ignored Range: start over
            length = int(r.headers.get("content-length") or 0)
            total = have + length if length else 0
            with open(part, "ab" if have else "wb") as f:
                done = have
                for block in r.iter_bytes():  # as it arrives, so a cut keeps every byte received
                    f.write(block)
                    done += len(block)
                    if total:
                        ctx.progress(done, total, text=f"downloading {label}")
                    if ctx.interrupted:
                        raise _Stopped()
            if total and part.stat().st_size != total:
                raise InvalidRequest(f"{url} ended early ({part.stat().st_size} of {total} bytes); "
                                     "run the download again to resume", "source")
    except (_Stopped, AtelierError):
        raise
    except httpx.HTTPError as exc:
        raise InvalidRequest(f"could not download {url}: {type(exc).__name__}: {exc}; run it again to resume",
                             "source") from None
    return part


def clear_partial(folder: Path) -> None:
    """Forget every partial download of a kind's folder."""
    shutil.rmtree(Path(folder) / ".downloads", ignore_errors=True)

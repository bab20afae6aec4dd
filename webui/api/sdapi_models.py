"""/sdapi/v1 listings and settings: models, samplers, LoRAs, options, flags, memory.

Shapes follow A1111's modules/api/models.py (SDModelItem, SamplerItem, …). Listing reads
the registry (what is on disk); switching the model goes through the job queue.
"""
from __future__ import annotations

import asyncio
import dataclasses
import json
from pathlib import Path

from starlette.requests import Request  # at module level: FastAPI resolves endpoint annotations by name

from modules.errors import AtelierError, InvalidRequest
from webui.api.common import Waiter, ensure_ready, read_json_object
from webui.checkpoints import find_checkpoint, switch_checkpoint

_SECRET_FLAGS = ("gradio_auth", "api_auth", "api_key")
# Settings whose value becomes a path under outputs/: refused if they would leave it.
_OUTPUT_DIR_SETTINGS = ("outdir_txt2img_samples", "outdir_img2img_samples", "outdir_txt2img_grids",
                        "outdir_img2img_grids", "outdir_extras_samples")


def add_routes(r, studio, waiter: Waiter) -> None:
    from fastapi.responses import JSONResponse

    @r.get("/sd-models")
    def sd_models():
        """Checkpoints on disk: [{title, model_name, hash, sha256, filename, config}]."""
        return [_model_item(e) for e in studio.registry.list("checkpoint")]

    @r.post("/refresh-checkpoints")
    def refresh_checkpoints():
        studio.registry.refresh("checkpoint")
        return None

    @r.get("/samplers")
    def samplers():
        out = []
        for spec in studio.samplers.specs():
            out.append({"name": spec.name, "aliases": list(spec.aliases), "options": dict(spec.options)})
        return out

    @r.get("/schedulers")
    def schedulers():
        return _schedulers()

    @r.get("/latent-upscale-modes")
    def latent_upscale_modes():
        from modules.diffusion import hires

        return [{"name": n} for n in hires.LATENT_MODES]

    @r.get("/loras")
    def loras():
        """LoRA files: [{name, alias, path, metadata}] (metadata: the safetensors header's __metadata__)."""
        out = []
        for e in studio.registry.list("lora"):
            meta = e.metadata or {}
            name = Path(e.name).stem
            out.append({"name": name, "alias": meta.get("ss_output_name") or name, "path": str(e.path), "metadata": meta})
        return out

    @r.post("/refresh-loras")
    def refresh_loras():
        studio.registry.refresh("lora")
        return None

    @r.get("/embeddings")
    def embeddings():
        """A1111's EmbeddingsResponse as of the loaded checkpoint's last sync (each generation syncs): `loaded`
        what it took, `skipped` what did not fit or was refused (a pickle that needs code), with `error` saying
        why. A file added since shows after the next generation, as in A1111; one removed is not listed."""
        ckpt = studio.models.active if studio.ready.is_set() else None
        on_disk = {str(e.path): e for e in studio.registry.list("embedding")}
        if ckpt is None:
            return {"loaded": {}, "skipped": {}}

        def item(entry) -> dict:
            meta = entry.metadata or {}
            return {"step": None, "sd_checkpoint": ckpt.entry.short_hash, "sd_checkpoint_name": ckpt.entry.stem,
                    "shape": int(meta.get("shape", 0) or 0), "vectors": int(meta.get("vectors", 0) or 0)}

        loaded = {e.stem: item(e) for e in ckpt.embeddings if str(e.path) in on_disk}
        skipped = {on_disk[path].stem: {**item(on_disk[path]), "error": why}
                   for path, why in ckpt.skipped_embeddings.items() if path in on_disk}
        return {"loaded": loaded, "skipped": skipped}

    @r.post("/refresh-embeddings")
    def refresh_embeddings():
        """Rescan models/embeddings; the next generation loads what is new into the checkpoint."""
        studio.registry.refresh("embedding")
        return None

    @r.get("/sd-vae")
    def sd_vae():
        return [{"model_name": Path(e.name).stem, "filename": str(e.path)} for e in studio.registry.list("vae")]

    @r.post("/refresh-vae")
    def refresh_vae():
        studio.registry.refresh("vae")
        return None

    @r.get("/options")
    def get_options():
        """Every setting, A1111 names; sd_model_checkpoint is the loaded checkpoint's title."""
        values = studio.settings.get().model_dump(mode="json")
        active = studio.models.active if studio.ready.is_set() else None
        if active is not None:
            values["sd_model_checkpoint"] = active.entry.title
            values["sd_checkpoint_hash"] = active.entry.sha256
        return values

    @r.post("/options")
    async def set_options(request: Request):
        """Change settings; `sd_model_checkpoint` loads that checkpoint (through the job queue) before answering.
        Options Atelier does not have are ignored and named in the X-Atelier-Ignored-Options header."""
        body = await read_json_object(request)
        ignored = await _apply_options(studio, waiter, body)
        # json.dumps escapes to ASCII: a header cannot carry other bytes or line breaks.
        headers = {"X-Atelier-Ignored-Options": json.dumps(ignored)[:2000]} if ignored else None
        return JSONResponse(None, headers=headers)

    @r.get("/cmd-flags")
    def cmd_flags():
        """The command-line flags in effect (passwords masked, unlike A1111)."""
        flags = {}
        for name, value in dataclasses.asdict(studio.options).items():
            if name in _SECRET_FLAGS and value:
                value = "***"
            flags[name] = str(value) if isinstance(value, Path) else value
        flags.update({"api": True, "nowebui": False})
        return flags

    @r.get("/memory")
    def memory():
        """A1111's MemoryResponse: {ram: {free, used, total}, cuda: {system, allocated, reserved} | {error}}."""
        from modules.devices import memory_readings

        m = studio.models.memory() if studio.ready.is_set() else memory_readings("cpu")  # RAM only: no device yet
        ram = {"free": m["ram"]["total"] - m["process_rss"], "used": m["process_rss"], "total": m["ram"]["total"],
               "available": m["ram"]["available"]}
        cuda = {"error": "unavailable"}
        if "cuda" in m:
            c = m["cuda"]
            cuda = {"system": {"free": c["free"], "used": c["used"], "total": c["total"]},
                    "allocated": {"current": c["allocated"], "peak": c["peak_allocated"]},
                    "reserved": {"current": c["reserved"], "peak": c["reserved"]}}
        return {"ram": ram, "cuda": cuda}

    # Listings A1111 clients ask for at start (webuiapi calls /scripts).
    @r.get("/scripts")
    def scripts():
        """The scripts a request can name in script_name: the X/Y/Z plot."""
        from modules.diffusion import xyz

        return {"txt2img": [xyz.SCRIPT_NAME], "img2img": [xyz.SCRIPT_NAME]}

    @r.get("/script-info")
    def script_info():
        """A1111's ScriptInfo of each script: its script_args, in order, with defaults and choices."""
        return _script_info()

    @r.get("/prompt-styles")
    def prompt_styles():
        """The styles of styles.csv: [{name, prompt, negative_prompt}]."""
        return [{"name": s.name, "prompt": s.prompt, "negative_prompt": s.negative_prompt} for s in studio.styles.list()]

    @r.get("/hypernetworks")
    def hypernetworks():
        return []

    @r.get("/face-restorers")
    def face_restorers():
        """A1111's FaceRestorerItem list of the restorers that can run: GFPGAN when a model is in models/GFPGAN."""
        from modules.models import face_restorers as restorers

        folder = str(studio.paths.model_dir(restorers.GFPGAN_KIND))
        return [{"name": name, "cmd_dir": folder} for name in restorers.installed(studio.registry)]


def _script_info() -> list[dict]:
    from modules.diffusion import xyz
    from modules.diffusion.xyz_axes import axes_for

    out = []
    for kind in ("txt2img", "img2img"):
        labels = [a.label for a in axes_for(kind)]
        args = []
        for name in xyz.ARGS:
            value = xyz.DEFAULTS[name]
            choices = labels if name.endswith("_type") else None
            args.append({"label": name, "value": value, "minimum": 0 if name == "margin_size" else None,
                         "maximum": 500 if name == "margin_size" else None, "step": None, "choices": choices})
        out.append({"name": xyz.SCRIPT_NAME, "is_alwayson": False, "is_img2img": kind == "img2img", "args": args})
    return out


def _model_item(e) -> dict:
    return {"title": e.title, "model_name": e.stem, "hash": e.short_hash, "sha256": e.sha256,
            "filename": str(e.path), "config": None}


def _schedulers() -> list[dict]:
    from modules.diffusion.samplers import SCHEDULE_API_NAMES

    return [{"name": api, "label": label, "aliases": None, "default_rho": -1, "need_inner_model": False}
            for label, api in SCHEDULE_API_NAMES.items()]


async def _apply_options(studio, waiter: Waiter, body: dict) -> list[str]:
    """Validate everything first, then save the settings, then switch the model."""
    from modules.paths import resolve_inside
    from modules.settings import Settings

    changes = dict(body)
    wanted = changes.pop("sd_model_checkpoint", None)
    changes.pop("sd_checkpoint_hash", None)  # read-only in A1111 too
    ignored = sorted(k for k in changes if k not in Settings.model_fields)
    for key in ignored:
        changes.pop(key)
    for key in _OUTPUT_DIR_SETTINGS:
        if key in changes:
            if not isinstance(changes[key], str):
                raise InvalidRequest("must be a folder name inside outputs/", key)
            resolve_inside(studio.paths.outputs, changes[key], field_name=key, must_exist=False)
    vae = changes.get("sd_vae")
    if isinstance(vae, str) and vae not in ("Automatic", "None"):
        try:
            studio.registry.get("vae", vae)
        except AtelierError as exc:
            exc.field = "sd_vae"
            raise
    entry = find_checkpoint(studio, wanted) if wanted is not None else None
    if changes:
        await asyncio.to_thread(studio.settings.update, changes)  # an atomic write with fsync: off the event loop
    if entry is not None:
        await ensure_ready(studio, waiter)
        await waiter.run(switch_checkpoint, studio, entry.name)
    return ignored

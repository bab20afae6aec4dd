"""Runs txt2img / img2img / inpaint jobs: typed request in, saved PNGs with infotext out.

The order of one job, as in A1111's process_images:
  before_generate hook → checkpoint → LoRAs from the prompt → for each batch (batch count):
  encode prompts, sample (txt2img.py / img2img.py / inpaint.py), restore faces, after_generate hook, save
  each PNG, on_image_saved hook; stop on interrupt, go on after skip.
Hooks run here, on the job worker, never in the UI event loop. Runners see
`ctx.services` (DiffusionServices), never the Studio.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from modules.diffusion import conditioning, flow, hires, img2img, prompts, results, tiling, txt2img, xyz
from modules.diffusion.params import GenerationRequest, GenerationResult, Img2ImgRequest
from modules.diffusion.sampling import Run
from modules.diffusion.seeds import SeedPlan
from modules.diffusion.styles import StyledPrompts
from modules.errors import AtelierError, InvalidRequest
from modules.jobs import JobContext
from modules.models import face_restorers, speed, torch_compile
from modules.postprocess.faces import restore_images

if TYPE_CHECKING:
    from modules.diffusion.samplers import SamplerRegistry
    from modules.diffusion.styles import StyleStore
    from modules.extensions.hooks import HookRegistry
    from modules.models.manager import ModelManager
    from modules.models.registry import ModelRegistry
    from modules.outputs import OutputWriter
    from modules.settings import SettingsStore


@dataclass(frozen=True)
class DiffusionServices:
    """What a generation job sees of the studio."""

    models: "ModelManager"
    samplers: "SamplerRegistry"
    hooks: "HookRegistry"
    outputs: "OutputWriter"
    settings: "SettingsStore"
    styles: "StyleStore"


def validator(samplers: "SamplerRegistry", styles: "StyleStore", registry: "ModelRegistry", settings: "SettingsStore"):
    """The job kinds' submit-time check: what the request types cannot see alone (sampler, upscaler,
    style, face restorer and, for an X/Y/Z plot's cells, checkpoint names live in registries), refused before the
    request waits in the queue. Everything else (LoRA tags, the mask's shape, the plot's arguments) the
    request types check themselves (params.py)."""
    def check(req) -> None:
        samplers.resolve(req.sampler_name, req.scheduler)
        hires.check(samplers, req, registry)
        styles.resolve(req.styles)
        if req.restore_faces:
            face_restorers.find(registry, req.face_restorer(settings.get().face_restoration_model), "restore_faces")

    def validate(req) -> None:
        if not isinstance(req, GenerationRequest):
            raise InvalidRequest("send a txt2img or img2img request", "request")
        if not xyz.requested(req):
            check(req)
            return
        names_seen = set()
        for cell in xyz.plan(req).cells:
            try:
                check(cell.request)
                name = cell.request.checkpoint_override
                if name and name not in names_seen:
                    registry.get("checkpoint", name)
                    names_seen.add(name)
            except AtelierError as exc:
                raise type(exc)(f"an X/Y/Z cell: {exc.field}: {exc.message}", xyz.FIELD) from None
    return validate


def run_txt2img(ctx: JobContext, req) -> GenerationResult:
    settings = ctx.services.settings.get()
    return _run_or_plot(ctx, req, txt2img.batch, settings.outdir_txt2img_samples, settings.outdir_txt2img_grids)


def run_img2img(ctx: JobContext, req) -> GenerationResult:
    settings = ctx.services.settings.get()
    return _run_or_plot(ctx, req, img2img.batch, settings.outdir_img2img_samples, settings.outdir_img2img_grids)


def _run_or_plot(ctx: JobContext, req, make_batch, outdir: str, grid_dir: str) -> GenerationResult:
    """One generation, or an X/Y/Z plot: a generation per cell (each saved as usual), then the grid."""
    if not xyz.requested(req):
        return _run(ctx, req, make_batch, outdir)
    services: DiffusionServices = ctx.services

    def save_grid(generated) -> None:
        if req.save_images and services.settings.get().grid_save:
            generated.path = services.outputs.save_png(generated.image, grid_dir, generated.seed, generated.infotext)
            services.hooks.image_saved(generated)

    return xyz.run(ctx, req, lambda cell_ctx, cell_req: _run(cell_ctx, cell_req, make_batch, outdir), save_grid)


def _run(ctx: JobContext, req, make_batch, outdir: str) -> GenerationResult:
    services: DiffusionServices = ctx.services
    req = services.hooks.before_generate(req)
    validator(services.samplers, services.styles, services.models.registry, services.settings)(req)  # a hook may have changed it
    texts = StyledPrompts.of(req, services.styles.resolve(req.styles))  # A1111 applies styles as the job starts
    spec, schedule = services.samplers.resolve(req.sampler_name, req.scheduler)
    plan = SeedPlan.for_request(req.seed, req.subseed, req.subseed_strength, req.n_iter * req.batch_size)
    is_hires = bool(req.enable_hr) and not isinstance(req, Img2ImgRequest)
    _, lora_list = prompts.extract_loras(texts.prompt)  # a style may bring LoRAs too
    settings = services.settings.get()
    models = services.models
    with models.checkpoint(req.checkpoint_override, req.additional_modules) as ckpt:
        run = Run(samplers=services.samplers, ctx=ctx, req=req, ckpt=ckpt, plan=plan, sampler=spec.name,
                  schedule=schedule, clip_skip=_clip_skip(req, settings), texts=texts,
                  fix_steps=settings.img2img_fix_steps,
                  face_restorer=req.face_restorer(settings.face_restoration_model) if req.restore_faces else "",
                  passes=2 if is_hires else 1, preview_every=settings.show_progress_every_n_steps)
        flow.check(run)  # what a Flux / SD3 checkpoint cannot do yet, refused by field before any work
        with _loras(models, ckpt, lora_list) as applied, tiling.maybe(ckpt.pipe, req.tiling), \
                speed.autocast(settings, ckpt.pipe, ckpt.pipe.device.type), \
                torch_compile.reported(ctx.log, ckpt, settings.compile_unet):
            return _batches(ctx, services, run, make_batch, outdir, applied)


def _batches(ctx: JobContext, services: "DiffusionServices", run: Run, make_batch, outdir: str,
             applied: list) -> GenerationResult:
    """Every batch of the run: made, faces restored, post-processed by extensions, saved."""
    req, texts, models, ckpt = run.req, run.texts, services.models, run.ckpt
    settings = services.settings.get()
    images: list = []
    ctx.set_parts(req.n_iter * run.passes)
    for iteration in range(req.n_iter):
        if ctx.interrupted:
            break
        batch_range = run.batch_indices(iteration)

        def one_batch(_iteration=iteration, _n=len(batch_range)):
            run.conditioning = conditioning.for_pass(run, ckpt.pipe, [texts.prompt] * _n,
                                                     [texts.negative_prompt] * _n, req.steps)
            return make_batch(run, _iteration)

        made = models.retry_on_oom(ckpt, one_batch)
        if req.restore_faces:  # A1111: after decoding, before the infotext's hooks and the save
            made = restore_images(models, run.face_restorer, made, 1.0, "restore_faces")
        batch = results.batch_result(run, made, list(batch_range), texts.prompt, texts.negative_prompt, applied)
        batch = services.hooks.after_generate(batch)  # extensions post-process before the save
        for generated in batch.images:
            if req.save_images:  # each batch is on disk before the next starts
                generated.path = services.outputs.save(generated.image, outdir, generated.seed, generated.infotext,
                                                       settings.samples_format, settings.jpeg_quality)
                services.hooks.image_saved(generated)
            images.append(generated)
        ctx.take_skip()  # a skip finished this batch early; the next one starts fresh
    return GenerationResult(images=images, request=req, interrupted=ctx.interrupted,
                            info=results.info(run, images, req.prompt, req.negative_prompt))


def _clip_skip(req, settings) -> int:
    """The request's clip_skip, else its override_settings, else the CLIP_stop_at_last_layers setting."""
    if req.clip_skip is not None or "CLIP_stop_at_last_layers" in req.override_settings:
        return req.effective_clip_skip
    return settings.CLIP_stop_at_last_layers


@contextlib.contextmanager
def _loras(models: "ModelManager", ckpt, wanted: list[tuple[str, float]]):
    """The prompt's LoRAs applied for the job (the model manager makes it reversible). Called with none too:
    LoRAs fused by an earlier job come out of the weights then."""
    with models.loras(ckpt, wanted) as applied:
        yield list(applied)

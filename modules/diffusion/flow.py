"""Flow-matching transformer checkpoints (Flux.1, SD3 / SD3.5): what their runs do differently from the UNet
path, in one place. The rest of a generation (seeds, progress, interrupt, face restoration, the save) is shared.

- Sampling: flow matching has one sampler here, Euler (diffusers' FlowMatchEulerDiscreteScheduler, from the
  checkpoint's own scheduler config), with the schedule types that class takes (Karras, Exponential).
- Prompts go to the pipeline as text: T5 reads long prompts whole (no 75-token chunks). A1111's emphasis
  markup is taken out of the text, not applied (the pipelines' encoders take no per-token weights).
- Guidance, as Forge maps A1111's fields: Flux-dev's distilled guidance is `distilled_cfg_scale`; `cfg_scale`
  above 1 runs true CFG with the negative prompt (2 passes a step); SD3 uses `cfg_scale` as the UNet path does.
- img2img and inpaint through diffusers' Flux / SD3 img2img and inpaint pipelines (variation seeds blend into
  flow matching's `scale_noise`, variation.py).
- LoRAs as for every checkpoint (models/lora.py: diffusers' Flux / SD3 loaders read PEFT, kohya, XLabs, …).
- Hires fix: the first pass's latents (Flux: unpacked) upscaled and denoised again by the img2img pipeline;
  img2img's latent upscale (resize mode 3) and inpaint's latent noise / latent nothing the same way: the
  16-channel latents (unpacked: the pipelines take them as the image and pack them themselves).
- Prompt editing and alternation on SD3: each distinct text encoded by the pipeline's own encode_prompt, the
  embeddings swapped per step as for SDXL (conditioning.py). Not on Flux: its loop takes only `prompt_embeds`
  (T5) back from callback_on_step_end — the pooled CLIP vector and true CFG's negative embeddings stay those of
  the first step — so a per-step swap would be half a prompt change; refused by `prompt`.
- Not yet: tiling — refused by its field.
"""
from __future__ import annotations

from modules.diffusion import prompt_schedule, prompts
from modules.diffusion.samplers import _SIGMA_FLAGS, SCHEDULE_OPTIONS, SamplerSpec
from modules.errors import InvalidRequest

FLOW_ARCHS = frozenset({"flux", "sd3"})
LABELS = {"flux": "Flux", "sd3": "SD3"}
DISTILLED_CFG_DEFAULT = 3.5  # Forge's default for Flux-dev
SIDE_MULTIPLE = 16  # 8x VAE and 2x2 patches (Flux's packing, SD3's patch size)
_EULER = SamplerSpec("Euler", "FlowMatchEulerDiscreteScheduler", aliases=("k_euler",))


def is_flow(arch: str) -> bool:
    return arch in FLOW_ARCHS


def check(run) -> None:
    """Refuse, by field, what this checkpoint's run cannot do (before anything is encoded)."""
    from modules.diffusion.params import Img2ImgRequest

    req, arch = run.req, run.arch
    if not is_flow(arch):
        if req.distilled_cfg_scale != DISTILLED_CFG_DEFAULT:
            raise InvalidRequest("distilled guidance is Flux-dev's; this checkpoint uses cfg_scale — leave "
                                 f"distilled_cfg_scale at {DISTILLED_CFG_DEFAULT}", "distilled_cfg_scale")
        return
    label = LABELS[arch]
    if isinstance(req, Img2ImgRequest):
        _check_img2img(req, label)
    for name in ("width", "height"):
        if getattr(req, name) % SIDE_MULTIPLE:
            raise InvalidRequest(f"{label} needs a multiple of {SIDE_MULTIPLE} (its latents are packed in 2x2 "
                                 "patches)", name)
    if req.enable_hr and not isinstance(req, Img2ImgRequest):
        for name, side in zip(("hr_resize_x", "hr_resize_y"), req.hires_size()):
            if side % SIDE_MULTIPLE:
                field = name if req.hr_resize_x or req.hr_resize_y else "hr_scale"
                raise InvalidRequest(f"{label}'s hires size must be a multiple of {SIDE_MULTIPLE} ({side} is not); "
                                     "change the upscale factor or the resize", field)
    if req.tiling:
        raise InvalidRequest(f"tiling with {label} checkpoints is not available yet; turn it off", "tiling")
    texts = (run.texts.prompt, run.texts.negative_prompt)
    if not schedules_prompts(arch) and any(prompt_schedule.has_schedule(t) for t in texts):
        raise InvalidRequest(f"prompt editing ([from:to:when], [a|b]) with {label} is not available: its pipeline "
                             "swaps only the T5 embeddings per step, not the pooled CLIP ones", "prompt")
    distilled = arch == "flux" and run.ckpt.pipe.transformer.config.guidance_embeds  # dev has it, schnell not
    if not distilled and req.distilled_cfg_scale != DISTILLED_CFG_DEFAULT:
        raise InvalidRequest(f"this {label} checkpoint has no distilled guidance (Flux-dev's); it uses cfg_scale "
                             f"— leave distilled_cfg_scale at {DISTILLED_CFG_DEFAULT}", "distilled_cfg_scale")
    scheduler_options(arch, run.sampler, run.schedule)


def _check_img2img(req, label: str) -> None:
    if req.is_inpaint and req.subseed_strength > 0 and (req.denoising_strength or 0) >= 1:
        raise InvalidRequest(f"variation seeds for {label} inpaint at full denoising strength are not available "
                             "yet; lower the denoising strength below 1", "subseed_strength")


def make_scheduler(arch: str, sampler: str, schedule: str, base_config: dict):
    """A fresh flow-matching Euler scheduler from the checkpoint's config, with the schedule type's options."""
    return _EULER.cls().from_config(dict(base_config), **scheduler_options(arch, sampler, schedule))


def scheduler_options(arch: str, sampler: str, schedule: str) -> dict:
    """The Euler scheduler's options for the schedule type; refuses a sampler or schedule flow matching lacks."""
    if sampler != _EULER.name:
        raise InvalidRequest(f"{LABELS[arch]} checkpoints sample by flow matching: use the Euler sampler "
                             f"({sampler} is a UNet sampler)", "sampler_name")
    allowed = _EULER.schedule_types()
    if schedule not in allowed:
        raise InvalidRequest(f"{LABELS[arch]}'s Euler cannot use the {schedule} schedule; choose one of: "
                             f"{', '.join(allowed)}", "scheduler")
    options = {k: False for k in _SIGMA_FLAGS if k in _EULER.accepted_options()}
    options.update(SCHEDULE_OPTIONS[schedule])
    return options


def plain_text(text: str) -> str:
    """The prompt without A1111 markup (emphasis brackets and weights, BREAK), as the pipeline reads it."""
    clean, _ = prompts.extract_loras(text)
    return "".join(piece for piece, weight in prompts.parse_attention(clean) if weight >= 0).strip()


def schedules_prompts(arch: str) -> bool:
    """SD3's loop takes every embedding back from callback_on_step_end; Flux's only the T5 one."""
    return arch == "sd3"


def encode_texts(pipe, texts: list[str], clip_skip: int = 1, arch: str = "sd3") -> tuple[list, list]:
    """Each text of a prompt schedule → (embeds [1, L, D], pooled [1, D]) by the pipeline's own encoder, as it
    encodes a text prompt (markup taken out); the same length for every text (CLIP's 77 + T5's padding)."""
    import torch

    embeds, pooled = [], []
    with torch.no_grad():
        for text in texts:
            e, _, p, _ = pipe.encode_prompt(prompt=plain_text(text), prompt_2=None, prompt_3=None,
                                            do_classifier_free_guidance=False)
            embeds.append(e)
            pooled.append(p)
    return embeds, pooled


def conditioning(positives: list[str], negatives: list[str]) -> dict:
    """The pipeline's text arguments: it encodes them itself (CLIP pooled + T5)."""
    return {"prompt": [plain_text(t) for t in positives], "negative_prompt": [plain_text(t) for t in negatives]}


def guidance(run) -> dict:
    """The pipeline's guidance arguments for this checkpoint (Forge's mapping of the A1111 fields for Flux;
    cfg_scale as it is for the others)."""
    req = run.req
    if run.arch == "flux":
        return {"guidance_scale": req.distilled_cfg_scale, "true_cfg_scale": req.cfg_scale}
    return {"guidance_scale": req.cfg_scale}


def img2img_kwargs(run, size: tuple[int, int] | None = None) -> dict:
    """Guidance, and for Flux / SD3 the work size (their img2img pipelines would otherwise resize the picture
    to their default 1024²; the UNet img2img pipelines take the picture's size and have no such argument)."""
    if not is_flow(run.arch):
        return guidance(run)
    width, height = size or (run.req.width, run.req.height)
    return {**guidance(run), "width": width, "height": height}


def unpacked(pipe, arch: str, latents, width: int, height: int):
    """A pipeline's output_type="latent" result as (batch, 16, h, w): Flux returns its 2x2-packed sequence."""
    if arch != "flux":
        return latents
    return pipe._unpack_latents(latents, height, width, pipe.vae_scale_factor)


def initial_latents(pipe, arch: str, noise):
    """Our seeded noise (batch, 16, h, w) in the layout the pipeline takes: Flux packs 2x2 patches."""
    if arch != "flux":
        return noise
    batch, channels, height, width = noise.shape
    return pipe._pack_latents(noise, batch, channels, height, width)  # the pipeline's own packing, as it does

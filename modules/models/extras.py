"""The VAE choice and textual-inversion embeddings, applied to the active checkpoint's pipeline.

VAE: settings.sd_vae is "Automatic" (a file in models/VAE named like the checkpoint, else the
checkpoint's own), "None" (the checkpoint's own) or a file in models/VAE (single-file
AutoencoderKL, A1111/LDM or diffusers key layout). The checkpoint's own VAE is kept aside, so
going back costs nothing. Embeddings: every file in models/embeddings is loaded with diffusers'
`load_textual_inversion`, token = file stem, so prompts use them by name as in A1111.
"""
from __future__ import annotations

import logging

from modules.errors import AtelierError, ModelLoadError

log = logging.getLogger("atelier.models")


def _automatic_vae(registry, ckpt):
    stem = ckpt.entry.stem
    for e in registry.list("vae"):
        if e.stem in (stem, stem + ".vae"):
            return e
    return None


def sync_vae(registry, ckpt, setting: str, dtype) -> None:
    """Make the pipeline's VAE the one `setting` names (no work when it already is)."""
    setting = setting or "Automatic"
    if setting == "None":
        entry = None
    elif setting == "Automatic":
        entry = _automatic_vae(registry, ckpt)
    else:
        try:
            entry = registry.get("vae", setting)
        except AtelierError as exc:
            exc.field = "sd_vae"
            raise
    current = ckpt.vae
    if (entry is None and current is None) or (entry is not None and current is not None
                                                 and entry.path == current.path and entry.size == current.size):
        ckpt.vae_setting = setting
        return
    pipe = ckpt.pipe
    if ckpt.base_vae is None:
        ckpt.base_vae = pipe.vae  # the checkpoint's own, kept aside
    base = ckpt.base_vae
    vae = base if entry is None else load_vae(entry, base, dtype)
    vae.to(device=base.device, dtype=base.dtype)
    pipe.vae = vae
    ckpt._modes.clear()  # img2img/inpaint pipes are rebuilt from the new components on next use
    ckpt.vae, ckpt.vae_setting = entry, setting
    if entry is not None:
        registry.ensure_hash(entry)
    log.info("VAE: %s", entry.name if entry else "the checkpoint's own")


def load_vae(entry, base, dtype):
    """An AutoencoderKL with the checkpoint VAE's config and this file's weights."""
    from diffusers import AutoencoderKL
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

    from modules.models.loaders import check_pickle

    try:
        if entry.format == "pickle":
            check_pickle(entry.path)
            import torch

            sd = torch.load(str(entry.path), map_location="cpu", weights_only=True)
            sd = sd.get("state_dict", sd)
        elif entry.format == "safetensors":
            from safetensors.torch import load_file

            sd = load_file(str(entry.path))
        elif entry.format == "diffusers" or entry.path.is_dir():
            return AutoencoderKL.from_pretrained(str(entry.path), torch_dtype=dtype, local_files_only=True)
        else:
            raise ModelLoadError(f"{entry.name}: {entry.format} is not a VAE format", "sd_vae")
        if not any(k.startswith(("encoder.down_blocks", "decoder.up_blocks")) for k in sd):
            sd = convert_ldm_vae_checkpoint(sd, dict(base.config))
        vae = AutoencoderKL.from_config(base.config)
        missing, unexpected = vae.load_state_dict(sd, strict=False)
        if missing:
            raise ModelLoadError(f"VAE {entry.name} does not fit this checkpoint ({len(missing)} weights missing, "
                                 f"e.g. {missing[0]}); pick a VAE made for {base.config.latent_channels}-channel "
                                 "latents of this architecture, or Automatic", "sd_vae")
        return vae.eval()
    except AtelierError as exc:
        if exc.field in (None, "file"):  # e.g. a refused pickle: the setting that chose the file is what to change
            exc.field = "sd_vae"
        raise
    except Exception as exc:
        raise ModelLoadError(f"VAE {entry.name} could not be loaded: {type(exc).__name__}: {str(exc)[:300]}",
                             "sd_vae") from None


def sync_embeddings(registry, ckpt) -> None:
    """Load every embedding on disk not yet loaded into this pipeline; remember the ones that do not fit."""
    pipe = ckpt.pipe
    if not hasattr(pipe, "load_textual_inversion"):
        return
    skipped = ckpt.skipped_embeddings
    loaded = {e.path for e in ckpt.embeddings}
    for entry in registry.list("embedding"):
        if entry.path in loaded or str(entry.path) in skipped:
            continue
        try:
            _load_embedding(pipe, entry, ckpt.arch)
            ckpt.embeddings.append(entry)
        except Exception as exc:  # another architecture, a name the tokenizer already has: A1111 skips too
            skipped[str(entry.path)] = f"{type(exc).__name__}: {str(exc)[:200]}"
            log.info("embedding %s skipped: %s", entry.name, skipped[str(entry.path)])


def _load_embedding(pipe, entry, arch: str) -> None:
    token = entry.stem
    if entry.arch == "sdxl" or arch == "sdxl":
        from safetensors.torch import load_file

        sd = load_file(str(entry.path))
        pipe.load_textual_inversion(sd["clip_l"], token=token, text_encoder=pipe.text_encoder, tokenizer=pipe.tokenizer)
        pipe.load_textual_inversion(sd["clip_g"], token=token, text_encoder=pipe.text_encoder_2,
                                    tokenizer=pipe.tokenizer_2)
        return
    if entry.format == "pickle":
        from modules.models.loaders import check_pickle

        check_pickle(entry.path)
    pipe.load_textual_inversion(str(entry.path), token=token, local_files_only=True)

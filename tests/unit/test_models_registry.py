"""The registry: recursive scan, architecture from keys and configs, A1111 hashes cached in cache.json."""
from __future__ import annotations

import hashlib
import json
import os
import shutil

import pytest


def _save(path, tensors, metadata=None):
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata=metadata)
    return path


@pytest.fixture
def registry(tmp_path):
    from modules.models.registry import ModelRegistry
    from modules.paths import DataPaths

    paths = DataPaths(tmp_path)
    paths.ensure()
    return ModelRegistry(paths)


def test_checkpoint_architecture_from_the_key_table(registry, demo_checkpoint):
    import torch

    z = torch.zeros
    unet = {"model.diffusion_model.input_blocks.0.0.weight": z(8, 4, 3, 3)}
    folder = registry.paths.model_dir("checkpoint")
    _save(folder / "sd1.safetensors", {**unet, "cond_stage_model.transformer.text_model.final_layer_norm.weight": z(2)})
    _save(folder / "deep" / "er" / "sd2.safetensors", {**unet, "cond_stage_model.model.token_embedding.weight": z(2, 2)})
    _save(folder / "xl.safetensors", {**unet, "conditioner.embedders.1.model.positional_embedding": z(2, 2)})
    _save(folder / "sd1-inpaint.safetensors", {"model.diffusion_model.input_blocks.0.0.weight": z(8, 9, 3, 3),
                                                "cond_stage_model.transformer.x": z(1)})
    _save(folder / "unet-only-sd2.safetensors", {
        **unet, "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": z(4, 1024)})
    shutil.copytree(demo_checkpoint, folder / "demo-folder")
    (folder / "sd1.config").mkdir()  # a sidecar config folder is not a checkpoint
    (folder / "sd1.config" / "model_index.json").write_text("{}")
    (folder / ".downloads").mkdir()
    _save(folder / ".downloads" / "half.safetensors", {"x": z(1)})
    registry.refresh()
    found = {e.name: e.arch for e in registry.list("checkpoint")}
    assert found == {"sd1.safetensors": "sd1", "deep/er/sd2.safetensors": "sd2", "xl.safetensors": "sdxl",
                     "sd1-inpaint.safetensors": "sd1", "unet-only-sd2.safetensors": "sd2", "demo-folder": "sd1"}
    from modules.models import detect

    assert detect.checkpoint_kind(folder / "sd1-inpaint.safetensors").inpaint
    assert detect.checkpoint_kind(folder / "xl.safetensors").hub_key == "xl_base"


def test_lora_architecture_from_metadata_and_keys(registry):
    import torch

    folder = registry.paths.model_dir("lora")
    _save(folder / "meta.safetensors", {"lora_unet_x.lora_down.weight": torch.zeros(4, 8)},
          {"ss_base_model_version": "sd_v1", "ss_output_name": "meta"})
    _save(folder / "te2.safetensors", {"lora_te2_text_model_x.lora_down.weight": torch.zeros(4, 8)})
    _save(folder / "wide.safetensors", {
        "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k.lora_down.weight": torch.zeros(4, 768)})
    entries = {e.stem: e for e in registry.list("lora")}
    assert {k: e.arch for k, e in entries.items()} == {"meta": "sd1", "te2": "sdxl", "wide": "sd1"}
    assert entries["meta"].metadata["ss_output_name"] == "meta"


def test_a1111_hashes_are_computed_once_and_cached_by_path_mtime_and_size(registry):
    from modules.models.registry import ModelRegistry

    path = registry.paths.model_dir("vae") / "v.safetensors"
    path.write_bytes(b"not really a vae, but a file to hash")
    entry = registry.list("vae")[0]
    assert entry.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert entry.short_hash == entry.sha256[:10] and entry.problem  # listed, with what is wrong with it
    cache = json.loads(registry.paths.hash_cache.read_text())
    assert cache["hashes"][str(path)]["sha256"] == entry.sha256
    # The cache is trusted while path, mtime and size match: a fresh registry does not read the file again.
    cache["hashes"][str(path)]["sha256"] = "f" * 64
    registry.paths.hash_cache.write_text(json.dumps(cache))
    assert ModelRegistry(registry.paths).list("vae")[0].sha256 == "f" * 64
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10_000_000))  # the file changed: hash it again
    assert ModelRegistry(registry.paths).list("vae")[0].sha256 == entry.sha256


def test_refresh_picks_up_new_files_and_names_resolve_inside_the_folder(registry):
    from modules.errors import NotFound, PathRefused

    assert registry.list("embedding") == []
    _save(registry.paths.model_dir("embedding") / "style.safetensors", {"emb_params": __import__("torch").zeros(3, 8)})
    assert registry.list("embedding") == []  # listed only after a refresh, as A1111
    registry.refresh("embedding")
    entry = registry.get("embedding", "style")
    assert entry.metadata == {"vectors": 3, "shape": 8}
    with pytest.raises(PathRefused):
        registry.get("embedding", "../../config.json")
    with pytest.raises(NotFound):
        registry.get("embedding", "nothing")

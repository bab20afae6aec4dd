"""Figure: loading an LLM folder through Atelier's transformers adapter vs plain from_pretrained.

The model is a random-weights Gemma 3 270M (the sizes of google/gemma-3-270m's config.json:
hidden 640, 18 layers, 4 heads, 1 KV head, head_dim 256, intermediate 2048, vocab 262,144,
sliding window 512, context 32,768; 268M parameters), saved once in bf16 as the published
weights are, in the bench cache. Both sides load the weights in bf16 onto the device and the
tokenizer (the demo's small byte-level one: the figure is about the weights), and both are
timed until every weight page is really in memory (safetensors maps files lazily).
"""
from __future__ import annotations

import gc
import shutil
import statistics
import tempfile
from pathlib import Path

from bench.common import Figure, ratios, timed

NAME = "bench-gemma3-270m-random"
_VERSION = "1"  # bump when the build below changes, so cached copies are rebuilt
TARGET = "<= 1.3x plain from_pretrained"
TITLE = "LLM load (Gemma 3 270M size, bf16) vs plain from_pretrained"

# google/gemma-3-270m config.json, as published (model_type gemma3_text).
GEMMA3_270M = dict(
    vocab_size=262_144, hidden_size=640, intermediate_size=2048, num_hidden_layers=18, num_attention_heads=4,
    num_key_value_heads=1, head_dim=256, max_position_embeddings=32_768, sliding_window=512,
    query_pre_attn_scalar=256, rms_norm_eps=1e-6, rope_theta=1_000_000.0, rope_local_base_freq=10_000.0,
    pad_token_id=0, eos_token_id=1, bos_token_id=2, tie_word_embeddings=True,
)


def ensure_gemma3_270m_folder(log=print) -> Path:
    """The cached folder; built (about half a minute on 2 cores) when missing."""
    from bench.sd15 import cache_root

    folder = cache_root() / f"{NAME}-v{_VERSION}"
    if (folder / "config.json").exists():
        return folder
    log(f"building a random-weights Gemma 3 270M-size model in {folder} (once) …")
    import torch
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    from modules.models.demo_lm import GEMMA3_CHAT_TEMPLATE, gemma_tokenizer

    torch.manual_seed(0)
    model = Gemma3ForCausalLM(Gemma3TextConfig(**GEMMA3_270M)).to(torch.bfloat16)
    tmp = folder.with_name(folder.name + ".building")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(str(tmp), safe_serialization=True)
    gemma_tokenizer(400, chat_template=GEMMA3_CHAT_TEMPLATE).save_pretrained(str(tmp))
    del model
    tmp.rename(folder)
    return folder


def _touch(model, device: str) -> None:
    """Read one value per 4 KiB page of every CPU weight (see bench/switching.py)."""
    from bench.common import sync

    if device != "cpu":
        sync(device)
        return
    for t in (*model.parameters(), *model.buffers()):
        if t.numel():
            t.detach().reshape(-1)[:: max(1, 4096 // t.element_size())].sum()


def run(device: str, quick: bool, log=print) -> list[Figure]:
    try:
        return [_measure(device, quick, log)]
    except Exception as exc:  # report why, never a made-up number
        return [Figure.missing("llm_load", TITLE, f"{type(exc).__name__}: {exc}"[:400], TARGET)]


def _measure(device: str, quick: bool, log) -> Figure:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from bench.sd15 import link_copy
    from modules.devices import DeviceChoice, free_accelerator_memory
    from modules.models.adapters import AdapterContext
    from modules.models.hf import TransformersAdapter
    from modules.models.quant import LoadOptions
    from modules.models.registry import ModelRegistry
    from modules.paths import DataPaths
    from modules.settings import SettingsStore

    src = ensure_gemma3_270m_folder(log)
    root = Path(tempfile.mkdtemp(prefix="atelier-bench-llm-"))
    try:
        paths = DataPaths(root)
        link_copy(src, paths.model_dir("llm") / src.name)
        registry = ModelRegistry(paths)
        entry = registry.get("llm", src.name)
        actx = AdapterContext(registry, SettingsStore(paths.config_file),
                              DeviceChoice(device, "float32" if device == "cpu" else "float16"))
        adapter, options = TransformersAdapter(), LoadOptions(dtype="bf16")
        held: dict = {}

        def atelier():
            loaded = adapter.load(actx, entry, options)
            _touch(loaded.handle.model, device)
            held["atelier"] = loaded

        def plain():
            kwargs = {} if device == "cpu" else {"device_map": {"": device}}
            model = AutoModelForCausalLM.from_pretrained(str(src), dtype=torch.bfloat16, local_files_only=True,
                                                         **kwargs).eval()
            tokenizer = AutoTokenizer.from_pretrained(str(src), local_files_only=True)
            _touch(model, device)
            held["plain"] = (model, tokenizer)

        def drop():  # outside the timings: each side starts with nothing of either side in memory
            if "atelier" in held:
                adapter.release(actx, held.pop("atelier"))
            held.pop("plain", None)
            gc.collect()
            free_accelerator_memory(device)

        reps = 5 if quick else 10
        log(f"  LLM load: {reps} Atelier loads alternating with {reps} plain from_pretrained loads …")
        for fn in (atelier, plain):  # warm-up: the page cache and the imports, for both sides
            fn()
            drop()
        ta, tb = [], []
        for i in range(reps):
            order = ((atelier, ta), (plain, tb)) if i % 2 == 0 else ((plain, tb), (atelier, ta))
            for fn, out in order:
                out.append(timed(fn, device))
                if fn is atelier:
                    footprint = held["atelier"].footprint
                drop()
        spread = lambda xs: {"median": round(statistics.median(xs), 3), "min": round(min(xs), 3),
                             "max": round(max(xs), 3)}
        return Figure.from_samples("llm_load", TITLE, ratios(ta, tb), target=TARGET, ok=lambda r: r <= 1.3,
                                   atelier_s=spread(ta), plain_s=spread(tb), footprint_mib=round(footprint / 2**20),
                                   parameters=entry.metadata.get("parameters"))
    finally:
        shutil.rmtree(root, ignore_errors=True)

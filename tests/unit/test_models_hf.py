"""The transformers adapter and the registry over the demo Gemma 2, Gemma 3 and PaliGemma folders:
descriptions from config.json, loads that generate, bitsandbytes footprints, PEFT adapters, GGUF, errors."""
from __future__ import annotations

import gc
import json
import shutil
import weakref
from pathlib import Path

import pytest

from modules.models.demo_lm import DEMO_LLM_NAME, DEMO_PALIGEMMA_NAME, DEMO_VLM_NAME

KIND = {DEMO_LLM_NAME: "llm", DEMO_VLM_NAME: "vlm", DEMO_PALIGEMMA_NAME: "vlm"}


@pytest.fixture
def env(tmp_path, demo_language_models):
    """A data dir holding copies of the three demos, its registry and an adapter context on the CPU."""
    from modules.devices import DeviceChoice
    from modules.models.adapters import AdapterContext
    from modules.models.registry import ModelRegistry
    from modules.paths import DataPaths
    from modules.settings import SettingsStore

    paths = DataPaths(tmp_path / "data")
    paths.ensure()
    for name, folder in demo_language_models.items():
        shutil.copytree(folder, paths.model_dir(KIND[name]) / name)
    registry = ModelRegistry(paths)
    return AdapterContext(registry, SettingsStore(paths.config_file), DeviceChoice("cpu", "float32"))


def _load(actx, name: str, **options):
    from modules.models.hf import TransformersAdapter
    from modules.models.quant import LoadOptions

    return TransformersAdapter().load(actx, actx.registry.get(KIND[name], name), LoadOptions(**options))


def _inputs(handle, name: str):
    """A prompt each demo answers: a chat turn, a chat turn with an image, a PaliGemma prefix with an image."""
    from PIL import Image

    image = Image.new("RGB", (80, 60), (200, 30, 30))
    if name == DEMO_LLM_NAME:
        return handle.tokenizer.apply_chat_template([{"role": "user", "content": "hello"}], add_generation_prompt=True,
                                                    return_tensors="pt", return_dict=True)
    if name == DEMO_VLM_NAME:
        msgs = [{"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": "what?"}]}]
        return handle.processor.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True, return_dict=True,
                                                    return_tensors="pt")
    return handle.processor(images=image, text="<image>caption en", return_tensors="pt")


def _generate(handle, name: str, n: int = 4) -> list[int]:
    import torch

    inputs = _inputs(handle, name)
    with torch.inference_mode():
        out = handle.model.generate(**inputs, max_new_tokens=n, min_new_tokens=n, do_sample=False)
    return out[0, inputs["input_ids"].shape[1]:].tolist()


def _logits(handle, text: str = "hello world"):
    import torch

    ids = handle.tokenizer(text, return_tensors="pt")
    with torch.inference_mode():
        return handle.model(**ids).logits


def _param_bytes(folder: Path) -> tuple[int, int]:
    from safetensors.torch import load_file

    tensors = load_file(str(folder / "model.safetensors"))
    return sum(t.numel() for t in tensors.values()), sum(t.numel() * t.element_size() for t in tensors.values())


# -- registry ----------------------------------------------------------------------------------------

def test_registry_describes_each_demo_folder_from_its_configs(env):
    from modules.models.demo_lm import is_demo

    registry = env.registry
    expected = {  # model_type, architecture, chat template, image processor
        DEMO_LLM_NAME: ("gemma2", "Gemma2ForCausalLM", True, False),
        DEMO_VLM_NAME: ("gemma3", "Gemma3ForConditionalGeneration", True, True),
        DEMO_PALIGEMMA_NAME: ("paligemma", "PaliGemmaForConditionalGeneration", False, True),
    }
    assert [e.name for e in registry.list("llm")] == [DEMO_LLM_NAME]
    assert [e.name for e in registry.list("vlm")] == [DEMO_VLM_NAME, DEMO_PALIGEMMA_NAME]
    for name, (model_type, arch, template, images) in expected.items():
        entry = registry.get(KIND[name], name)
        meta = entry.metadata
        assert entry.format == "hf" and entry.problem is None
        assert entry.arch == meta["model_type"] == model_type
        assert meta["architectures"] == [arch]
        assert meta["context_length"] == 8192
        assert meta["chat_template"] is template
        assert meta["image_processor"] is images and meta["accepts_images"] is images
        assert meta["parameters"] == _param_bytes(entry.path)[0]  # from the headers, no weight read
        assert is_demo(entry.path)


def test_ensure_demo_language_models_fills_only_empty_folders(tmp_path, monkeypatch):
    from modules.models import demo_lm
    from modules.paths import DataPaths

    built = []
    monkeypatch.setattr(demo_lm, "DEMOS", tuple((k, n, lambda folder, seed, n=n: built.append(n)
                                                 or (folder / "config.json").write_text("{}"))
                                                for k, n, _ in demo_lm.DEMOS))
    paths = DataPaths(tmp_path)
    paths.ensure()
    user_vlm = paths.model_dir("vlm") / "my-paligemma"
    user_vlm.mkdir()
    (user_vlm / "config.json").write_text("{}")
    folders = demo_lm.ensure_demo_language_models(paths)
    assert built == [DEMO_LLM_NAME]  # models/VLM already holds a model: no demo goes there
    assert [f.name for f in folders] == [DEMO_LLM_NAME] and demo_lm.is_demo(folders[0])
    assert demo_lm.ensure_demo_language_models(paths) == folders and built == [DEMO_LLM_NAME]  # nothing rebuilt


# -- loading and generating -----------------------------------------------------------------------------

@pytest.mark.parametrize("name", [DEMO_LLM_NAME, DEMO_VLM_NAME, DEMO_PALIGEMMA_NAME])
def test_adapter_loads_each_demo_and_generates(env, name):
    loaded = _load(env, name)
    handle = loaded.handle
    entry = loaded.entry
    assert loaded.kind == KIND[name] and loaded.device == "cpu" and loaded.movable
    buffers = sum(b.numel() * b.element_size() for b in handle.model.buffers())  # rotary frequencies, scalars
    assert loaded.footprint == _param_bytes(entry.path)[1] + buffers  # fp32, each parameter once (tied too)
    assert handle.info.model_type == entry.metadata["model_type"]
    assert list(handle.info.architectures) == entry.metadata["architectures"]
    assert handle.info.context_length == 8192
    assert handle.info.has_chat_template is entry.metadata["chat_template"]
    assert handle.info.accepts_images is (name != DEMO_LLM_NAME)
    assert (handle.processor is None) is (name == DEMO_LLM_NAME)
    if name == DEMO_LLM_NAME:
        assert handle.model.config._attn_implementation == "eager"  # Gemma 2's soft-capping needs it
    tok = handle.tokenizer
    assert tok.eos_token_id in _as_list(handle.model.generation_config.eos_token_id)
    if name != DEMO_PALIGEMMA_NAME:  # Gemma's chat turns; a reply stops at <end_of_turn> too
        turn = [{"role": "user", "content": "hello"}]
        assert tok.apply_chat_template(turn, add_generation_prompt=True, tokenize=False) == (
            "<bos><start_of_turn>user\nhello<end_of_turn>\n<start_of_turn>model\n")
        assert tok.convert_tokens_to_ids("<end_of_turn>") in _as_list(handle.model.generation_config.eos_token_id)
    if name == DEMO_LLM_NAME:
        with pytest.raises(Exception, match="System role not supported"):  # Gemma 2's own template refuses it
            tok.apply_chat_template([{"role": "system", "content": "be brief"}, *turn], tokenize=False)
    if name == DEMO_PALIGEMMA_NAME:  # one token each, decoded back as written
        ids = [tok.convert_tokens_to_ids(t) for t in ("<image>", "<loc0000>", "<loc1023>", "<seg000>", "<seg127>")]
        assert tok.unk_token_id not in ids and len(set(ids)) == 5
        assert tok.decode(tok("<loc0012><loc1023> cat", add_special_tokens=False).input_ids) == "<loc0012><loc1023> cat"
        assert handle.processor.image_seq_length == 16
    tokens = _generate(handle, name)
    assert len(tokens) == 4 and all(0 <= t < len(handle.tokenizer) for t in tokens)
    assert _generate(_load(env, name).handle, name) == tokens  # same weights read back, same greedy answer


@pytest.mark.parametrize("quantization", ["nf4", "int8"])
def test_quantized_load_is_smaller_generates_and_is_not_movable(env, quantization):
    from modules.errors import InvalidRequest
    from modules.models.hf import TransformersAdapter

    full = _load(env, DEMO_LLM_NAME)
    quant = _load(env, DEMO_LLM_NAME, quantization=quantization, double_quant=True)
    assert quant.footprint < 0.6 * full.footprint, (quant.footprint, full.footprint)
    # bitsandbytes keeps scales beside the packed weights: counted too (transformers' own figure leaves them out)
    assert quant.footprint > quant.handle.model.get_memory_footprint()
    assert not quant.movable and quant.extra["quantization"] == quant.options.label()
    layer = type(quant.handle.model.model.layers[0].mlp.down_proj).__name__
    assert layer == ("Linear4bit" if quantization == "nf4" else "Linear8bitLt")
    tokens = _generate(quant.handle, DEMO_LLM_NAME)
    assert len(tokens) == 4
    with pytest.raises(InvalidRequest) as err:
        TransformersAdapter().to(env, quant, "cpu")
    assert err.value.field == "device" and "unload" in err.value.message


def test_quantization_where_bitsandbytes_cannot_run_names_the_field(env):
    from dataclasses import replace

    from modules.devices import DeviceChoice
    from modules.errors import InvalidRequest

    mps = replace(env, device=DeviceChoice("mps", "float16"))
    with pytest.raises(InvalidRequest) as err:
        _load(mps, DEMO_LLM_NAME, quantization="nf4")
    assert err.value.field == "quantization" and "choose quantization none" in err.value.message


def test_to_cpu_and_release_let_the_weights_go(env):
    from modules.models.hf import TransformersAdapter

    adapter = TransformersAdapter()
    loaded = _load(env, DEMO_LLM_NAME)
    before = _logits(loaded.handle)
    adapter.to(env, loaded, "cpu")
    assert loaded.device == "cpu" and loaded.handle.model.device.type == "cpu"
    assert (_logits(loaded.handle) == before).all()
    ref = weakref.ref(loaded.handle.model)
    adapter.release(env, loaded)
    gc.collect()
    assert loaded.handle.model is None and loaded.handle.tokenizer is None
    assert ref() is None  # nothing else kept the model alive


# -- PEFT adapters --------------------------------------------------------------------------------------

def _save_lora(base_folder: Path, out: Path, base_model: str | None = None) -> Path:
    """A LoRA on the demo Gemma 2 with visible (non-zero) weights, saved by peft itself."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(base_folder), local_files_only=True)
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    gen = torch.Generator().manual_seed(1)
    for pname, p in peft_model.named_parameters():
        if "lora_B" in pname:  # peft starts B at zero (no change); make it change the output
            p.data = torch.randn(p.shape, generator=gen) * 0.5
    peft_model.save_pretrained(str(out))
    if base_model is not None:
        cfg = json.loads((out / "adapter_config.json").read_text())
        (out / "adapter_config.json").write_text(json.dumps({**cfg, "base_model_name_or_path": base_model}))
    return out


def test_peft_adapter_is_listed_under_its_base_and_switches_exactly(env, demo_language_models):
    registry = env.registry
    adapters_dir = registry.paths.model_dir("lm_adapter")
    # peft writes the path the base was loaded from; the registry matches it by folder name.
    _save_lora(demo_language_models[DEMO_LLM_NAME], adapters_dir / "style-a")
    _save_lora(demo_language_models[DEMO_LLM_NAME], adapters_dir / "by-hub-id", base_model=f"google/{DEMO_LLM_NAME}")
    _save_lora(demo_language_models[DEMO_LLM_NAME], adapters_dir / "other-base", base_model="google/gemma-2-9b-it")
    registry.refresh()
    assert [e.name for e in registry.list("lm_adapter")] == ["by-hub-id", "other-base", "style-a"]
    base = registry.get("llm", DEMO_LLM_NAME)
    assert [e.name for e in registry.adapters_for(base)] == ["by-hub-id", "style-a"]
    assert registry.adapters_for(registry.get("vlm", DEMO_PALIGEMMA_NAME)) == []
    entry = registry.get("lm_adapter", "style-a")
    assert entry.format == "peft" and entry.metadata["peft_type"] == "LORA" and entry.metadata["r"] == 4

    handle = _load(env, DEMO_LLM_NAME).handle
    base_logits = _logits(handle)
    handle.load_adapter(entry.path, "style-a")
    assert handle.active_adapter is None and (_logits(handle) == base_logits).all()  # loading does not switch
    handle.set_adapter("style-a")
    with_lora = _logits(handle)
    assert (with_lora - base_logits).abs().max() > 1e-3
    handle.disable_adapters()
    assert (_logits(handle) == base_logits).all()  # the base output exactly
    handle.set_adapter("style-a")  # re-enabled after a disable
    assert (_logits(handle) == with_lora).all()
    handle.remove_adapter("style-a")
    assert handle.adapters == {} and (_logits(handle) == base_logits).all()


def test_adapter_errors_name_the_field(env, tmp_path):
    from modules.errors import InvalidRequest, ModelLoadError

    handle = _load(env, DEMO_LLM_NAME).handle
    with pytest.raises(InvalidRequest) as err:
        handle.set_adapter("nope")
    assert err.value.field == "adapter" and "none" in err.value.message
    (tmp_path / "not-an-adapter").mkdir()
    with pytest.raises(ModelLoadError) as err:
        handle.load_adapter(tmp_path / "not-an-adapter", "x")
    assert err.value.field == "adapter" and "adapter_config.json" in err.value.message


def test_an_adapter_in_the_models_folder_says_where_it_belongs(env, demo_language_models):
    registry = env.registry
    _save_lora(demo_language_models[DEMO_LLM_NAME], registry.paths.model_dir("llm") / "misplaced")
    registry.refresh("llm")
    entry = registry.get("llm", "misplaced")
    assert entry.format == "peft" and "models/LLM-loras" in entry.problem
    from modules.errors import ModelLoadError

    with pytest.raises(ModelLoadError, match="models/LLM-loras") as err:
        _load_entry(env, "llm", "misplaced")
    assert err.value.field == "model"


# -- GGUF ------------------------------------------------------------------------------------------------

def _write_gguf(src: Path, out: Path, arch: str = "gemma2") -> Path:
    """The demo Gemma 2 as a GGUF file (f32 tensors, llama.cpp's names, its +1 on Gemma norms, a byte-level
    BPE vocabulary), written with the gguf package as llama.cpp's converter would."""
    import gguf
    from safetensors.torch import load_file

    cfg = json.loads((src / "config.json").read_text())
    tok = json.loads((src / "tokenizer.json").read_text())
    w = gguf.GGUFWriter(str(out), arch)
    n = cfg["num_hidden_layers"]
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_embedding_length(cfg["hidden_size"])
    w.add_block_count(n)
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_head_count(cfg["num_attention_heads"])
    w.add_head_count_kv(cfg["num_key_value_heads"])
    w.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    w.add_key_length(cfg["head_dim"])
    w.add_value_length(cfg["head_dim"])
    w.add_sliding_window(cfg["sliding_window"])
    w.add_attn_logit_softcapping(cfg["attn_logit_softcapping"])
    w.add_final_logit_softcapping(cfg["final_logit_softcapping"])
    added = {t["content"]: t["id"] for t in tok["added_tokens"]}
    ids = {**tok["model"]["vocab"], **added}
    tokens = [t for t, _ in sorted(ids.items(), key=lambda kv: kv[1])]
    w.add_tokenizer_model("gpt2")
    w.add_token_list(tokens)
    w.add_token_types([3 if t in added else 1 for t in tokens])  # 3: control (special) tokens
    w.add_token_merges([" ".join(m) if isinstance(m, list) else m for m in tok["model"]["merges"]])
    w.add_bos_token_id(ids["<bos>"])
    w.add_eos_token_id(ids["<eos>"])
    w.add_pad_token_id(ids["<pad>"])
    w.add_add_bos_token(True)
    w.add_chat_template((src / "chat_template.jinja").read_text())
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.GEMMA2, n)
    for key, t in load_file(str(src / "model.safetensors")).items():
        data = t.float().numpy()
        w.add_tensor(names.get_name(key, try_suffixes=(".weight", ".bias")), data + 1 if key.endswith("norm.weight")
                     else data)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return out


def test_gguf_file_loads_through_transformers_and_matches_the_folder(env, demo_language_models):
    registry = env.registry
    _write_gguf(demo_language_models[DEMO_LLM_NAME], registry.paths.model_dir("llm") / "demo-f32.gguf")
    registry.refresh("llm")
    entry = registry.get("llm", "demo-f32.gguf")
    assert entry.format == "gguf" and entry.arch == "gemma2" and entry.problem is None
    assert entry.metadata["context_length"] == 8192 and entry.metadata["chat_template"] is True
    assert entry.metadata["parameters"] == registry.get("llm", DEMO_LLM_NAME).metadata["parameters"]
    folder = _load(env, DEMO_LLM_NAME).handle  # the same model from its transformers folder
    handle = _load_entry(env, "llm", "demo-f32.gguf").handle
    assert handle.info.model_type == "gemma2" and handle.info.has_chat_template
    assert handle.model.config._attn_implementation == "eager"
    text = "hello world {\"a\": 1}"
    assert handle.tokenizer(text).input_ids == folder.tokenizer(text).input_ids
    diff = (_logits(handle, text) - _logits(folder, text)).abs().max().item()
    assert diff < 1e-4, diff


def test_gguf_of_an_architecture_transformers_cannot_read_names_it(env):
    import gguf
    import numpy as np

    from modules.errors import ModelLoadError

    path = env.registry.paths.model_dir("llm") / "rwkv.gguf"
    w = gguf.GGUFWriter(str(path), "rwkv7")
    w.add_context_length(1024)
    w.add_tensor("token_embd.weight", np.zeros((4, 4), dtype="float32"))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    env.registry.refresh("llm")
    assert env.registry.get("llm", "rwkv.gguf").arch == "rwkv7"
    with pytest.raises(ModelLoadError) as err:
        _load_entry(env, "llm", "rwkv.gguf")
    assert err.value.field == "model" and "'rwkv7'" in err.value.message and "gemma2" in err.value.message


# -- errors a person can cause ------------------------------------------------------------------------

def _load_entry(actx, kind: str, name: str, **options):
    from modules.models.hf import TransformersAdapter
    from modules.models.quant import LoadOptions

    return TransformersAdapter().load(actx, actx.registry.get(kind, name), LoadOptions(**options))


def _broken_copy(env, name: str, new: str, change) -> str:
    folder = env.registry.paths.model_dir("llm") / new
    shutil.copytree(env.registry.paths.model_dir("llm") / name, folder)
    change(folder)
    env.registry.refresh("llm")
    return new


def test_broken_folders_give_errors_that_name_the_field_and_the_fix(env):
    from modules.errors import ModelLoadError

    cases = {
        "no-weights": (lambda f: (f / "model.safetensors").unlink(), "model.safetensors"),
        "bad-config": (lambda f: (f / "config.json").write_text("{not json"), "config.json is not valid JSON"),
        "unknown-type": (lambda f: (f / "config.json").write_text(json.dumps(
            {"model_type": "atelier-nonesuch", "architectures": ["NonesuchForCausalLM"]})), "'atelier-nonesuch'"),
        "not-a-lm": (lambda f: (f / "config.json").write_text(json.dumps(
            {"model_type": "vit", "architectures": ["ViTModel"]})), "'vit'"),
        "no-tokenizer": (lambda f: [(f / n).unlink() for n in ("tokenizer.json", "tokenizer_config.json")],
                         "tokenizer"),
        "truncated": (lambda f: (f / "model.safetensors").write_bytes((f / "model.safetensors").read_bytes()[:5000]),
                      "download"),
    }
    for new, (change, words) in cases.items():
        _broken_copy(env, DEMO_LLM_NAME, new, change)
        with pytest.raises(ModelLoadError) as err:
            _load_entry(env, "llm", new)
        assert err.value.field == "model", (new, err.value)
        assert words in err.value.message and new in err.value.message, (new, err.value.message)
    assert "config.json" in env.registry.get("llm", "bad-config").problem  # the listing already says so


def test_a_folder_removed_after_the_scan_says_to_refresh(env):
    from modules.errors import ModelLoadError

    entry = env.registry.get("llm", DEMO_LLM_NAME)
    shutil.rmtree(entry.path)
    with pytest.raises(ModelLoadError) as err:
        _load_entry(env, "llm", DEMO_LLM_NAME)
    assert err.value.field == "model" and "Refresh" in err.value.message


def test_placement_offloads_only_a_model_larger_than_free_cuda_memory(env, monkeypatch):
    """The CUDA branch's decision, with the free-memory reading replaced (no GPU on this machine)."""
    import torch

    from modules.models import hf

    entry = env.registry.get("llm", DEMO_LLM_NAME)
    fp32_bytes = entry.metadata["parameters"] * 4
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (fp32_bytes * 2, fp32_bytes * 4))
    assert hf._device_map(entry, torch.float32, None, "cuda") == {"": "cuda"}
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (fp32_bytes // 2, fp32_bytes * 4))
    assert hf._device_map(entry, torch.float32, None, "cuda") == "auto"
    assert hf._device_map(entry, torch.float16, None, "cuda") == "auto"
    assert hf._device_map(entry, torch.float32, object(), "cuda") == {"": "cuda"}  # bnb places on the device
    assert hf._device_map(entry, torch.float32, None, "cpu") is None


def _as_list(value) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value]

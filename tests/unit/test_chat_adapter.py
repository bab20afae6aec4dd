"""An LLM adapter (what the Train tab's LLM LoRA writes into models/LLM-loras) answers in chat when chosen —
through the chat job and the Chat tab — and the base model answers exactly again without it."""
from __future__ import annotations

import json

import pytest

from modules.models.demo_lm import DEMO_LLM_NAME


def _write_adapter(base_folder, out, base_name: str):
    """A LoRA on the demo Gemma 2 with visible weights, saved by peft; its config names its base."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(base_folder), local_files_only=True)
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    gen = torch.Generator().manual_seed(3)
    for name, p in peft_model.named_parameters():
        if "lora_B" in name:  # peft starts B at zero, which changes nothing
            p.data = torch.randn(p.shape, generator=gen) * 2.0
    peft_model.save_pretrained(str(out))
    config = json.loads((out / "adapter_config.json").read_text())
    (out / "adapter_config.json").write_text(json.dumps({**config, "base_model_name_or_path": base_name}))


def _request(body: dict):
    from modules.chat.params import ChatRequest, parse

    return parse(ChatRequest, body)


def _reply(studio, adapter=None, **extra) -> str:
    body = {"model": DEMO_LLM_NAME, "messages": [{"role": "user", "content": "Say something"}], "temperature": 0,
            "max_new_tokens": 12, "reuse_cache": False, **extra}
    if adapter:
        body["adapter"] = adapter
    job = studio.jobs.run("chat", _request(body), timeout=180)
    job.raise_for_error()
    return job.result.text


def test_a_chosen_adapter_answers_and_the_base_answers_again_without_it(studio):
    from modules.errors import AtelierError
    from webui.ui.chat_turn import adapter_choices

    base_folder = studio.registry.get("llm", DEMO_LLM_NAME).path
    _write_adapter(base_folder, studio.paths.model_dir("lm_adapter") / "my-style", DEMO_LLM_NAME)
    studio.registry.refresh("lm_adapter")
    assert ("my-style", "my-style") in adapter_choices(studio, DEMO_LLM_NAME), "the Chat tab offers it on its base"

    base = _reply(studio)
    styled = _reply(studio, "my-style")
    assert styled != base, "the adapter changed nothing"
    assert _reply(studio) == base, "without the adapter the base model answers exactly as before"
    assert _reply(studio, "my-style") == styled

    with pytest.raises(AtelierError) as refused:
        studio.jobs.submit("chat", _request({"model": DEMO_LLM_NAME, "adapter": "not-there",
                                             "messages": [{"role": "user", "content": "x"}]}))
    assert refused.value.field == "adapter" and "my-style" in str(refused.value)

"""LLM LoRA / QLoRA on the demo Gemma 2, in a child process under accelerate: assistant tokens only,
a PEFT adapter listed under its base model at once that changes the model's output, nf4 QLoRA on
the CPU, raw text with packing, exact resume (with LoRA dropout on), refusals naming the field."""
from __future__ import annotations

import json

import pytest

from modules.errors import AtelierError
from modules.jobs import JobState
from modules.training.params import parse
from tests.conftest import make_data_dir

DEADLINE_S = 600
BASE = "atelier-demo-gemma2"
CHATS = [
    [{"role": "system", "content": "You answer briefly."}, {"role": "user", "content": "what is red"},
     {"role": "assistant", "content": "a colour of fire"}],
    [{"role": "user", "content": "name a cat"}, {"role": "assistant", "content": "tom"},
     {"role": "user", "content": "another"}, {"role": "assistant", "content": "felix the cat"}],
    [{"role": "user", "content": "hello there"}, {"role": "assistant", "content": "hello, how are you"}],
    [{"role": "user", "content": "say yes"}, {"role": "assistant", "content": "yes yes yes"}],
]


@pytest.fixture(scope="module")
def studio(tmp_path_factory, demo_checkpoint, demo_language_models):
    from modules.studio import Studio, StudioOptions

    data = make_data_dir(tmp_path_factory.mktemp("train-lm"), demo_checkpoint)
    chats = data / "datasets" / "chats.jsonl"
    chats.parent.mkdir(parents=True, exist_ok=True)
    chats.write_text("".join(json.dumps({"messages": m}) + "\n" for m in CHATS) + "not json\n", encoding="utf-8")
    text = data / "datasets" / "text"
    text.mkdir()
    (text / "story.txt").write_text("the red cat sat on the mat and looked at the moon. " * 40, encoding="utf-8")
    s = Studio(StudioOptions(data_dir=data, device="cpu", build_demo=False))
    s.load()
    assert s.load_error is None, s.load_error
    yield s
    s.shutdown()


def lm_request(name: str, **overrides) -> dict:
    return {"kind": "lm_lora", "output_name": name, "base_model": BASE, "dataset": "datasets/chats.jsonl",
            "rank": 4, "alpha": 8, "learning_rate": 5e-3, "max_steps": 4, "batch_size": 2, "cutoff_len": 64,
            "seed": 3, **overrides}


def train(studio, request: dict):
    job = studio.jobs.run("train_lm_lora", parse(request), timeout=DEADLINE_S)
    assert job.state in (JobState.DONE, JobState.INTERRUPTED), f"{job.error}\n" + "\n".join(list(job.logs)[-30:])
    return job


def adapter_tensors(folder):
    from safetensors.torch import load_file

    return load_file(str(folder / "adapter_model.safetensors"))


def test_only_assistant_tokens_are_labelled(studio):
    from transformers import AutoTokenizer

    from modules.training.lm_dataset import IGNORE, chat_row

    tok = AutoTokenizer.from_pretrained(str(studio.paths.model_dir("llm") / BASE), local_files_only=True)
    ids, labels = chat_row(tok, CHATS[1])
    assert len(ids) == len(labels)
    labelled = tok.decode([t for t, label in zip(ids, labels) if label != IGNORE])
    assert "tom" in labelled and "felix the cat" in labelled
    assert "name a cat" not in labelled and "another" not in labelled
    assert tok.decode(ids).count("<start_of_turn>") == 4


@pytest.fixture(scope="module")
def straight(studio):
    return train(studio, lm_request("chat-lora", sample_prompts=["what is red"], sample_max_new_tokens=4))


def test_the_adapter_is_listed_under_its_base_and_changes_the_output(studio, straight):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    out = studio.paths.model_dir("lm_adapter") / "chat-lora"
    assert straight.result["output"] == str(out) and straight.result["steps"] == 4
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == BASE and config["r"] == 4
    base_entry = studio.registry.get("llm", BASE)
    assert "chat-lora" in [e.name for e in studio.registry.adapters_for(base_entry)]
    assert "not json" in "\n".join(straight.logs) or "skipped" in "\n".join(straight.logs)
    assert straight.stream and straight.stream[-1]["prompt"] == "what is red"
    ids = torch.tensor([[2, 10, 11, 12, 13]])
    model = AutoModelForCausalLM.from_pretrained(str(base_entry.path), local_files_only=True)
    with torch.no_grad():
        before = model(ids).logits
        after = PeftModel.from_pretrained(model, str(out))(ids).logits
    assert (after - before).abs().max() > 1e-3, "the adapter changed nothing"


def test_lm_resume_after_a_stop_is_bit_identical(studio, straight):
    import torch

    first = train(studio, lm_request("chat-resumed", stop_after_steps=2))
    assert first.result["outcome"] == "stopped" and first.result["steps"] == 2
    second = train(studio, lm_request("chat-resumed", resume=True))
    assert second.result["steps"] == 4
    ours = adapter_tensors(studio.paths.model_dir("lm_adapter") / "chat-resumed")
    theirs = adapter_tensors(studio.paths.model_dir("lm_adapter") / "chat-lora")
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)


def test_qlora_nf4_trains_on_the_cpu(studio):
    job = train(studio, lm_request("chat-qlora", quantization="nf4", max_steps=2, gradient_checkpointing=True))
    assert job.result["outcome"] == "done"
    assert "nf4 (QLoRA)" in "\n".join(job.logs)
    assert (studio.paths.model_dir("lm_adapter") / "chat-qlora" / "adapter_config.json").exists()


def test_raw_text_with_packing_trains(studio):
    job = train(studio, lm_request("text-lora", dataset="datasets/text", format="text", packing=True,
                                   target_modules=["q_proj", "v_proj"], max_steps=2))
    config = json.loads((studio.paths.model_dir("lm_adapter") / "text-lora" / "adapter_config.json").read_text())
    assert set(config["target_modules"]) == {"q_proj", "v_proj"}
    assert "text rows" in "\n".join(job.logs)


@pytest.mark.parametrize("overrides, field", [
    ({"base_model": "atelier-demo-sd15"}, "base_model"),
    ({"dataset": "datasets/nothing.jsonl"}, "dataset"),
    ({"rank": 0}, "rank"),
    ({"learning_rate": -1}, "learning_rate"),
    ({"dropout": 1.5}, "dropout"),
])
def test_lm_refusals_name_the_field(studio, overrides, field):
    with pytest.raises(AtelierError) as info:
        studio.submit("train_lm_lora", parse(lm_request("refused", **overrides)))
    assert info.value.field == field and 400 <= info.value.status < 500, info.value.message


def test_a_dataset_without_usable_examples_is_refused(studio):
    bad = studio.paths.root / "datasets" / "bad.jsonl"
    bad.write_text('{"foo": 1}\nnot json\n[1, 2]\n', encoding="utf-8")
    with pytest.raises(AtelierError) as info:
        studio.submit("train_lm_lora", parse(lm_request("refused", dataset="datasets/bad.jsonl")))
    assert info.value.field == "dataset" and "no usable example" in info.value.message

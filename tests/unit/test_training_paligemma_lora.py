"""PaliGemma LoRA on the demo PaliGemma, in a child process under accelerate: labels on the suffix only,
a few steps whose loss is finite and moves, a PEFT adapter listed under its base that the Vision tab's
engine applies when chosen (and drops again when not), exact resume, bad lines skipped and reported,
refusals naming the field."""
from __future__ import annotations

import json
import math

import pytest

from modules.errors import AtelierError
from modules.jobs import JobState
from modules.models.demo_lm import DEMO_PALIGEMMA_NAME, DEMO_VLM_NAME
from modules.training.params import parse
from tests.conftest import make_data_dir

DEADLINE_S = 600
ADAPTERS = "lm_adapter"
GOOD = [
    {"image": "images/red.png", "prefix": "caption en", "suffix": "a red square on a field"},
    {"image": "images/green.png", "prefix": "caption en", "suffix": "a green circle"},
    {"image": "images/red.png", "prefix": "detect square", "suffix": "<loc0100><loc0200><loc0800><loc0900> square"},
    {"image": "images/green.png", "prefix": "detect circle", "suffix": "<loc0250><loc0250><loc0750><loc0750> circle"},
]
BAD = [
    ({"image": "images/missing.png", "prefix": "caption en", "suffix": "nothing"}, "no image file"),
    ({"image": "images/broken.png", "prefix": "caption en", "suffix": "broken"}, "cannot be read"),
    ({"image": "images/red.png", "prefix": "caption en"}, 'no "suffix"'),
    ({"image": "../../../outside.png", "prefix": "caption en", "suffix": "x"}, "outside the data dir"),
]


def _picture(path, colour):
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (80, 60), (240, 240, 240))
    ImageDraw.Draw(image).rectangle([10, 10, 60, 50], fill=colour)
    image.save(path)


@pytest.fixture(scope="module")
def studio(tmp_path_factory, demo_checkpoint, demo_language_models):
    from modules.studio import Studio, StudioOptions

    data = make_data_dir(tmp_path_factory.mktemp("train-pg"), demo_checkpoint)
    folder = data / "datasets" / "shapes"
    (folder / "images").mkdir(parents=True)
    _picture(folder / "images" / "red.png", (220, 20, 20))
    _picture(folder / "images" / "green.png", (20, 200, 40))
    (folder / "images" / "broken.png").write_bytes(b"not an image at all")
    lines = [json.dumps(r) for r in GOOD] + [json.dumps(r) for r, _ in BAD] + ["not json"]
    (folder / "train.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (data / "datasets" / "empty.jsonl").write_text(json.dumps(BAD[0][0]) + "\n", encoding="utf-8")
    s = Studio(StudioOptions(data_dir=data, device="cpu", build_demo=False))
    s.load()
    assert s.load_error is None, s.load_error
    yield s
    s.shutdown()


def pg_request(name: str, **overrides) -> dict:
    return {"kind": "paligemma_lora", "output_name": name, "base_model": DEMO_PALIGEMMA_NAME,
            "dataset": "datasets/shapes/train.jsonl", "rank": 4, "alpha": 8, "learning_rate": 2e-2, "max_steps": 4,
            "batch_size": 2, "cutoff_len": 48, "seed": 5, **overrides}


def train(studio, request: dict):
    job = studio.jobs.run("train_paligemma_lora", parse(request), timeout=DEADLINE_S)
    assert job.state in (JobState.DONE, JobState.INTERRUPTED), f"{job.error}\n" + "\n".join(list(job.logs)[-30:])
    return job


def adapter_tensors(folder):
    from safetensors.torch import load_file

    return load_file(str(folder / "adapter_model.safetensors"))


@pytest.fixture(scope="module")
def straight(studio):
    return train(studio, pg_request("shapes-lora"))


def test_only_the_suffix_is_labelled(studio):
    import torch
    from transformers import AutoProcessor

    from modules.training.paligemma_dataset import read_rows
    from modules.training.paligemma_lora_main import collate

    processor = AutoProcessor.from_pretrained(str(studio.paths.model_dir("vlm") / DEMO_PALIGEMMA_NAME),
                                              local_files_only=True)
    processor.tokenizer.padding_side = "right"
    examples = read_rows(studio.paths.root / "datasets" / "shapes" / "train.jsonl", studio.paths.root,
                         processor.tokenizer, processor.image_seq_length, 48)
    batch = collate(examples.rows[1:3], processor, 48, torch.float32)
    tok = processor.tokenizer
    for n, row in enumerate(examples.rows[1:3]):
        ids, labels = batch["input_ids"][n], batch["labels"][n]
        image_positions = ids == processor.image_token_id
        assert int(image_positions.sum()) == processor.image_seq_length
        assert (labels[image_positions] == -100).all(), "the image tokens are not labelled"
        labelled = labels[labels != -100].tolist()
        assert tok.decode(labelled) == row.suffix + tok.eos_token, "exactly the suffix and <eos> are labelled"
        prompt = ids[:(labels != -100).nonzero()[0].item()]
        assert tok.decode(prompt[~(prompt == processor.image_token_id)]).endswith(row.prefix + "\n")
    assert "<loc0100>" in tok.decode(batch["input_ids"][1]), "loc tokens stay single tokens"


def test_a_few_steps_train_and_the_loss_is_finite_and_moves(straight):
    losses = [v for _, v in straight.metrics["loss"]]
    assert [s for s, _ in straight.metrics["loss"]] == [1, 2, 3, 4]
    assert all(math.isfinite(v) for v in losses)
    assert max(losses) - min(losses) > 1e-3, f"the loss did not move: {losses}"
    assert straight.result["outcome"] == "done" and straight.result["steps"] == 4
    logs = "\n".join(straight.logs)
    assert "vision tower and projector frozen" in logs


def test_bad_lines_are_skipped_and_reported(studio, straight):
    logs = "\n".join(straight.logs)
    assert f"{len(BAD) + 1} example(s) skipped" in logs
    for n, (_row, why) in enumerate(BAD, start=len(GOOD) + 1):
        assert f"skipped train.jsonl:{n}: " in logs and why in logs, why
    assert "4 image + prefix → suffix lines" in logs
    from modules.training import runs

    plan = runs.plan(pg_request("planned"), studio.jobs.services_of("train_paligemma_lora"))
    assert plan["steps"]["images"] == len(GOOD) and len(plan["skipped"]) == len(BAD) + 1
    assert plan["memory"]["total_bytes"] > 0


def test_only_the_language_model_gets_lora(studio, straight):
    out = studio.paths.model_dir(ADAPTERS) / "shapes-lora"
    keys = adapter_tensors(out)
    assert keys and all(".language_model." in k for k in keys), [k for k in keys if ".language_model." not in k][:3]
    assert any("mlp.down_proj" in k for k in keys) and any("self_attn.q_proj" in k for k in keys)
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == DEMO_PALIGEMMA_NAME and config["r"] == 4


def _vision(studio, **fields):
    from modules.vision.params import VisionRequest, parse_vision
    from PIL import Image

    with Image.open(studio.paths.root / "datasets" / "shapes" / "images" / "red.png") as im:
        image = im.convert("RGB")
    job = studio.jobs.run("vision", parse_vision(VisionRequest, {"task": "raw", "prompt": "caption en",
                                                                  "model": DEMO_PALIGEMMA_NAME, "image": image,
                                                                  "max_new_tokens": 8, **fields}), timeout=180)
    job.raise_for_error()
    return job.result


def test_the_adapter_is_listed_under_its_base_and_changes_the_vision_answer(studio, straight):
    from modules.vision.catalog import listing

    base = studio.registry.get("vlm", DEMO_PALIGEMMA_NAME)
    assert "shapes-lora" in [e.name for e in studio.registry.adapters_for(base)]
    raw = next(r for r in listing(studio.jobs.services_of("vision")) if r["name"] == "raw")
    assert "shapes-lora" in raw["adapters"][DEMO_PALIGEMMA_NAME]
    before = _vision(studio)
    tuned = _vision(studio, adapter="shapes-lora")
    after = _vision(studio)
    assert tuned.adapter == "shapes-lora" and tuned.to_json()["adapter"] == "shapes-lora"
    assert tuned.text != before.text, "the adapter changed nothing"
    assert after.text == before.text and after.adapter is None, "the base model answers again without it"


def test_an_adapter_of_another_base_is_refused_naming_adapter(studio, straight):
    from modules.vision.params import VisionRequest, parse_vision

    with pytest.raises(AtelierError) as info:
        studio.submit("vision", parse_vision(VisionRequest, {"task": "question", "question": "what?",
                                                              "model": DEMO_VLM_NAME, "adapter": "shapes-lora",
                                                              "image": _png()}))
    assert info.value.field == "adapter" and DEMO_PALIGEMMA_NAME in info.value.message
    with pytest.raises(AtelierError) as info:
        studio.submit("vision", parse_vision(VisionRequest, {"task": "caption", "adapter": "no-such",
                                                              "image": _png()}))
    assert info.value.field == "adapter" and 400 <= info.value.status < 500


def _png() -> str:
    import base64
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (32, 32), (1, 2, 3)).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def test_resume_after_a_stop_is_bit_identical(studio, straight):
    import torch

    first = train(studio, pg_request("shapes-resumed", stop_after_steps=2))
    assert first.result["outcome"] == "stopped" and first.result["steps"] == 2
    second = train(studio, pg_request("shapes-resumed", resume=True))
    assert second.result["steps"] == 4
    assert second.metrics["loss"] == [m for m in straight.metrics["loss"] if m[0] > 2]
    ours = adapter_tensors(studio.paths.model_dir(ADAPTERS) / "shapes-resumed")
    theirs = adapter_tensors(studio.paths.model_dir(ADAPTERS) / "shapes-lora")
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)


def test_save_merged_writes_a_model_that_answers_as_base_plus_adapter(studio, straight):
    job = train(studio, pg_request("shapes-merged", save_merged=True))  # straight's training, another name
    merged = studio.paths.model_dir("vlm") / "shapes-merged"
    assert job.result["merged_output"] == str(merged) and (merged / "config.json").is_file()
    assert "shapes-merged" in [e.name for e in studio.registry.list("vlm")], "listed at once"
    assert _vision(studio, model="shapes-merged").text == _vision(studio, adapter="shapes-lora").text


def test_attention_only_with_the_vision_tower_and_qlora(studio):
    job = train(studio, pg_request("shapes-qlora", target_modules="attention", train_vision_tower=True,
                                   quantization="nf4", max_steps=2))
    assert job.result["outcome"] == "done" and "nf4 (QLoRA)" in "\n".join(job.logs)
    keys = adapter_tensors(studio.paths.model_dir(ADAPTERS) / "shapes-qlora")
    language = [k for k in keys if ".language_model." in k]
    assert language and not any("mlp" in k for k in language)
    assert any(".vision_tower." in k for k in keys) and any(".multi_modal_projector." in k for k in keys)


def test_an_empty_dataset_is_refused_naming_dataset(studio):
    with pytest.raises(AtelierError) as info:
        studio.submit("train_paligemma_lora", parse(pg_request("refused", dataset="datasets/empty.jsonl")))
    assert info.value.field == "dataset" and 400 <= info.value.status < 500
    assert "no usable line" in info.value.message and "no image file" in info.value.message


@pytest.mark.parametrize("overrides, field", [
    ({"base_model": DEMO_VLM_NAME}, "base_model"),
    ({"base_model": "atelier-demo-sd15"}, "base_model"),
    ({"cutoff_len": 16}, "cutoff_len"),
    ({"target_modules": "everything"}, "target_modules"),
    ({"rank": 0}, "rank"),
    ({"save_merged": True, "output_name": DEMO_PALIGEMMA_NAME}, "output_name"),
])
def test_refusals_name_the_field(studio, overrides, field):
    with pytest.raises(AtelierError) as info:
        studio.submit("train_paligemma_lora", parse(pg_request("refused", **overrides)))
    assert info.value.field == field and 400 <= info.value.status < 500, info.value.message

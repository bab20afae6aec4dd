"""The vision job kinds over the demo PaliGemma and Gemma 3 (random weights, real classes): every task
end to end through the job engine, batches with a bad image, and the submit-time refusals naming the field."""
from __future__ import annotations

import base64
import io
import json

import pytest

from modules.errors import AtelierError
from modules.models.demo_lm import DEMO_PALIGEMMA_NAME, DEMO_VLM_NAME
from modules.vision.params import VisionBatchRequest, VisionRequest, parse_vision

TIMEOUT = 180
KEYS = {"model", "task", "prompt", "text", "width", "height", "objects", "invalid"}


def picture(w=96, h=72, colour=(200, 30, 30)):
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (w, h), colour)
    ImageDraw.Draw(image).ellipse([w // 4, h // 4, 3 * w // 4, 3 * h // 4], fill=(20, 200, 40))
    return image


def b64(image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def run(studio, kind="vision", **body):
    cls = VisionBatchRequest if kind == "vision_batch" else VisionRequest
    if kind == "vision":
        body.setdefault("image", picture())
    job = studio.jobs.run(kind, parse_vision(cls, body), timeout=TIMEOUT)
    assert job.state.finished, f"{kind} did not finish in {TIMEOUT} s"
    job.raise_for_error()
    return job


CASES = [
    dict(task="caption", language="de"), dict(task="describe"), dict(task="ocr"),
    dict(task="answer", question="what colour is it?"), dict(task="detect", objects="circle ; square"),
    dict(task="segment", objects=["circle"]), dict(task="raw", prompt="caption es"),
    dict(task="question", question="What is in this image?"),
]
PROMPTS = ["caption de", "describe en", "ocr", "answer en what colour is it?", "detect circle ; square",
           "segment circle", "caption es", "What is in this image?"]


@pytest.mark.parametrize("body,prompt", list(zip(CASES, PROMPTS)), ids=[c["task"] for c in CASES])
def test_every_task_runs_end_to_end_through_the_job_engine(studio, body, prompt):
    job = run(studio, max_new_tokens=8, **body)
    result = job.result
    out = result.to_json()
    assert KEYS <= set(out) and out["task"] == body["task"] and out["prompt"] == prompt
    assert out["model"] == (DEMO_VLM_NAME if body["task"] == "question" else DEMO_PALIGEMMA_NAME)
    assert (out["width"], out["height"]) == (96, 72)
    assert isinstance(out["text"], str) and isinstance(out["objects"], list) and out["invalid"] >= 0
    assert result.overlay is not None and result.overlay.size == (96, 72)
    json.dumps(out)  # the JSON is JSON
    if body["task"] == "segment":
        assert any("demo" in note for note in out["notes"]), "a random-weights decoder is said to be one"


def test_segment_end_to_end_with_a_known_answer_gives_boxes_masks_and_the_overlay(studio, monkeypatch):
    """The demo's random weights never write locations; with PaliGemma's answer fixed, the rest of the
    path (the real model still loaded and run, then parse, VQ-VAE, paste, RLE, overlay) is checked."""
    from modules.vision import masks, paligemma

    segs = "".join(f"<seg{c:03d}>" for c in range(16))
    answer = f"<loc0256><loc0128><loc0768><loc0512>{segs} circle ; <loc0900><loc0900><loc0100><loc0100>{segs} x"
    real = paligemma.generate
    calls = []

    def fixed(lm, image, text, max_new_tokens, stop=None):
        calls.append(real(lm, image, text, 2, stop))  # the model runs for real; its gibberish is set aside
        return answer

    monkeypatch.setattr(paligemma, "generate", fixed)
    out = run(studio, task="segment", objects="circle", save=True, image=picture(200, 100)).result
    assert calls, "the model was not run"
    data = out.to_json()
    assert data["invalid"] == 1 and len(data["objects"]) == 1
    obj = data["objects"][0]
    assert obj["label"] == "circle" and obj["box"] == [25, 25, 100, 75]
    assert obj["box_normalized"] == [256, 128, 768, 512] and obj["score"] is None
    mask = masks.decode_rle(obj["mask"])
    assert mask.shape == (100, 200) and not mask[:, :25].any() and not mask[75:].any()
    assert out.overlay.size == (200, 100)
    inpaint_mask = out.objects[0].mask_image()  # what "send to inpaint" hands over
    import numpy as np

    assert inpaint_mask.mode == "L" and inpaint_mask.size == (200, 100)
    assert ((np.asarray(inpaint_mask) == 255) == mask).all() and set(np.unique(np.asarray(inpaint_mask))) <= {0, 255}
    saved = sorted((studio.paths.outputs / "vision").rglob("*-segment.*"))
    assert [p.suffix for p in saved] == [".json", ".png"], saved
    assert json.loads(saved[0].read_text())["objects"][0]["box"] == [25, 25, 100, 75]


def test_batch_reports_and_skips_a_bad_image_and_writes_overlays_and_jsonl(studio):
    images = [b64(picture()), "bm90IGFuIGltYWdl", b64(picture(64, 48, (0, 0, 255)))]
    job = run(studio, "vision_batch", task="caption", images=images, names=["one.png", "broken.png", "three.png"],
              max_new_tokens=4)
    result = job.result
    assert (result["total"], result["done"], result["failed"]) == (3, 2, 1)
    bad = result["items"][1]
    assert bad["source"] == "broken.png" and "not a readable image" in bad["error"]
    assert [i["index"] for i in result["items"]] == [0, 1, 2]
    assert job.progress.step == 3 and job.progress.total == 3
    jsonl = studio.paths.outputs / result["jsonl"]
    lines = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert [line["source"] for line in lines] == ["one.png", "broken.png", "three.png"]
    from PIL import Image

    for line in (lines[0], lines[2]):
        with Image.open(studio.paths.outputs / line["overlay"]) as overlay:
            assert overlay.size == (line["width"], line["height"])
    assert len(job.stream) == 3, "each image's line is streamed as it is done"
    assert result["images_per_second"] > 0
    assert "broken.png: skipped" in "\n".join(job.logs)


def test_batch_of_a_folder_under_the_data_dir_skips_a_corrupt_file(studio):
    folder = studio.paths.root / "to-caption"
    folder.mkdir()
    picture().save(folder / "a.png")
    (folder / "b.jpg").write_bytes(b"\xff\xd8 truncated")
    picture(50, 50).save(folder / "c.webp")
    (folder / "notes.txt").write_text("not an image, not listed")
    result = run(studio, "vision_batch", task="detect", objects="circle", folder="to-caption", max_new_tokens=4).result
    assert [i["source"] for i in result["items"]] == ["a.png", "b.jpg", "c.webp"]
    assert (result["done"], result["failed"]) == (2, 1) and "error" in result["items"][1]


def refusal(studio, kind="vision", **body) -> AtelierError:
    cls = VisionBatchRequest if kind == "vision_batch" else VisionRequest
    with pytest.raises(AtelierError) as err:
        studio.submit(kind, parse_vision(cls, body))
    return err.value


def test_refusals_name_the_field_before_anything_is_queued(studio):
    img = picture()
    assert refusal(studio, task="detect", image=img).field == "objects"
    assert refusal(studio, task="segment", objects=" ; ", image=img).field == "objects"
    assert refusal(studio, task="answer", image=img).field == "question"
    err = refusal(studio, task="teleport", image=img)
    assert err.field == "task" and "caption" in err.message
    err = refusal(studio, task="question", question="hi", model=DEMO_PALIGEMMA_NAME, image=img)
    assert err.field == "task" and "PaliGemma" in err.message and "caption" in err.message
    err = refusal(studio, task="caption", model=DEMO_VLM_NAME, image=img)
    assert err.field == "task" and "question" in err.message
    assert refusal(studio, task="caption", model="nope", image=img).field == "model"
    assert refusal(studio, "vision_batch", task="caption", folder="../outside").field == "folder"
    assert refusal(studio, "vision_batch", task="caption", folder="missing").field == "folder"
    assert refusal(studio, "vision_batch", task="caption").field == "images"
    assert studio.jobs.pending("vision") == 0


def test_not_an_image_and_too_large_are_refused_naming_image():
    from PIL import Image

    with pytest.raises(AtelierError) as err:
        parse_vision(VisionRequest, {"task": "caption", "image": "bm90IGFuIGltYWdl"})
    assert err.value.field == "image" and "not a readable image" in err.value.message
    big = Image.new("1", (5000, 4000))  # 20 M pixels, a few KiB as a PNG: refused from its header
    with pytest.raises(AtelierError) as err:
        parse_vision(VisionRequest, {"task": "caption", "image": b64(big)})
    assert err.value.field == "image" and "5000x4000" in err.value.message


def test_segment_without_the_vq_vae_file_is_refused_with_where_to_put_it(studio):
    from modules.vision.vqvae import FILE_NAME

    (studio.paths.model_dir("vlm") / FILE_NAME).unlink()
    err = refusal(studio, task="segment", objects="cat", image=picture())
    assert err.field == "task" and FILE_NAME in err.message and "models/VLM" in err.message
    detect = run(studio, task="detect", objects="cat", max_new_tokens=4)  # the other tasks still run
    assert detect.result.task == "detect"


def test_tasks_are_listed_with_the_models_that_run_them(studio):
    from modules.vision.catalog import listing

    rows = {r["name"]: r for r in listing(studio.jobs.services_of("vision"))}
    assert set(rows) >= {"caption", "describe", "ocr", "answer", "detect", "segment", "raw", "question"}
    assert rows["caption"]["models"] == [DEMO_PALIGEMMA_NAME] and rows["question"]["models"] == [DEMO_VLM_NAME]
    assert rows["segment"]["ready"] and rows["detect"]["fields"] == ["objects"]
    with pytest.raises(ValueError, match="builtin"):  # extensions cannot take a built-in task's name
        from modules.extensions.registries import VisionTaskSpec

        studio.vision_tasks.add(VisionTaskSpec(name="detect", run=lambda i, o: "", owner="someone"))


def test_a_builtin_task_runs_through_its_registry_entry_too(studio):
    spec = studio.vision_tasks.get("caption")
    out = spec.run(picture(), {"max_new_tokens": 3})
    assert KEYS <= set(out) and out["model"] == DEMO_PALIGEMMA_NAME


def test_the_free_question_is_the_chat_engines_reply(studio):
    """Gemma 3's free question runs the chat job's own template and generation: the vision answer is the
    text a greedy "chat" job gives for the same image and question."""
    from modules.chat.params import ChatRequest, parse

    image, question = picture(), "What is in this image?"
    answer = run(studio, task="question", question=question, max_new_tokens=12).result.text
    chat = studio.jobs.run("chat", parse(ChatRequest, {
        "model": DEMO_VLM_NAME, "kind": "vlm", "temperature": 0, "max_new_tokens": 12, "reuse_cache": False,
        "messages": [{"role": "user", "content": [{"type": "image", "image": image},
                                                  {"type": "text", "text": question}]}]}), timeout=TIMEOUT)
    chat.raise_for_error()
    assert chat.result.usage.completion_tokens >= 1
    assert answer == chat.result.text.strip()

"""Train tab in a real browser: pick the demo checkpoint's kind (SD LoRA), a small dataset and enough
steps to watch; the plan shows the step math; Start; the step counter moves and the loss plot gets
points; after a page reload the tab shows the running training again; Stop; the job ends stopped with
a checkpoint saved on disk."""
from __future__ import annotations

import re
import time

import httpx
import pytest

from tests.browser.helpers import choose, open_tab, set_number
from tests.conftest import wait_until
from tests.training_support import make_dataset

STEPS = 400  # far more than the test waits for: Stop ends it
START_DEADLINE_S = 300  # the training process starts torch and caches latents first: slow on a busy machine


def _step(page) -> int:
    found = re.search(r"Step (\d+)/", page.locator("#train_progress").inner_text())
    return int(found.group(1)) if found else -1


def _loss_points(page) -> int:
    """Points on the loss plot's line (vega draws it as one SVG path: M, then one L per further point)."""
    line = page.locator("#train_loss_plot g.mark-line path")
    return line.first.get_attribute("d").count("L") + 1 if line.count() else 0


@pytest.mark.timeout(600)
def test_start_watch_the_loss_curve_and_stop_with_a_checkpoint(page, live_server):
    make_dataset(live_server.data_dir / "datasets" / "tab-cats")
    name = f"browser-lora-{int(time.time())}"
    open_tab(page, "Train")
    page.wait_for_function("() => document.querySelector('#train_plan').innerText.includes('⚠️')")  # no name yet
    choose(page, "train_sd_lora_dataset", "datasets/tab-cats")
    box = page.locator("#train_sd_lora_output_name textarea, #train_sd_lora_output_name input").first
    box.fill(name)
    box.press("Tab")
    set_number(page, "train_sd_lora_resolution", 64)
    set_number(page, "train_sd_lora_max_steps", STEPS)
    page.wait_for_function(f"() => document.querySelector('#train_plan').innerText.includes('→ {STEPS} steps')",
                           timeout=60_000)
    assert "3 images x 2 repeats x 1 epochs / batch 1 = 6 steps" in page.locator("#train_plan").inner_text()
    page.click("#train_start")
    try:
        wait_until(lambda: _step(page) >= 1, START_DEADLINE_S, "the first training step", interval=0.5)
        first = wait_until(lambda: _loss_points(page), 60, "a point on the loss plot", interval=0.25)
        step = _step(page)
        wait_until(lambda: _step(page) > step, 120, "the step counter to move", interval=0.25)
        wait_until(lambda: _loss_points(page) > first, 60, "more points on the loss plot", interval=0.25)
        assert "loss points" in page.locator("#train_metrics").inner_text()
        # A page reload (as kohya / OneTrainer users do): the tab finds the running training again.
        seen = _step(page)
        page.reload()
        page.wait_for_selector("#txt2img_prompt textarea")
        open_tab(page, "Train")
        wait_until(lambda: _step(page) >= seen and _loss_points(page) >= first, 60, "the training shown again",
                   interval=0.25)
        page.click("#train_stop")
        page.wait_for_function("() => document.querySelector('#train_result').innerText.includes('Stopped at step')",
                               timeout=120_000)
        result = page.locator("#train_result").inner_text()
        assert "Checkpoint saved" in result, result
        saved = re.search(r"Stopped at step (\d+)", result).group(1)
        checkpoint = live_server.data_dir / "training" / name / "checkpoints" / f"step-{int(saved):06d}"
        assert checkpoint.is_dir() and (checkpoint / "trainer_state.json").is_file(), result
        rows = httpx.get(f"{live_server.url}/atelier/v1/jobs", params={"kind": "train_sd_lora"}, timeout=30).json()
        job = next(r for r in rows if r["request"]["output_name"] == name)
        assert job["state"] == "interrupted" and job["result"]["outcome"] == "stopped", job
    finally:  # a failed test must not leave a 400-step training holding the shared server's device
        for job_id in _running(live_server, name):
            httpx.post(f"{live_server.url}/atelier/v1/jobs/{job_id}/interrupt", timeout=30)
        wait_until(lambda: not _running(live_server, name), 120, "the training to end", interval=0.5)


def _running(server, name: str) -> list[str]:
    rows = httpx.get(f"{server.url}/atelier/v1/jobs", params={"kind": "train_sd_lora"}, timeout=30).json()
    return [r["id"] for r in rows if (r.get("request") or {}).get("output_name") == name
            and r["state"] in ("queued", "running")]


def test_caption_editor_uploads_images_and_saves_a_caption(page, live_server, tmp_path):
    uploads = make_dataset(tmp_path / "uploads") / "2_red cat"
    folder = f"browser-captions-{int(time.time())}/3_dog"
    open_tab(page, "Train")
    page.get_by_role("tab", name="Dataset captions", exact=True).click()
    box = page.locator("#train_captions_folder input")
    box.fill(folder)
    box.press("Enter")
    page.locator("#train_captions_upload input[type=file]").set_input_files([str(uploads / "0.png"),
                                                                            str(uploads / "2.png")])
    page.wait_for_function("() => document.querySelector('#train_captions_status').innerText.includes('Added 2')",
                           timeout=60_000)
    page.locator("#train_captions_gallery button.thumbnail-item, #train_captions_gallery .thumbnail-item").nth(1).click()
    page.wait_for_function("() => document.querySelector('#train_captions_image textarea, "
                           "#train_captions_image input').value === '2.png'")
    page.locator("#train_captions_caption textarea").fill("a sleepy dog,\nin the sun")
    page.click("#train_captions_save")
    page.wait_for_function("() => document.querySelector('#train_captions_status').innerText.includes('Saved 2.txt')")
    written = live_server.data_dir / "datasets" / folder / "2.txt"
    assert written.read_text(encoding="utf-8") == "a sleepy dog, in the sun\n"
    assert sorted(p.name for p in written.parent.iterdir()) == ["0.png", "2.png", "2.txt"]

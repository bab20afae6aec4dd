"""The UI's own logic without a browser: throttled progress, the painted mask, gallery listing,
request building, the loading banner, checkpoint switching, and a broken tab that must not take
the page down. (The same UI in a real browser: tests/browser/.)"""
from __future__ import annotations

import os
import threading
import time

import pytest

from modules.errors import InvalidRequest, PathRefused
from modules.jobs import Job, JobContext, JobState


def test_progress_is_throttled_and_ends_with_the_final_state():
    from webui.ui.progress import follow

    job = Job(kind="txt2img", request=None)
    ctx = JobContext(job, None)

    def engine():
        job.state = JobState.RUNNING
        job.started_at = time.time()
        for step in range(1, 401):  # ~400 changes in ~0.8 s: far more than a browser should see
            ctx.progress(step, 400)
            time.sleep(0.002)
        job.state = JobState.DONE
        job._touch()

    threading.Thread(target=engine, daemon=True).start()
    started = time.monotonic()
    snaps = list(follow(job, updates_per_second=5))
    elapsed = time.monotonic() - started
    assert snaps[-1].finished and snaps[-1].state == JobState.DONE
    assert len(snaps) <= elapsed * 5 + 3, f"{len(snaps)} updates in {elapsed:.2f}s"
    assert any(0 < s.step < 400 for s in snaps), "no intermediate progress was shown"


def test_progress_html_shows_step_total_and_eta():
    from webui.ui.progress import progress_html, snapshot

    job = Job(kind="txt2img", request=None, state=JobState.RUNNING, started_at=time.time() - 2)
    JobContext(job, None).progress(5, 20)
    text = progress_html(snapshot(job))
    assert "Step 5/20" in text and "ETA" in text


def test_painted_layer_becomes_white_mask():
    from PIL import Image, ImageDraw

    from webui.ui.inpaint import painted_mask, uploaded_mask

    background = Image.new("RGBA", (64, 64), (10, 20, 30, 255))
    layer = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    ImageDraw.Draw(layer).rectangle((10, 20, 29, 29), fill=(255, 255, 255, 90))  # half-transparent still counts
    mask = painted_mask({"background": background, "layers": [layer], "composite": background})
    assert mask.mode == "L" and mask.getbbox() == (10, 20, 30, 30)
    assert set(mask.getdata()) == {0, 255}
    empty = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    assert painted_mask({"background": background, "layers": [empty], "composite": background}) is None
    upload = Image.new("RGB", (32, 32), "black")
    upload.paste((255, 255, 255), (0, 0, 16, 32))
    assert uploaded_mask(upload, (64, 64)).getbbox() == (0, 0, 32, 64)  # resized to the image


def test_gallery_lists_thousands_fast_newest_first_and_skips_temporaries(tmp_path):
    from webui.ui.gallery import list_dates, list_images, page_of

    outputs = tmp_path / "outputs"
    day = outputs / "txt2img-images" / "2026-01-02"
    day.mkdir(parents=True)
    (outputs / "img2img-images" / "2026-01-01").mkdir(parents=True)
    for i in range(3000):
        p = day / f"{i:05d}-1.png"
        p.write_bytes(b"")  # never opened to list
        os.utime(p, (1_000_000 + i, 1_000_000 + i))
    (day / ".00001-x.png.tmp").write_bytes(b"")
    (day / ".hidden.png").write_bytes(b"")

    def fastest(fn) -> float:
        times = []
        for _ in range(3):
            started = time.perf_counter()
            fn()
            times.append(time.perf_counter() - started)
        return min(times)

    # The least any listing must do, measured here and now: read the folder and each file's mtime, sort.
    baseline = fastest(lambda: sorted((e.stat().st_mtime, e.name) for e in os.scandir(day)))
    took = fastest(lambda: list_images(outputs, "2026-01-02"))
    assert took < 20 * baseline, f"listing took {took * 1000:.1f} ms; reading the folder takes {baseline * 1000:.1f} ms"
    items = list_images(outputs, "2026-01-02")
    assert len(items) == 3000 and items[0] == "txt2img-images/2026-01-02/02999-1.png"
    assert list_dates(outputs) == ["2026-01-02", "2026-01-01"]
    page, number, pages = page_of(items, 99)
    assert number == pages == 84 and len(page) == 3000 - 83 * 36


def test_gallery_refuses_paths_outside_outputs(tmp_path):
    from modules.studio import Studio, StudioOptions
    from webui.ui.gallery import resolve_image

    studio = Studio(StudioOptions(data_dir=tmp_path, device="cpu", build_demo=False))  # paths only: no load
    try:
        (tmp_path / "config.json").write_text("{}")  # a real file there: the refusal is not a "not found"
        with pytest.raises(PathRefused):
            resolve_image(studio, "../config.json")
        (studio.paths.outputs / "notes.txt").write_text("x")
        with pytest.raises(InvalidRequest):
            resolve_image(studio, "notes.txt")
    finally:
        studio.shutdown()


def test_make_request_names_the_bad_field():
    from modules.diffusion.params import Txt2ImgRequest
    from webui.ui.generation import make_request

    ok = make_request(Txt2ImgRequest, {"prompt": "a", "seed": 12.0, "width": 64.0, "height": 64, "_seed_extra": False,
                                       "subseed_strength": 0.5})
    assert ok.seed == 12 and ok.width == 64 and ok.subseed_strength == 0.0
    with pytest.raises(InvalidRequest) as err:
        make_request(Txt2ImgRequest, {"prompt": "a", "width": 65})
    assert err.value.field == "width"


def test_the_module_picker_becomes_forges_override_setting_and_empty_sends_none():
    from modules.diffusion.params import Txt2ImgRequest
    from webui.ui.generation import make_request

    picked = make_request(Txt2ImgRequest, {"prompt": "a", "_modules": ["ae", "t5xxl"]})
    assert picked.additional_modules == ("ae", "t5xxl")
    assert make_request(Txt2ImgRequest, {"prompt": "a", "_modules": []}).override_settings == {}


def test_infotext_fills_fields_by_request_name():
    from webui.ui.components import fields_from_infotext

    fields = fields_from_infotext("cat\nNegative prompt: dog\nSteps: 9, Sampler: Euler, CFG scale: 4, Seed: 7, Size: 96x64")
    assert fields == {"prompt": "cat", "negative_prompt": "dog", "steps": 9, "sampler_name": "Euler",
                      "cfg_scale": 4.0, "seed": 7, "width": 96, "height": 64}


def test_loading_banner_then_demo_banner(data_dir):
    from modules.studio import Studio, StudioOptions
    from webui.ui.topbar import status_html

    s = Studio(StudioOptions(data_dir=data_dir, device="cpu"))
    try:
        assert "Loading models" in status_html(s)
        s.load()
        assert "random weights" in status_html(s)
    finally:
        s.shutdown()


def test_a_broken_tab_does_not_take_the_ui_down(tmp_path):
    from modules.extensions.tabs import TabSpec
    from modules.studio import Studio, StudioOptions
    from webui.ui import build_ui

    s = Studio(StudioOptions(data_dir=tmp_path, device="cpu", build_demo=False))

    def broken(studio):
        raise RuntimeError("boom")

    s.tabs.add(TabSpec("Broken", broken, owner="bad-ext", order=70, elem_id="tab_broken"))
    blocks = build_ui(s)
    assert {"tab_txt2img", "tab_inpaint", "tab_broken", "tab_settings"} <= set(blocks.atelier_components)
    assert blocks.atelier_components["tab_broken"] == {}
    s.shutdown()


def test_corrupt_config_is_reported_in_the_banner(data_dir):
    from modules.studio import Studio, StudioOptions
    from webui.ui.topbar import status_html

    (data_dir / "config.json").write_text("{not json", encoding="utf-8")
    s = Studio(StudioOptions(data_dir=data_dir, device="cpu"))
    try:
        s.ready.set()  # the banner only; no model needed
        assert "config.json.bak" in status_html(s)
    finally:
        s.shutdown()


def test_checkpoint_switch_is_remembered_and_listed(data_dir, second_checkpoint):
    import shutil

    from modules.studio import Studio, StudioOptions
    from tests.conftest import SECOND
    from webui.ui.models import rows
    from webui.checkpoints import switch_checkpoint

    shutil.copytree(second_checkpoint, data_dir / "models" / "Stable-diffusion" / SECOND)
    studio = Studio(StudioOptions(data_dir=data_dir, device="cpu"))
    try:
        studio.load()
        assert studio.models.active.entry.name == "atelier-demo-sd15"  # so the switch below is a real one
        switch_checkpoint(studio, SECOND)
        assert studio.models.active.entry.name == SECOND
        assert studio.settings.get().sd_model_checkpoint == SECOND
        assert f'"sd_model_checkpoint": "{SECOND}"' in studio.paths.config_file.read_text()
        listed = {row[0]: row for row in rows(studio, "checkpoint")}
        assert set(listed) == {"atelier-demo-sd15", SECOND}
        assert listed[SECOND][4] != "disk", "the active checkpoint is listed as loaded"
        with pytest.raises(Exception) as err:
            switch_checkpoint(studio, "../outside")
        assert "checkpoint" in str(err.value)
        assert studio.models.active.entry.name == SECOND
        assert studio.settings.get().sd_model_checkpoint == SECOND  # a failed switch is not remembered
    finally:
        studio.shutdown()

"""Tracking through a video (Vision tab → Video, job kind "vision_video", task yolo-track): ultralytics'
ByteTrack and BoT-SORT run in the YOLO model's worker process, frame by frame, and the job writes the output
MP4 (boxes and track ids drawn), per-frame JSON Lines (the detector shape + frame, time, track_id), the
table of tracks and counts per class over time; Interrupt keeps what is done; bad options are refused
at submit naming the field.

Why a hand-weighted detector: a random-weight YOLO detects nothing meaningful, and training one to find a
rectangle takes minutes on this CPU. `red_detector_code` (tests/video_support.py) writes a real ultralytics
.pt — a real Detect head over one 15x15 convolution whose weights are set by hand to answer "where is a red
16x16 square" — so detections are exact and known, and everything after them is what a user's tracking
job runs: the .pt trusted and loaded in a worker, the frames decoded by PyAV, `model.track(persist=…)`
with ultralytics' own tracker classes, the drawing and the encoding. Only the detector's knowledge is fake."""
from __future__ import annotations

import json
import sys

import pytest

from modules.errors import AtelierError
from modules.vision import video
from modules.vision.video_job import parse_video
from tests.conftest import wait_until
from tests.unit.test_yolo_extension import BUILD_S, enable_yolo, in_worker_python, part, yolo_studio  # noqa: F401
from tests.video_support import RECT, b64_video, rectangle_video, red_detector_code

TIMEOUT = 300
OPTIONS = {"conf": 0.5, "imgsz": 96}


@pytest.fixture
def tracking(yolo_studio, tmp_path):
    """The studio with YOLO enabled and the red-rectangle detector trusted in models/yolo."""
    python = enable_yolo(yolo_studio)
    folder = yolo_studio.paths.model_dir("yolo")
    in_worker_python(python, red_detector_code(folder / "red.pt"), tmp_path)
    yolo_studio.registry.refresh("yolo")
    route = next(r for r in yolo_studio.extensions.routes.list("yolo") if r.path == "/trust" and "POST" in r.methods)
    body = route.endpoint.__annotations__["body"]
    body = getattr(sys.modules[route.endpoint.__module__], body) if isinstance(body, str) else body
    route.endpoint(body(name="red.pt", sha256=part("trust").sha256_of((folder / "red.pt").read_bytes())))
    return yolo_studio


def track(studio, **body):
    req = parse_video({"task": "track", "model": "red.pt", "options": OPTIONS, **body})
    job = studio.jobs.run("vision_video", req, timeout=TIMEOUT)
    assert job.state.finished
    job.raise_for_error()
    return job.result


@pytest.mark.timeout(BUILD_S + 600)
def test_a_moving_rectangle_keeps_one_track_id_in_every_frame_with_bytetrack_and_botsort(tracking):
    studio = tracking
    clip = b64_video(rectangle_video(30, fps=10))
    result = track(studio, video=clip)
    assert result["frames_done"] == 30 and result["interrupted"] is False and result["source"]["frames"] == 30
    lines = [json.loads(x) for x in (studio.paths.outputs / result["jsonl"]).read_text().splitlines()]
    assert [line["frame"] for line in lines] == list(range(30))
    assert [line["time"] for line in lines] == [round(i / 10, 4) for i in range(30)]
    ids = {obj["track_id"] for line in lines for obj in line["objects"]}
    assert all(len(line["objects"]) == 1 for line in lines) and len(ids) == 1, "one object, one id, every frame"
    for i, line in enumerate(lines):
        obj = line["objects"][0]
        assert obj["label"] == "rectangle" and {"box", "box_normalized", "score", "mask"} <= set(obj)
        x1, y1, x2, y2 = obj["box"]
        assert abs(x1 - (4 + 2 * i)) <= 2 and abs(y1 - 24) <= 2 and abs((x2 - x1) - RECT) <= 2, (i, obj["box"])
    [row] = result["summary"]["tracks"]
    assert row == {"id": ids.pop(), "class": "rectangle", "first_frame": 0, "last_frame": 29, "first_time": 0.0,
                   "last_time": 2.9, "frames": 30}
    assert [c["count"] for c in result["summary"]["counts"]] == [1] * 30
    out = video.VideoSource(path=studio.paths.outputs / result["output"])
    info = video.probe(out)
    assert (info.codec, info.frames, info.width, info.height) == ("h264", 30, 96, 64) and result["output"].endswith(".mp4")
    drawn = next(video.frames(out))[2]
    x1, y1, _x2, _y2 = lines[0]["objects"][0]["box"]
    assert drawn.getpixel((x1 + RECT // 2, y1)) != drawn.getpixel((x1 + RECT // 2, y1 + RECT // 2)), "the box is drawn"

    strided = track(studio, video=clip, stride=2, start=0.5, options={**OPTIONS, "tracker": "botsort",
                                                                        "gmc_method": "none", "track_buffer": 10})
    lines = [json.loads(x) for x in (studio.paths.outputs / strided["jsonl"]).read_text().splitlines()]
    assert [line["frame"] for line in lines] == list(range(5, 30, 2))
    assert len({obj["track_id"] for line in lines for obj in line["objects"]}) == 1
    assert all(len(line["objects"]) == 1 for line in lines) and strided["fps"] == 5.0
    assert "ultralytics" not in sys.modules, "never in the studio's process"


@pytest.mark.timeout(BUILD_S + 600)
def test_interrupt_keeps_the_partial_video_and_jsonl_and_bad_options_are_refused(tracking):
    studio = tracking
    for options, field in (({"tracker": "deepsort"}, "options.tracker"), ({"gmc_method": "orb"}, "options"),
                           ({"track_buffer": 0}, "options.track_buffer"), ({"confidence": 1}, "options.confidence")):
        with pytest.raises(AtelierError) as err:  # at submit, before the queue
            studio.jobs.submit("vision_video", parse_video({"task": "track", "model": "red.pt",
                                                            "video": b64_video(rectangle_video(3)), "options": options}))
        assert err.value.field == field
    with pytest.raises(AtelierError) as err:
        studio.jobs.submit("vision_video", parse_video({"task": "track", "model": "missing.pt",
                                                        "video": b64_video(rectangle_video(3))}))
    assert err.value.field == "model"

    job = studio.jobs.submit("vision_video", parse_video({"task": "track", "model": "red.pt", "options": OPTIONS,
                                                          "video": b64_video(rectangle_video(200, step=0))}))
    wait_until(lambda: job.progress.step >= 5 or job.state.finished, TIMEOUT, "five frames tracked")
    studio.jobs.interrupt(job.id)
    wait_until(lambda: job.state.finished, TIMEOUT, "the interrupted job to end")
    assert job.state.value == "interrupted", job.error
    result = job.result
    assert result["interrupted"] is True and 5 <= result["frames_done"] < 200
    lines = (studio.paths.outputs / result["jsonl"]).read_text().splitlines()
    info = video.probe(video.VideoSource(path=studio.paths.outputs / result["output"]))
    assert len(lines) == result["frames_done"] == info.frames, "the partial video and JSONL: what was done"

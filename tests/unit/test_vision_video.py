"""Video in the Vision tab, the parts without YOLO: PyAV decoding (what the video holds, a time range, a
stride, frames sampled evenly), the H.264 MP4 the studio writes (playable: it decodes again), refusals that
name the field (not a video, a codec no decoder reads, an empty range, a path outside the data dir), and
a caption job over the demo PaliGemma with one description of the clip by the demo Gemma 3 (random
weights, real classes) through the job engine, interrupted or not."""
from __future__ import annotations

import json

import pytest

from modules.errors import AtelierError
from modules.models.demo_lm import DEMO_PALIGEMMA_NAME, DEMO_VLM_NAME
from modules.vision import video
from modules.vision.video_job import parse_video
from tests.video_support import b64_video, encode, rectangle_frames, rectangle_video

TIMEOUT = 300


def test_decode_a_range_with_a_stride_and_write_an_mp4_that_decodes_again(tmp_path):
    src = video.source_from(b64_video(rectangle_video(30, fps=10)), None, tmp_path)
    info = video.probe(src)
    assert (info.width, info.height, info.fps, info.frames, info.duration, info.codec) == (96, 64, 10.0, 30, 3.0, "h264")
    picked = list(video.frames(src, start=1.0, end=2.0, stride=3))
    assert [i for i, _t, _im in picked] == [10, 13, 16, 19]
    assert [round(t, 2) for _i, t, _im in picked] == [1.0, 1.3, 1.6, 1.9]
    assert [i for i, _t, _im in video.frames_at(src, video.sample_times(0.0, 3.0, 3))] == [5, 15, 25]
    first = next(video.frames(src))[2]
    assert first.size == (96, 64) and first.getpixel((12, 32))[0] > 180, "the red rectangle decodes"

    writer = video.VideoWriter(tmp_path / "out.mp4", 10.0, 95, 63)  # odd sides: yuv420p needs even ones
    for _i, _t, image in video.frames(src, stride=2):
        writer.write(image)
    assert writer.close() == tmp_path / "out.mp4" and not list(tmp_path.glob(".*.tmp"))
    again = video.probe(video.VideoSource(path=tmp_path / "out.mp4"))
    assert (again.codec, again.width, again.height, again.frames) == ("h264", 94, 62, 15)

    webm = video.source_from(encode(rectangle_frames(4), fmt="webm", codec="libvpx-vp9"), None, tmp_path)
    assert video.probe(webm).codec == "vp9"
    mov = video.source_from(encode(rectangle_frames(4), fmt="mov"), None, tmp_path)
    assert (video.probe(mov).codec, len(list(video.frames(mov)))) == ("h264", 4)


def test_bad_videos_and_ranges_are_refused_naming_the_field(tmp_path):
    (tmp_path / "notes.mp4").write_bytes(b"not a video at all" * 20)
    (tmp_path / "clip.mp4").write_bytes(rectangle_video(10))

    def refused(data) -> str:
        with pytest.raises(AtelierError) as err:
            req = parse_video(data)
            from modules.vision.video_job import opened
            from types import SimpleNamespace

            opened(SimpleNamespace(paths=SimpleNamespace(root=tmp_path)), req)
        return err.value.field

    ok = b64_video(rectangle_video(10))
    assert refused({"task": "track", "video": b64_video(b"hello" * 100)}) == "video"  # not a video
    assert refused({"task": "track", "video": "###"}) == "video"  # not base64
    assert refused({"task": "track"}) == "video"  # neither video nor path
    assert refused({"task": "track", "video": ok, "path": "clip.mp4"}) == "path"  # both
    assert refused({"task": "track", "path": "notes.mp4"}) == "path"  # a file that is no video
    assert refused({"task": "track", "path": "../clip.mp4"}) == "path"  # outside the data dir
    assert refused({"task": "track", "video": ok, "start": 5.0}) == "start"  # the clip is 1 s long
    assert refused({"task": "track", "video": ok, "start": 0.5, "end": 0.5}) == "end"
    assert refused({"task": "track", "video": ok, "stride": 0}) == "stride"
    assert refused({"task": "caption", "video": ok, "stride": 2}) == "stride"  # accepted would mean ignored
    assert refused({"task": "track", "video": ok, "describe_model": "x"}) == "describe_model"
    assert refused({"task": "dance", "video": ok}) == "task"
    # A stream FFmpeg knows but cannot decode: an MP4 whose H.264 payload was overwritten.
    broken = bytearray(rectangle_video(10))
    mdat = broken.find(b"mdat")
    broken[mdat + 8:] = bytes(len(broken) - mdat - 8)
    assert refused({"task": "track", "video": b64_video(bytes(broken))}) == "video"


def test_a_caption_job_captions_frames_evenly_and_gemma3_describes_the_clip(chat_studio):
    body = {"task": "caption", "video": b64_video(rectangle_video(20, fps=10)), "frames": 3, "max_new_tokens": 4,
            "model": DEMO_PALIGEMMA_NAME, "describe_model": DEMO_VLM_NAME}
    job = chat_studio.jobs.run("vision_video", parse_video(body), timeout=TIMEOUT)
    assert job.state.finished
    job.raise_for_error()
    result = job.result
    captions = result["summary"]["captions"]
    assert [c["frame"] for c in captions] == [4, 10, 17] and [c["time"] for c in captions] == [0.4, 1.0, 1.7]
    assert all(c["model"] == DEMO_PALIGEMMA_NAME and isinstance(c["caption"], str) for c in captions)
    assert isinstance(result["summary"]["description"], str) and result["output"] is None
    assert result["frames_done"] == 3 and result["interrupted"] is False and result["source"]["frames"] == 20
    lines = [json.loads(line) for line in (chat_studio.paths.outputs / result["jsonl"]).read_text().splitlines()]
    assert lines[:3] == captions and lines[3] == {"description": result["summary"]["description"],
                                                  "model": DEMO_VLM_NAME}
    pieces, _cursor, _done = job.read_stream(0)
    assert [p for p in pieces if "caption" in p] == captions, "the timeline streams as it grows"

    with pytest.raises(AtelierError) as err:  # a model that cannot caption, refused at submit
        chat_studio.jobs.run("vision_video", parse_video({**body, "model": DEMO_VLM_NAME}), timeout=TIMEOUT)
    assert err.value.field == "model"
    with pytest.raises(AtelierError) as err:  # and one that cannot describe images
        chat_studio.jobs.run("vision_video", parse_video({**body, "describe_model": DEMO_PALIGEMMA_NAME}))
    assert err.value.field == "describe_model"

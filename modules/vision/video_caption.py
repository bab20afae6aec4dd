"""Video captions: N frames sampled evenly over the range, a caption each (the vision engine's caption task:
PaliGemma), and — with a chat model that reads images (Gemma 3) — one description of the whole clip from
those frames as images, through the chat engine's template and generation (services.chat_answer). The
timeline (frame, time, caption) goes onto the job's stream as it grows and into one JSONL in
outputs/vision/<date>/ (the description is its last line); Interrupt keeps the captions done."""
from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING

from modules.vision import catalog
from modules.vision.engine import OUTPUT_SUBDIR, run_one
from modules.vision.video_job import model_for
from modules.vision.params import VisionOptions
from modules.vision.video import frames_at, sample_times

if TYPE_CHECKING:
    from modules.jobs import JobContext
    from modules.vision.engine import VisionServices
    from modules.vision.video import VideoInfo, VideoSource
    from modules.vision.video_params import VideoRequest

DESCRIBE_TOKENS = 256


def run_caption(ctx: "JobContext", services: "VisionServices", req: "VideoRequest", source: "VideoSource",
                info: "VideoInfo", start: float, end: float) -> dict:
    started = time.perf_counter()
    steps = req.frames + (1 if req.describe_model else 0)
    ctx.progress(0, steps, text=f"sampling {req.frames} frames")
    picked = frames_at(source, sample_times(start, end, req.frames))
    captions: list[dict] = []
    for i, (index, t, image) in enumerate(picked):
        if ctx.interrupted:
            break
        ctx.progress(i, steps, text=f"caption {i + 1} of {len(picked)} ({t:.2f} s)")
        one = VisionOptions(model=req.model, task="caption", language=req.language,
                            max_new_tokens=req.max_new_tokens, overlay=False)
        result = run_one(services, one, image, stop=lambda: ctx.interrupted)
        captions.append({"frame": index, "time": round(t, 4), "caption": result.text, "model": result.model})
        ctx.emit(captions[-1])
    description = None
    if req.describe_model and captions and not ctx.interrupted:
        ctx.progress(len(captions), steps, text=f"describing the clip with {req.describe_model}")
        description = describe(services, req, [image for _i, _t, image in picked[:len(captions)]],
                               stop=lambda: ctx.interrupted)
        ctx.emit({"description": description})
    lines = captions + ([{"description": description, "model": req.describe_model}] if description is not None
                        else [])
    jsonl = services.outputs.save_files(OUTPUT_SUBDIR, "captions", {".jsonl": "".join(
        json.dumps(line, ensure_ascii=False) + "\n" for line in lines).encode("utf-8")})[".jsonl"]
    ctx.progress(steps if not ctx.interrupted else len(captions), steps, text=f"{len(captions)} captions")
    return {"output": None, "jsonl": jsonl.relative_to(services.outputs.root).as_posix(),
            "folder": str(jsonl.parent), "frames_done": len(captions), "frames_expected": req.frames,
            "interrupted": ctx.interrupted, "seconds": round(time.perf_counter() - started, 3),
            "summary": {"captions": captions, "description": description}}


def describe(services: "VisionServices", req: "VideoRequest", images: list, stop) -> str:
    """One chat turn holding every sampled frame as an image, then the question: the chat engine answers."""
    entry = model_for(services, "question", req.describe_model, "describe_model")
    content = [{"type": "image", "image": image.convert("RGB")} for image in images]
    content.append({"type": "text", "text": req.describe_prompt})
    with services.models.use(catalog.VLM_KIND, entry.name) as lm:
        return services.chat_answer(lm, [{"role": "user", "content": content}],
                                    req.max_new_tokens or DESCRIBE_TOKENS, stop)

"""The Vision tab's Video section: a video (upload, or a path under the data dir), task track (an extension's
tracker, YOLO's: ByteTrack / BoT-SORT settings) or caption (N frames, PaliGemma; optionally one description of
the clip by a Gemma 3), a time range and a stride; Run (the public /vision_video) follows the "vision_video"
job's progress per frame, Stop keeps what is done; out come the tracked video, the table of tracks, counts per
class over time (a plot) or the captions' timeline, and where the files are."""
from __future__ import annotations

from pathlib import Path

from modules.errors import AtelierError
from webui.ui.gradio_api import endpoint
from webui.ui.progress import follow, progress_html

TRACK_COLUMNS = ["Track", "Class", "First seen (s)", "Last seen (s)", "Frames"]
CAPTION_COLUMNS = ["Time (s)", "Frame", "Caption"]
TRACKERS = ("bytetrack", "botsort")
TRACK_VIEWS, CAPTION_VIEWS = ("output", "tracks", "counts"), ("captions", "description")  # shown per task


def video_request(video, path, task, model, tracker, conf, iou, imgsz, track_buffer, match_thresh, stride, start,
                  end, max_frames, frames, describe_model, language) -> dict:
    """The Video section's fields → a VideoRequest body (only the chosen task's fields: the rest would be refused)."""
    body: dict = {"task": task, "model": model or None, "start": float(start or 0)}
    if end:
        body["end"] = float(end)
    if path and str(path).strip():
        body["path"] = str(path).strip()
    elif video:
        body["video"] = Path(video).read_bytes()
    if task == "track":
        body |= {"stride": int(stride or 1), "max_frames": int(max_frames or 900),
                 "options": {"tracker": tracker or "bytetrack", "conf": float(conf), "iou": float(iou),
                             "imgsz": int(imgsz or 640), "track_buffer": int(track_buffer or 30),
                             "match_thresh": float(match_thresh)}}
    else:
        body |= {"frames": int(frames or 8), "describe_model": describe_model or None, "language": language or "en"}
    return body


def build_video(studio, task_rows) -> dict:
    import gradio as gr

    from modules.vision.video_job import parse_video

    c: dict = {}
    with gr.Accordion("Video: track objects or caption frames", open=False, elem_id="vision_video_acc"):
        with gr.Row(equal_height=False):
            with gr.Column(scale=4):
                c["video"] = gr.Video(label="Video (MP4, WebM, MOV)", sources=["upload"], height=280,
                                      elem_id="vision_video_input")
                c["path"] = gr.Textbox(label="…or a video file under the data dir", elem_id="vision_video_path")
                with gr.Row():
                    c["task"] = gr.Radio(["track", "caption"], value="track", label="Task", elem_id="vision_video_task")
                    c["model"] = gr.Dropdown([], label="Model", allow_custom_value=True, elem_id="vision_video_model")
                with gr.Row():
                    c["start"] = gr.Number(0, label="Start (s)", minimum=0, elem_id="vision_video_start")
                    c["end"] = gr.Number(0, label="End (s, 0: the end)", minimum=0, elem_id="vision_video_end")
                with gr.Group(visible=True, elem_id="vision_video_track") as track_group:
                    with gr.Row():
                        c["tracker"] = gr.Dropdown(list(TRACKERS), value="bytetrack", label="Tracker",
                                                   elem_id="vision_video_tracker")
                        c["stride"] = gr.Number(1, label="Every n-th frame", precision=0, minimum=1,
                                                elem_id="vision_video_stride")
                        c["max_frames"] = gr.Number(900, label="At most frames", precision=0, minimum=1,
                                                    elem_id="vision_video_max_frames")
                    with gr.Row():
                        c["conf"] = gr.Slider(0, 1, 0.1, step=0.01, label="Confidence", elem_id="vision_video_conf")
                        c["iou"] = gr.Slider(0, 1, 0.7, step=0.01, label="NMS IoU", elem_id="vision_video_iou")
                        c["match_thresh"] = gr.Slider(0, 1, 0.8, step=0.01, label="Match threshold",
                                                      elem_id="vision_video_match")
                    with gr.Row():
                        c["imgsz"] = gr.Number(640, label="Image size", precision=0, minimum=32,
                                               elem_id="vision_video_imgsz")
                        c["track_buffer"] = gr.Number(30, label="Keep lost tracks (frames)", precision=0, minimum=1,
                                                      elem_id="vision_video_buffer")
                with gr.Group(visible=False, elem_id="vision_video_caption") as caption_group:
                    with gr.Row():
                        c["frames"] = gr.Number(8, label="Frames sampled", precision=0, minimum=1, maximum=64,
                                                elem_id="vision_video_frames")
                        c["language"] = gr.Textbox("en", label="Language", elem_id="vision_video_language")
                    c["describe_model"] = gr.Dropdown([], label="Describe the clip with (a Gemma 3; empty: no)",
                                                      allow_custom_value=True, elem_id="vision_video_describe")
                with gr.Row():
                    c["run"] = gr.Button("Run on the video", variant="primary", elem_id="vision_video_run")
                    c["stop"] = gr.Button("Stop (keeps what is done)", elem_id="vision_video_stop")
                c["progress"] = gr.HTML(progress_html(None), elem_id="vision_video_progress")
            with gr.Column(scale=5):
                c["output"] = gr.Video(label="Tracked video", interactive=False, height=280,
                                       elem_id="vision_video_output")
                c["summary"] = gr.Markdown("", elem_id="vision_video_summary")
                c["tracks"] = gr.Dataframe(headers=TRACK_COLUMNS, value=[], interactive=False,
                                           elem_id="vision_video_tracks")
                c["counts"] = gr.LinePlot(x="time", y="count", color="class", title="Objects per class over time",
                                          x_title="time (s)", y_title="count", elem_id="vision_video_counts")
                c["captions"] = gr.Dataframe(headers=CAPTION_COLUMNS, value=[], interactive=False, visible=False,
                                             elem_id="vision_video_captions")
                c["description"] = gr.Markdown("", visible=False, elem_id="vision_video_description")
    c["job_id"] = gr.State(None)  # this browser's running video job, for Stop

    def models_for(task):
        rows = task_rows(studio)
        name = "yolo-track" if task == "track" else "caption"
        models = next((r["models"] for r in rows if r["name"] == name), [])
        describers = next((r["models"] for r in rows if r["name"] == "question"), [])
        tracking = task == "track"
        return (gr.Dropdown(choices=models, value=models[0] if models else None),
                gr.Dropdown(choices=[""] + describers, value=""),
                gr.Group(visible=tracking), gr.Group(visible=not tracking),
                *(gr.update(visible=tracking) for _ in TRACK_VIEWS),
                *(gr.update(visible=not tracking) for _ in CAPTION_VIEWS))

    task_outputs = [c["model"], c["describe_model"], track_group, caption_group, *(c[k] for k in TRACK_VIEWS),
                    *(c[k] for k in CAPTION_VIEWS)]
    c["task"].change(models_for, [c["task"]], task_outputs, queue=False, api_visibility="private")

    inputs = [c["video"], c["path"], c["task"], c["model"], c["tracker"], c["conf"], c["iou"], c["imgsz"],
              c["track_buffer"], c["match_thresh"], c["stride"], c["start"], c["end"], c["max_frames"], c["frames"],
              c["describe_model"], c["language"]]
    outputs = [c["progress"], c["output"], c["summary"], c["tracks"], c["counts"], c["captions"], c["description"],
               c["job_id"]]

    def run(*fields):
        if not studio.ready.is_set():
            raise gr.Error("The studio is still starting; try again in a moment.")
        if not fields[0] and not (fields[1] or "").strip():
            raise gr.Error("Upload a video or give a path under the data dir", title="No video")
        try:
            job = studio.submit("vision_video", parse_video(video_request(*fields)))
        except AtelierError as exc:
            raise gr.Error(str(exc), title="Video task not run") from None
        skip = gr.skip()
        for snap in follow(job, studio.settings.get().ui_updates_per_second):
            yield progress_html(snap), skip, skip, skip, skip, skip, skip, job.id
        try:
            job.raise_for_error()
        except AtelierError as exc:
            raise gr.Error(str(exc), title="Video task failed") from None
        yield (progress_html(None), *result_views(studio, job.result), None)

    c["run"].click(endpoint(run, "vision_video"), inputs, outputs, concurrency_id="vision", api_name="vision_video")
    def stop(job_id):
        if job_id:
            studio.jobs.interrupt(job_id)

    c["stop"].click(stop, [c["job_id"]], [], queue=False, api_visibility="private")
    c["_on_show_video"] = (models_for, [c["task"]], task_outputs)
    return c


def result_views(studio, result: dict) -> tuple:
    """The job's result → (video path, summary, tracks rows, counts frame, captions rows, description)."""
    import pandas as pd

    summary = result["summary"]
    video = str(studio.paths.outputs / result["output"]) if result.get("output") else None
    done = f"{result['frames_done']} frames in {result['seconds']:.1f} s" + (" (stopped: what was done is kept)"
                                                                           if result["interrupted"] else "")
    files = f"`{result['jsonl']}`" + (f", `{result['output']}`" if result.get("output") else "")
    tracks = [[t["id"], t["class"], t["first_time"], t["last_time"], t["frames"]] for t in summary.get("tracks", [])]
    counts = pd.DataFrame(summary.get("counts", []), columns=["frame", "time", "class", "count"])
    captions = [[c["time"], c["frame"], c["caption"]] for c in summary.get("captions", [])]
    description = f"**The clip:** {summary['description']}" if summary.get("description") else ""
    return video, f"{done}; files {files}", tracks, counts, captions, description

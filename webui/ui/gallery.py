"""Gallery tab: outputs/ by date, newest first, paged.

Listing reads directory entries only (names, mtimes) — no image is opened to list it —
so folders with thousands of images stay fast. Infotext is read on selection, from the
PNG header. Paths from the browser are resolved through studio.paths.resolve_output.
"""
# (no `from __future__ import annotations`: Gradio reads the gr.SelectData hint at wiring time)

import math
import os
import re
from pathlib import Path

from modules.errors import AtelierError, InvalidRequest
from modules.extensions.tabs import TabSpec

PAGE_SIZE = 36
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def _visible(name: str) -> bool:
    return not name.startswith(".") and not name.endswith(".tmp")


def list_dates(outputs: Path) -> list[str]:
    """Every YYYY-MM-DD folder under outputs/<kind>/, newest first."""
    dates: set[str] = set()
    if not outputs.is_dir():
        return []
    with os.scandir(outputs) as kinds:
        for kind in kinds:
            if not kind.is_dir() or not _visible(kind.name):
                continue
            with os.scandir(kind.path) as days:
                dates.update(d.name for d in days if d.is_dir() and _DATE.match(d.name))
    return sorted(dates, reverse=True)


def list_images(outputs: Path, date: str) -> list[str]:
    """Images of one day (all kinds), newest first, as paths relative to outputs/."""
    found: list[tuple[float, str]] = []
    if not date or not _DATE.match(date) or not outputs.is_dir():
        return []
    with os.scandir(outputs) as kinds:
        for kind in kinds:
            day = Path(kind.path) / date
            if not kind.is_dir() or not _visible(kind.name) or not day.is_dir():
                continue
            with os.scandir(day) as entries:
                for e in entries:
                    if _visible(e.name) and e.name.lower().endswith(IMAGE_SUFFIXES) and e.is_file():
                        found.append((e.stat().st_mtime, f"{kind.name}/{date}/{e.name}"))
    found.sort(key=lambda t: (t[0], t[1]), reverse=True)
    return [rel for _, rel in found]


def page_of(items: list[str], page: int, size: int = PAGE_SIZE) -> tuple[list[str], int, int]:
    pages = max(1, math.ceil(len(items) / size))
    page = min(max(1, int(page or 1)), pages)
    return items[(page - 1) * size: page * size], page, pages


def resolve_image(studio, rel: str) -> Path:
    path = studio.paths.resolve_output(rel)
    if not path.is_file() or not _visible(path.name) or not path.name.lower().endswith(IMAGE_SUFFIXES):
        raise InvalidRequest(f"{rel!r} is not an image in outputs/", "output path")
    return path


def build(studio) -> dict:
    import gradio as gr

    from webui.ui.pnginfo import read_parameters

    outputs = studio.paths.outputs
    c: dict = {}
    with gr.Row(equal_height=False, elem_id="gallery_nav"):
        c["date"] = gr.Dropdown(choices=[], label="Date", elem_id="gallery_date", scale=3)
        c["page"] = gr.Number(1, label="Page", precision=0, minimum=1, elem_id="gallery_page", scale=1, min_width=90)
        with gr.Column(scale=2, min_width=240):
            with gr.Row():
                c["prev"] = gr.Button("◀ Newer", elem_id="gallery_prev", size="sm", min_width=70)
                c["next"] = gr.Button("Older ▶", elem_id="gallery_next", size="sm", min_width=70)
                c["refresh"] = gr.Button("🔄 Refresh", elem_id="gallery_refresh", size="sm", min_width=70)
    c["status"] = gr.Markdown("", elem_id="gallery_status")
    with gr.Row(equal_height=False):
        with gr.Column(scale=3):
            c["gallery"] = gr.Gallery(label="Images", columns=6, height=560, elem_id="gallery_images",
                                      object_fit="cover", allow_preview=True, interactive=False)
        with gr.Column(scale=2):
            c["path"] = gr.Textbox(label="File", interactive=False, elem_id="gallery_path")
            c["info"] = gr.Textbox(label="Generation parameters", lines=8, interactive=False, elem_id="gallery_info",
                                   buttons=["copy"])
            with gr.Row():
                c["send_txt2img"] = gr.Button("Send to txt2img", elem_id="gallery_send_txt2img", size="sm")
                c["send_img2img"] = gr.Button("Send to img2img", elem_id="gallery_send_img2img", size="sm")
                c["send_inpaint"] = gr.Button("Send to inpaint", elem_id="gallery_send_inpaint", size="sm")
            c["delete"] = gr.Button("🗑️ Delete", variant="stop", elem_id="gallery_delete", size="sm")
    c["items"] = gr.State([])  # relative paths shown on this page (per user)

    def show(date, page):
        dates = list_dates(outputs)
        if date not in dates:
            date = dates[0] if dates else None
        items, page, pages = page_of(list_images(outputs, date) if date else [], page)
        total = len(list_images(outputs, date)) if date else 0
        status = f"{total} image(s) on {date} · page {page} of {pages}" if date else "No images in outputs/ yet."
        paths = [str(outputs / rel) for rel in items]
        return gr.Dropdown(choices=dates, value=date), page, paths, items, status, "", ""

    page_outputs = [c["date"], c["page"], c["gallery"], c["items"], c["status"], c["path"], c["info"]]
    c["refresh"].click(show, [c["date"], c["page"]], page_outputs, queue=False)
    c["date"].input(lambda d: show(d, 1), [c["date"]], page_outputs, queue=False)
    c["page"].submit(show, [c["date"], c["page"]], page_outputs, queue=False)
    c["prev"].click(lambda d, p: show(d, (p or 1) - 1), [c["date"], c["page"]], page_outputs, queue=False)
    c["next"].click(lambda d, p: show(d, (p or 1) + 1), [c["date"], c["page"]], page_outputs, queue=False)
    # build_ui refreshes the listing whenever this tab is opened.
    c["_on_show"] = (show, [c["date"], c["page"]], page_outputs)

    def select(items, evt: gr.SelectData):
        index = evt.index if isinstance(evt.index, int) else -1
        if not 0 <= index < len(items):
            return "", ""
        try:
            path = resolve_image(studio, items[index])
        except AtelierError as exc:
            raise gr.Error(str(exc)) from None
        text, _ = read_parameters(str(path))
        return items[index], text

    c["gallery"].select(select, [c["items"]], [c["path"], c["info"]], queue=False)

    def delete(rel, date, page):
        if not rel:
            gr.Warning("Select an image first")
            return tuple(gr.skip() for _ in page_outputs)
        try:
            resolve_image(studio, rel).unlink()
        except AtelierError as exc:
            raise gr.Error(str(exc)) from None
        except FileNotFoundError:
            pass
        gr.Info(f"Deleted {rel}")
        return show(date, page)

    c["delete"].click(delete, [c["path"], c["date"], c["page"]], page_outputs, queue=False)
    return c


def register(studio) -> None:
    studio.tabs.add(TabSpec("Gallery", build, order=50, elem_id="tab_gallery"))

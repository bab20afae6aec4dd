"""Labelled image grids (the X/Y/Z plot's): cells in rows and columns, legends above and to the left.

Like A1111's image_grid + draw_grid_annotations: a cell that was never made (an interrupted plot) is a
black square, labels are wrapped to their column and centred, and `margin` pixels separate the cells.
"""
from __future__ import annotations

import math

BACKGROUND = (255, 255, 255)
INK = (0, 0, 0)


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)  # Pillow's own scalable font
    except (TypeError, OSError):  # Pillow built without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _wrap(draw, text: str, font, width: int) -> list[str]:
    lines: list[str] = []
    for paragraph in text.split("\n"):
        line = ""
        for word in paragraph.split(" "):
            trial = f"{line} {word}".strip()
            if line and draw.textlength(trial, font=font) > width:
                lines.append(line)
                line = word
            else:
                line = trial
        lines.append(line)
    return lines


def labelled_grid(rows: list[list], col_labels: list[str], row_labels: list[str], margin: int = 0):
    """`rows`: images (PIL or None) row by row; labels: one per column / row ("" for none)."""
    from PIL import Image, ImageDraw

    cells = [im for row in rows for im in row if im is not None]
    if not cells:
        raise ValueError("no image to put in the grid")
    w, h = max(im.width for im in cells), max(im.height for im in cells)
    n_rows, n_cols = len(rows), max(len(r) for r in rows)
    size = max(12, (w + h) // 25)  # A1111's font size for its legends
    font, line_h = _font(size), size + size // 2
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    top_lines = [_wrap(probe, t, font, w) for t in col_labels] if any(col_labels) else []
    top = (max(len(lines) for lines in top_lines) * line_h + size // 2) if top_lines else 0
    left_width = min(max(w, 1), max((probe.textlength(t, font=font) for t in row_labels), default=0) + size)
    left = int(left_width) if any(row_labels) else 0
    left_lines = [_wrap(probe, t, font, max(1, left - size // 2)) for t in row_labels] if left else []
    width = left + n_cols * w + (n_cols - 1) * margin
    height = top + n_rows * h + (n_rows - 1) * margin
    grid = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(grid)
    for r, row in enumerate(rows):
        for c in range(n_cols):
            im = row[c] if c < len(row) else None
            x, y = left + c * (w + margin), top + r * (h + margin)
            grid.paste(im.convert("RGB") if im is not None else Image.new("RGB", (w, h)), (x, y))
    for c, lines in enumerate(top_lines):
        cx = left + c * (w + margin) + w / 2
        y = (top - len(lines) * line_h) / 2
        for i, line in enumerate(lines):
            draw.text((cx, y + i * line_h + line_h / 2), line, fill=INK, font=font, anchor="mm")
    for r, lines in enumerate(left_lines):
        cy = top + r * (h + margin) + h / 2 - (len(lines) - 1) * line_h / 2
        for i, line in enumerate(lines):
            draw.text((left / 2, cy + i * line_h), line, fill=INK, font=font, anchor="mm")
    return grid


def plain_grid(images: list, rows: int | None = None):
    """Images in a near-square grid (no labels)."""
    cols = math.ceil(len(images) / rows) if rows else math.ceil(math.sqrt(len(images)))
    rows_of = [images[i:i + cols] for i in range(0, len(images), cols)]
    return labelled_grid(rows_of, [""] * cols, [""] * len(rows_of))

"""Prompt styles: AUTOMATIC1111's styles.csv (name, prompt, negative_prompt) in the data dir.

A style's text joins the prompt as A1111 joins it: where it holds `{prompt}` the prompt goes
there, otherwise it is appended after ", ". A request's `styles` are applied in order when its
job starts; the infotext then holds the prompt with them (A1111's `all_prompts`), and reading an
infotext back takes known styles out of its prompt again ("Styles array", A1111's "Apply if any").

The file is A1111's format (UTF-8 with BOM, a header row; rows whose name starts with "#" are
comments; the old "text" column is read as the prompt), so a styles.csv copied from A1111 works
and one written here works there. It is read again when it changes on disk and written whole and
atomically; a file that cannot be read is never overwritten.
"""
from __future__ import annotations

import csv
import io
import logging
import re
import threading
from dataclasses import dataclass
from pathlib import Path

from modules import atomic
from modules.errors import InvalidRequest, NotFound

log = logging.getLogger("atelier")
FIELDS = ("name", "prompt", "negative_prompt")
MAX_NAME = 200
_SPACES = re.compile("  +")


@dataclass(frozen=True)
class PromptStyle:
    name: str
    prompt: str = ""
    negative_prompt: str = ""


def merge(style_text: str, prompt: str) -> str:
    if "{prompt}" in style_text:
        return style_text.replace("{prompt}", prompt)
    return ", ".join(part for part in (prompt.strip(), style_text.strip()) if part)


def apply(prompt: str, style_texts: list[str]) -> str:
    for text in style_texts:
        prompt = merge(text, prompt)
    return prompt


def _take_out(style_text: str, prompt: str) -> tuple[bool, str]:
    """The prompt before `style_text` was merged into it, if it was (A1111's extract_style_text_from_prompt)."""
    prompt = _SPACES.sub(" ", prompt.strip())
    style_text = _SPACES.sub(" ", style_text.strip())
    if "{prompt}" in style_text:
        left, right = style_text.split("{prompt}", 1)
        if prompt.startswith(left) and prompt.endswith(right) and len(prompt) >= len(left) + len(right):
            return True, prompt[len(left):len(prompt) - len(right)]
        return False, prompt
    if prompt.endswith(style_text):
        rest = prompt[:len(prompt) - len(style_text)]
        return True, rest[:-2] if rest.endswith(", ") else rest
    return False, prompt


@dataclass(frozen=True)
class StyledPrompts:
    """The texts a job generates from: the request's prompts with its styles applied."""

    prompt: str
    negative_prompt: str
    hr_prompt: str  # the hires pass's ("" in the request: the same as the prompt)
    hr_negative_prompt: str

    @classmethod
    def of(cls, req, styles: list[PromptStyle]) -> "StyledPrompts":
        positive = [s.prompt for s in styles]
        negative = [s.negative_prompt for s in styles]
        hr = getattr(req, "hr_prompt", "") or req.prompt
        hr_negative = getattr(req, "hr_negative_prompt", "") or req.negative_prompt
        return cls(apply(req.prompt, positive), apply(req.negative_prompt, negative),
                   apply(hr, positive), apply(hr_negative, negative))


class StyleStore:
    """The styles of one styles.csv; safe to use from several threads."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._lock = threading.Lock()
        self._styles: dict[str, PromptStyle] = {}
        self._stamp: tuple | None = None
        self.error: str | None = None  # why the file could not be read (then it is never written)

    # -- reading --------------------------------------------------------
    def _fresh(self) -> dict[str, PromptStyle]:
        try:
            st = self.path.stat()
            stamp = (st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            self._styles, self._stamp, self.error = {}, None, None
            return self._styles
        if stamp != self._stamp:
            try:
                self._styles, self.error = _parse(self.path.read_bytes()), None
            except (OSError, UnicodeDecodeError, csv.Error, ValueError) as exc:
                self._styles, self.error = {}, f"{self.path.name} could not be read ({exc}); fix or move it"
                log.warning("%s", self.error)
            self._stamp = stamp
        return self._styles

    def list(self) -> list[PromptStyle]:
        with self._lock:
            return list(self._fresh().values())

    def names(self) -> list[str]:
        return [s.name for s in self.list()]

    def get(self, name: str) -> PromptStyle:
        with self._lock:
            styles = self._fresh()
        if name not in styles:
            raise NotFound(f"no style named {name!r}", "styles")
        return styles[name]

    def resolve(self, names: list[str]) -> list[PromptStyle]:
        """The request's styles, in order; an unknown name is refused (A1111 skips it silently)."""
        with self._lock:
            styles = self._fresh()
            error = self.error
        missing = [n for n in names if n not in styles]
        if missing:
            known = ", ".join(styles) or "none — save one from the UI, or put a styles.csv in the data folder"
            extra = f" ({error})" if error else ""
            raise InvalidRequest(f"unknown style {missing[0]!r}{extra}; available: {known}"[:600], "styles")
        return [styles[n] for n in names]

    def take_out(self, prompt: str, negative: str) -> tuple[list[str], str, str]:
        """The styles found in an infotext's prompts, and the prompts without them (A1111's order)."""
        found: list[str] = []
        candidates = [s for s in self.list() if s.prompt or s.negative_prompt]
        while True:
            for style in candidates:
                ok_pos, pos = _take_out(style.prompt, prompt)
                ok_neg, neg = _take_out(style.negative_prompt, negative) if ok_pos else (False, negative)
                if ok_pos and ok_neg:
                    found.append(style.name)
                    prompt, negative = pos, neg
                    candidates.remove(style)
                    break
            else:
                return list(reversed(found)), prompt, negative

    # -- writing --------------------------------------------------------
    def save(self, style: PromptStyle) -> None:
        """Add a style, or replace the one of that name."""
        name = style.name.strip() if isinstance(style.name, str) else ""
        if not name:
            raise InvalidRequest("give the style a name", "name")
        if len(name) > MAX_NAME or name.startswith("#") or "\n" in name or "\r" in name:
            raise InvalidRequest(f"a style name is one line of at most {MAX_NAME} characters, not starting with #",
                                 "name")
        with self._lock:
            styles = dict(self._fresh())
            self._refuse_if_unreadable()
            styles[name] = PromptStyle(name, style.prompt or "", style.negative_prompt or "")
            self._write(styles)

    def delete(self, name: str) -> None:
        with self._lock:
            styles = dict(self._fresh())
            self._refuse_if_unreadable()
            if name not in styles:
                raise NotFound(f"no style named {name!r}", "name")
            del styles[name]
            self._write(styles)

    def _refuse_if_unreadable(self) -> None:
        if self.error:
            raise InvalidRequest(self.error, "styles")

    def _write(self, styles: dict[str, PromptStyle]) -> None:
        buf = io.StringIO(newline="")
        writer = csv.DictWriter(buf, fieldnames=FIELDS, lineterminator="\r\n")
        writer.writeheader()
        for s in styles.values():
            writer.writerow({"name": s.name, "prompt": s.prompt, "negative_prompt": s.negative_prompt})
        atomic.write_bytes(self.path, buf.getvalue().encode("utf-8-sig"))
        self._styles, self._stamp = styles, None  # read back (and stamped) on the next access


def _parse(raw: bytes) -> dict[str, PromptStyle]:
    text = raw.decode("utf-8-sig")
    reader = csv.DictReader(io.StringIO(text, newline=""), skipinitialspace=True)
    if reader.fieldnames is None:
        return {}
    if "name" not in reader.fieldnames:
        raise ValueError("its first row must name the columns: name,prompt,negative_prompt")
    styles: dict[str, PromptStyle] = {}
    for row in reader:
        name = (row.get("name") or "").strip()
        if not name or name.startswith("#"):
            continue
        prompt = row.get("prompt") if "prompt" in row else row.get("text")
        styles[name] = PromptStyle(name, prompt or "", row.get("negative_prompt") or "")
    return styles

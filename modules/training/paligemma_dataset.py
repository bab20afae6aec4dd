"""A PaliGemma fine-tuning dataset: JSONL lines of {"image", "prefix", "suffix"}, big_vision's format.

`image` is a path relative to the JSONL file's folder (it must stay inside the data dir), `prefix`
the task prompt ("caption en", "detect dog", "" for none), `suffix` the answer to learn (a caption,
or "<loc…><loc…><loc…><loc…> dog" for a box). A line with a missing or unreadable image, no prefix
or no suffix, or a prefix that leaves no room for the answer within the cutoff, is listed and
skipped. Read on the server (validation, step math) and in the training process; no torch here.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from modules.errors import InvalidRequest
from modules.training.lm_dataset import dataset_files, jsonl_records


@dataclass(frozen=True)
class PaliGemmaRow:
    image: Path  # resolved, inside the data dir
    prefix: str
    suffix: str


@dataclass
class PaliGemmaExamples:
    rows: list[PaliGemmaRow] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # ("file.jsonl:line", why)
    files: list[str] = field(default_factory=list)

    def digest(self) -> str:
        """Changes when a line or an image file changes (a resume refuses a changed dataset)."""
        h = hashlib.sha256()
        for row in self.rows:
            st = row.image.stat()
            h.update(f"{row.image}\0{row.prefix}\0{row.suffix}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        return h.hexdigest()[:16]


def prompt_tokens(tokenizer, prefix: str, image_tokens: int) -> int:
    """Tokens before the answer: the image's, <bos>, the prefix and the "\\n" PaliGemmaProcessor adds."""
    return image_tokens + 1 + len(tokenizer(prefix + "\n", add_special_tokens=False).input_ids)


def read_rows(path: Path, data_root: Path, tokenizer, image_tokens: int, cutoff: int) -> PaliGemmaExamples:
    """Every usable line of the .jsonl file (or the folder's .jsonl files), in file and line order."""
    from PIL import Image

    out = PaliGemmaExamples()
    root = data_root.resolve()
    for file in dataset_files(path):
        if file.suffix.lower() != ".jsonl":
            continue
        out.files.append(file.name)
        for where, record in jsonl_records(file, out.skipped):
            why = _missing(record)
            if why:
                out.skipped.append((where, why))
                continue
            image = (file.parent / record["image"]).resolve()
            if image != root and root not in image.parents:
                out.skipped.append((where, f"image {record['image']!r} is outside the data dir"))
                continue
            if not image.is_file():
                out.skipped.append((where, f"no image file {record['image']!r}"))
                continue
            try:
                with Image.open(image) as im:
                    im.verify()
            except Exception as exc:  # PIL raises many types for a file that is not an image it can read
                out.skipped.append((where, f"image {record['image']!r} cannot be read ({type(exc).__name__})"))
                continue
            if prompt_tokens(tokenizer, record["prefix"], image_tokens) >= cutoff:
                out.skipped.append((where, f"the image and the prefix fill cutoff_len ({cutoff} tokens): no room "
                                           "for the suffix"))
                continue
            out.rows.append(PaliGemmaRow(image, record["prefix"], record["suffix"]))
    return out


def _missing(record) -> str | None:
    if not isinstance(record, dict):
        return "not a JSON object"
    if not isinstance(record.get("image"), str) or not record["image"].strip():
        return 'no "image" (a path relative to the .jsonl file\'s folder)'
    if not isinstance(record.get("prefix"), str):
        return 'no "prefix" (the task prompt, e.g. "caption en"; "" for none)'
    if not isinstance(record.get("suffix"), str) or not record["suffix"].strip():
        return 'no "suffix" (the answer to learn)'
    return None


def check_rows(examples: PaliGemmaExamples, name: str) -> None:
    if not examples.rows:
        shown = "; ".join(f"{w}: {why}" for w, why in examples.skipped[:5])
        found = "" if examples.files else " (no .jsonl file found)"
        raise InvalidRequest(f"{name!r} holds no usable line{found}: a .jsonl of "
                             f'{{"image": "images/1.png", "prefix": "caption en", "suffix": "…"}}'
                             f"{' — ' + shown if shown else ''}", "dataset")

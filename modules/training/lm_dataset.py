"""An LLM training dataset: JSONL of chat `messages` (OpenAI shape; ShareGPT's `conversations` too)
rendered with the model's own chat template and trained on the assistant turns only, or raw text
(JSONL `{"text"}` or .txt files) cut into chunks at the cutoff length. Optional packing joins
examples into full-length rows. Read on the server (validation, step math) and in the training
process; no torch here (a tokenizer only).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from modules.errors import InvalidRequest

IGNORE = -100  # labels the loss skips (prompt, system and user turns, padding)
SUFFIXES = (".jsonl", ".txt")
_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "model": "assistant",
          "system": "system"}


@dataclass
class LmExamples:
    rows: list[tuple[list[int], list[int]]] = field(default_factory=list)  # (input ids, labels)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    format: str = "chat"
    files: list[str] = field(default_factory=list)


def dataset_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    return sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in SUFFIXES
                  and not p.name.startswith("."))


def _messages(record: dict) -> list[dict] | None:
    raw = record.get("messages")
    if raw is None and isinstance(record.get("conversations"), list):  # ShareGPT
        raw = [{"role": m.get("from"), "content": m.get("value")} for m in record["conversations"]
               if isinstance(m, dict)]
    if not isinstance(raw, list):
        return None
    out = []
    for m in raw:
        role = _ROLES.get(str(m.get("role", "")).lower()) if isinstance(m, dict) else None
        if role is None or not isinstance(m.get("content"), str):
            return None
        out.append({"role": role, "content": m["content"]})
    if out and out[0]["role"] == "system":  # folded into the first user turn, for templates without a system role
        system = out.pop(0)["content"]
        if out and out[0]["role"] == "user":
            out[0] = {"role": "user", "content": f"{system}\n\n{out[0]['content']}"}
    return out


def _render(tokenizer, messages: list[dict], prompt: bool) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=prompt)


def chat_row(tokenizer, messages: list[dict]) -> tuple[list[int], list[int]]:
    """Input ids and labels of one conversation: each assistant turn's tokens are labelled, the rest not.

    Rendered turn by turn (the prompt before a reply, then the reply), so any chat template works
    without `{% generation %}` markers; a template that does not extend its own output is refused."""
    ids, labels, done = [], [], ""
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        prefix, full = _render(tokenizer, messages[:i], True), _render(tokenizer, messages[:i + 1], False)
        if not prefix.startswith(done) or not full.startswith(prefix):
            raise ValueError("the model's chat template does not render a conversation turn by turn")
        prompt = tokenizer(prefix[len(done):], add_special_tokens=False).input_ids
        answer = tokenizer(full[len(prefix):], add_special_tokens=False).input_ids
        ids += prompt + answer
        labels += [IGNORE] * len(prompt) + answer
        done = full
    return ids, labels


def jsonl_records(file: Path, skipped: list[tuple[str, str]]) -> Iterator[tuple[str, Any]]:
    """("file.jsonl:line", the parsed value) of each non-blank line; a line that is not JSON goes to `skipped`."""
    for n, line in enumerate(file.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        where = f"{file.name}:{n}"
        try:
            yield where, json.loads(line)
        except ValueError:
            skipped.append((where, "not JSON"))


def read_examples(path: Path, tokenizer, fmt: str, cutoff: int, packing: bool) -> LmExamples:
    """Every example of the dataset as (ids, labels) rows of at most `cutoff` tokens."""
    out = LmExamples(format=fmt)
    texts: list[str] = []
    for file in dataset_files(path):
        out.files.append(file.name)
        if file.suffix.lower() == ".txt":
            texts.append(file.read_text(encoding="utf-8", errors="replace"))
            continue
        for where, record in jsonl_records(file, out.skipped):
            if not isinstance(record, dict):
                out.skipped.append((where, "not a JSON object"))
                continue
            messages = _messages(record)
            if fmt != "text" and messages is not None:
                out.format = "chat"
                try:
                    ids, labels = chat_row(tokenizer, messages)
                except Exception as exc:  # the template's own refusal (roles out of order, …)
                    out.skipped.append((where, f"the chat template refused it: {str(exc)[:120]}"))
                    continue
                if not any(label != IGNORE for label in labels[:cutoff]):
                    out.skipped.append((where, "no assistant turn within the cutoff length"))
                    continue
                out.rows.append((ids[:cutoff], labels[:cutoff]))
            elif isinstance(record.get("text"), str):
                texts.append(record["text"])
            else:
                out.skipped.append((where, 'neither "messages" nor "text"'))
    if texts:
        out.format = "text" if not out.rows else out.format
        eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
        stream = [t for text in texts for t in tokenizer(text, add_special_tokens=False).input_ids + eos]
        for start in range(0, len(stream), cutoff):  # raw text: every token is a label
            chunk = stream[start:start + cutoff]
            if len(chunk) > 1:
                out.rows.append((chunk, list(chunk)))
    if packing:
        out.rows = pack(out.rows, cutoff)
    return out


def pack(rows: list[tuple[list[int], list[int]]], cutoff: int) -> list[tuple[list[int], list[int]]]:
    """Examples joined, in order, into rows of up to `cutoff` tokens (fewer, shorter batches)."""
    packed, ids, labels = [], [], []
    for row_ids, row_labels in rows:
        if ids and len(ids) + len(row_ids) > cutoff:
            packed.append((ids, labels))
            ids, labels = [], []
        ids, labels = ids + row_ids, labels + row_labels
    if ids:
        packed.append((ids, labels))
    return packed


def check_examples(examples: LmExamples, name: str) -> None:
    if not examples.rows:
        shown = "; ".join(f"{w}: {why}" for w, why in examples.skipped[:5])
        raise InvalidRequest(f"{name!r} holds no usable example (.jsonl of {{\"messages\": […]}} or "
                             f"{{\"text\": …}}, or .txt){' — ' + shown if shown else ''}", "dataset")

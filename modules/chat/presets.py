"""System prompt presets: named system prompts in <data-dir>/system_prompts.json, kept across restarts.

The file is one JSON object {"format", "version", "presets": {name: text}}, rewritten whole with
modules/atomic.py on every save or delete. A file that cannot be read is kept aside as .bak before the
next save writes a new one, so a preset a person made is never silently overwritten.
"""
from __future__ import annotations

import json
import threading
from pathlib import Path

from modules import atomic
from modules.chat.params import MAX_TEXT_CHARS
from modules.errors import InvalidRequest, NotFound

FORMAT = "atelier-system-prompts"
VERSION = 1
MAX_NAME = 80


class SystemPromptPresets:
    def __init__(self, path: Path):
        self.path = Path(path)
        self._lock = threading.RLock()

    def names(self) -> list[str]:
        return sorted(self._read(), key=str.casefold)

    def get(self, name: str) -> str:
        presets = self._read()
        if name not in presets:
            raise NotFound(f"no system prompt preset named {name!r}", "preset")
        return presets[name]

    def save(self, name: str, text: str) -> str:
        """Save (or replace) `name`; returns the name as stored (spaces trimmed)."""
        name = " ".join(str(name or "").split())
        if not name:
            raise InvalidRequest("give the preset a name", "preset")
        if len(name) > MAX_NAME:
            raise InvalidRequest(f"a preset name has at most {MAX_NAME} characters", "preset")
        if not (text or "").strip():
            raise InvalidRequest("the system prompt is empty: type the prompt to keep first", "system")
        if len(text) > MAX_TEXT_CHARS:
            raise InvalidRequest(f"a system prompt has at most {MAX_TEXT_CHARS} characters", "system")
        with self._lock:
            presets = self._read(keep_unreadable=True)
            presets[name] = text
            self._write(presets)
        return name

    def delete(self, name: str) -> None:
        with self._lock:
            presets = self._read()
            if presets.pop(name, None) is None:
                raise NotFound(f"no system prompt preset named {name!r}", "preset")
            self._write(presets)

    def _read(self, keep_unreadable: bool = False) -> dict[str, str]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            presets = data["presets"]
            if data.get("format") != FORMAT or not isinstance(presets, dict):
                raise ValueError("not a presets file")
            return {str(k): v for k, v in presets.items() if isinstance(v, str)}
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, KeyError, TypeError):
            if keep_unreadable:  # about to write: the unreadable file goes aside, never overwritten
                atomic.write_bytes(self.path.with_name(self.path.name + ".bak"), self.path.read_bytes())
            return {}

    def _write(self, presets: dict[str, str]) -> None:
        atomic.write_json(self.path, {"format": FORMAT, "version": VERSION, "presets": presets})

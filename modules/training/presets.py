"""Named Train-tab presets: the form of one training kind as JSON, `presets/training/<name>.json` in the
data dir, written atomically (a kill never leaves half a preset) and listed again after a restart."""
from __future__ import annotations

import json
import re
from pathlib import Path

from modules import atomic
from modules.errors import InvalidRequest, NotFound

PRESET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._ -]{0,79}$")  # a file stem: no folders, no leading dot


class PresetStore:
    def __init__(self, root: Path):
        self.folder = Path(root) / "presets" / "training"

    def _path(self, name: str) -> Path:
        name = (name or "").strip()
        if not PRESET_NAME.match(name):
            raise InvalidRequest(f"{name!r} is not a preset name: letters, digits, '.', '_', '-', spaces "
                                 "(80 at most), starting with a letter or digit", "preset")
        return self.folder / f"{name}.json"

    def names(self) -> list[str]:
        if not self.folder.is_dir():
            return []
        return sorted(p.stem for p in self.folder.glob("*.json") if not p.name.startswith("."))

    def save(self, name: str, form: dict) -> None:
        """`form`: {"kind": …, field: value, …} — what the tab's form holds (checked when it is used)."""
        if not isinstance(form.get("kind"), str):
            raise InvalidRequest("a preset needs the training kind", "kind")
        atomic.write_json(self._path(name), form)

    def load(self, name: str) -> dict:
        path = self._path(name)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise NotFound(f"no preset named {name!r}", "preset") from None
        except (OSError, ValueError) as exc:
            raise InvalidRequest(f"the preset {name!r} cannot be read ({exc}); delete it", "preset") from None
        if not isinstance(data, dict) or not isinstance(data.get("kind"), str):
            raise InvalidRequest(f"the preset {name!r} is not a training form; delete it", "preset")
        return data

    def delete(self, name: str) -> None:
        path = self._path(name)
        if not path.exists():
            raise NotFound(f"no preset named {name!r}", "preset")
        path.unlink()

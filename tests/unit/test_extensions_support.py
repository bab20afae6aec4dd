"""Builders for throw-away extensions (folders and local git repos) shared by the extension tests (no tests here)."""
from __future__ import annotations

import subprocess
import textwrap
from pathlib import Path

GIT = ["git", "-c", "user.name=Atelier Tests", "-c", "user.email=tests@atelier.invalid", "-c", "init.defaultBranch=main",
       "-c", "commit.gpgsign=false"]

# An after_generate hook that paints the top-left 8x8 pixels pure red and says so in the infotext.
MARK_MAIN = '''
def setup(api):
    @api.after_generate
    def mark(result):
        for g in result.images:
            img = g.image.convert("RGB")
            for x in range(8):
                for y in range(8):
                    img.putpixel((x, y), (255, 0, 0))
            g.image = img
            g.infotext += ", Mark: MARKER"
        return result

    def build():
        import gradio as gr
        gr.Markdown("marker tab", elem_id="MARKER_tab_text")
        return {}

    api.add_tab("MARKER tab", build)

    @api.get("/hello")
    def hello(who: str = "world") -> dict:
        return {"hello": who, "from": api.name}
'''


def write_extension(folder: Path, main: str, name: str | None = None, **manifest) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    fields = {"name": name or folder.name, "version": "1.0.0", "description": "test extension", "api_version": "1",
              **manifest}
    lines = []
    for key, value in fields.items():
        if isinstance(value, str):
            lines.append(f'{key} = "{value}"')
        elif isinstance(value, list):
            lines.append(f"{key} = [{', '.join(repr(v).replace(chr(39), chr(34)) for v in value)}]")
        else:
            lines.append(f"{key} = {value}")
    (folder / "extension.toml").write_text("\n".join(lines) + "\n")
    (folder / "main.py").write_text(textwrap.dedent(main))
    return folder


def git_repo(folder: Path, main: str, **manifest) -> Path:
    """A local git repository holding an extension, as a user's published one would be."""
    write_extension(folder, main, **manifest)
    subprocess.run([*GIT, "init", "-q", str(folder)], check=True)
    commit(folder, "first version")
    return folder


def commit(folder: Path, message: str) -> None:
    subprocess.run([*GIT, "-C", str(folder), "add", "-A"], check=True)
    subprocess.run([*GIT, "-C", str(folder), "commit", "-q", "-m", message], check=True)


def mark_main(marker: str) -> str:
    return MARK_MAIN.replace("MARKER", marker)

"""The hosting files say only what the README says: the Dockerfile installs and starts with the README's own
command and flags the studio accepts; the README's first lines link to docs/hosting.md."""
from __future__ import annotations

import json
import re
import shlex

from tests.conftest import REPO


def readme() -> str:
    return (REPO / "README.md").read_text()


def readme_flags() -> set[str]:
    return set(re.findall(r"`(--[a-z][a-z-]*)", readme()))


def dockerfile_commands() -> tuple[list[str], list[str]]:
    text = (REPO / "Dockerfile").read_text()
    install = [line for line in text.splitlines() if line.startswith("RUN ") and "launch.py" in line]
    assert len(install) == 1, install
    entry = re.search(r"^ENTRYPOINT (\[.*\])$", text, re.M)
    return shlex.split(install[0][len("RUN "):]), json.loads(entry.group(1))


def test_the_dockerfile_uses_the_readmes_command_and_flags_it_documents():
    from webui.flags import build_parser

    install, start = dockerfile_commands()
    first_command = re.search(r"```\n(python3 launch\.py)\s", readme()).group(1).split()
    assert install[:2] == first_command and start[:2] == first_command
    for flag in [a for a in install[2:] + start[2:] if a.startswith("--")]:
        assert flag in readme_flags(), f"{flag} is used by the Dockerfile but not in the README's flags table"
    studio_flags = [a for a in start[2:] if a != "--skip-install"]  # launch.py's own flag, the rest go to the studio
    build_parser().parse_args(studio_flags)  # a flag the studio does not know is a usage error (SystemExit)
    assert install[2:] == ["--install-only"]


def test_the_readme_links_to_the_hosting_guide_near_the_top():
    top = "\n".join(readme().splitlines()[:20])
    assert "docs/hosting.md" in top
    guide = (REPO / "docs" / "hosting.md").read_text()
    for must in ("RunPod", "/workspace", "--listen", "ssh -L", "--root-path", "notebooks/colab.ipynb", "Dockerfile"):
        assert must in guide, must

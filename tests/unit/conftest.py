"""Fixtures of the unit tests: a studio over the demo language models only (no SD checkpoint)."""
from __future__ import annotations

import shutil

import pytest

from modules.models.demo_lm import DEMO_LLM_NAME, DEMO_VLM_NAME, DEMOS

LM_FOLDERS = {"llm": "LLM", "vlm": "VLM"}


def chat_data_dir(root, demo_language_models):
    for kind, name, _builder in DEMOS:
        target = root / "models" / LM_FOLDERS[kind] / name
        if not target.exists():
            shutil.copytree(demo_language_models[name], target)
    return root


def open_chat_studio(root):
    from modules.studio import Studio, StudioOptions

    studio = Studio(StudioOptions(data_dir=root, device="cpu", build_demo=False))
    studio.load()
    assert studio.load_error is None, studio.load_error
    return studio


@pytest.fixture(scope="module")
def chat_studio(tmp_path_factory, demo_language_models):
    """A loaded Studio whose models/LLM and models/VLM hold the demo Gemma 2, Gemma 3 and PaliGemma."""
    studio = open_chat_studio(chat_data_dir(tmp_path_factory.mktemp("chat-data"), demo_language_models))
    yield studio
    studio.shutdown()


@pytest.fixture(scope="module")
def gemma2(chat_studio):
    """The demo Gemma 2 handle (resident; the studio's manager owns it)."""
    return chat_studio.models.load(DEMO_LLM_NAME, kind="llm")


@pytest.fixture(scope="module")
def gemma3(chat_studio):
    return chat_studio.models.load(DEMO_VLM_NAME, kind="vlm")


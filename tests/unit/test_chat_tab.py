"""The Chat tab's handlers without a browser: a chat sent through the tab is saved by its job and is
still there, with its messages, for a new Studio over the same data dir (a server restart)."""
from __future__ import annotations

import time

from modules.models.demo_lm import DEMO_LLM_NAME

SAMPLING = (0.0, 1.0, 0, 0.0, 1.0, 6, 1, "")  # greedy, 6 new tokens, seed 1, no stop strings


def _tab(studio):
    from webui.ui import build_ui

    blocks = build_ui(studio)
    return blocks.atelier_components["tab_chat"]


def _drain(gen, timeout=120):
    deadline, last = time.monotonic() + timeout, None
    for last in gen:
        assert time.monotonic() < deadline, "the reply did not finish in time"
    return last


def test_a_chat_sent_through_the_tab_survives_a_restart(data_dir):
    from modules.studio import Studio, StudioOptions

    studio = Studio(StudioOptions(data_dir=data_dir, device="cpu"))
    studio.load()
    try:
        assert studio.load_error is None, studio.load_error
        h = _tab(studio)["_handlers"]
        chatbot, conv_id, job_id, stats = _drain(h.run(None, DEMO_LLM_NAME, "Be brief.", SAMPLING,
                                                       [{"role": "user", "content": "Hello, fox"}]))
        assert conv_id and job_id is None and "Tokens:" in stats and "first token" in stats
        assert chatbot[0] == {"role": "user", "content": "Hello, fox"} and chatbot[-1]["role"] == "assistant"
        reply = chatbot[-1]["content"]
        _drain(h.run(conv_id, DEMO_LLM_NAME, "Be brief.", SAMPLING, [{"role": "user", "content": "Again"}]))
    finally:
        studio.shutdown()

    again = Studio(StudioOptions(data_dir=data_dir, device="cpu"))
    again.load()
    try:
        store = again.jobs.services_of("chat").conversations
        listed = [c for c in store.list() if c["id"] == conv_id]
        assert listed and listed[0]["title"].startswith("Hello, fox")
        conv = store.get(conv_id)
        assert [m.role for m in conv.messages] == ["system", "user", "assistant", "user", "assistant"]
        assert conv.messages[2].content == reply and conv.messages[2].meta["completion_tokens"] >= 1
        from webui.ui.chat import chatbot_messages

        assert [m["content"] for m in chatbot_messages(conv)][:2] == ["Hello, fox", reply]
    finally:
        again.shutdown()


def test_a_text_only_model_refuses_an_image_with_the_engines_message(studio):
    import gradio as gr
    import pytest
    from PIL import Image

    h = _tab(studio)["_handlers"]
    image = {"role": "user", "content": [{"type": "image", "image": Image.new("RGB", (8, 8))},
                                         {"type": "text", "text": "what is it?"}]}
    with pytest.raises(gr.Error) as exc:
        _drain(h.run(None, DEMO_LLM_NAME, "", SAMPLING, [image]))
    assert "reads text only" in str(exc.value)

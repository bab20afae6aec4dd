"""The Chat tab's handlers without a browser: a chat sent through the tab is saved by its job and is
still there, with its messages, for a new Studio over the same data dir (a server restart)."""
from __future__ import annotations

import json
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


def test_regenerate_keeps_the_old_reply_as_a_version_and_continue_extends_it(studio):
    h = _tab(studio)["_handlers"]
    _, conv_id, _, _ = _drain(h.run(None, DEMO_LLM_NAME, "", SAMPLING, [{"role": "user", "content": "Hi"}]))
    store = studio.jobs.services_of("chat").conversations
    first = store.get(conv_id).messages[-1].content
    chatbot, _, _, stats = _drain(h.run(conv_id, DEMO_LLM_NAME, "", SAMPLING, drop_last_reply=True, new_seed=True))
    conv = store.get(conv_id)
    assert [m.role for m in conv.messages] == ["user", "assistant"]
    assert conv.messages[-1].versions == [first] and conv.messages[-1].meta["seed"] != 1  # a new seed
    before = conv.messages[-1].content
    chatbot, _, _, _ = _drain(h.run(conv_id, DEMO_LLM_NAME, "", SAMPLING, continue_final=True))
    after = store.get(conv_id).messages
    assert len(after) == 2 and after[-1].content.startswith(before) and len(after[-1].content) >= len(before)
    assert chatbot[-1]["content"] == after[-1].content


def test_an_image_goes_to_the_image_text_model_and_shows_in_the_history(studio):
    from PIL import Image

    from modules.models.demo_lm import DEMO_VLM_NAME

    h = _tab(studio)["_handlers"]
    image = {"role": "user", "content": [{"type": "image", "image": Image.new("RGB", (16, 12), (200, 0, 0))},
                                         {"type": "text", "text": "what is it?"}]}
    chatbot, conv_id, _, stats = _drain(h.run(None, DEMO_VLM_NAME, "", SAMPLING, [image]))
    assert "Tokens:" in stats
    assert isinstance(chatbot[0]["content"], dict) and chatbot[0]["content"]["path"].endswith(".png")
    assert chatbot[1] == {"role": "user", "content": "what is it?"} and chatbot[-1]["role"] == "assistant"
    with Image.open(chatbot[0]["content"]["path"]) as shown:
        assert shown.size == (16, 12)


def _value(update):
    """What an event's returned update sets: a component (gr.Textbox(value=…)) or a gr.update dict."""
    return update["value"] if isinstance(update, dict) else update.value


def _events(studio) -> dict:
    """The Chat tab's wired event functions by name (what the browser's clicks run)."""
    from webui.ui import build_ui

    blocks = build_ui(studio)
    fns = {f.fn.__name__: f.fn for f in blocks.fns.values()
           if f.fn is not None and getattr(f.fn, "__module__", "") in ("webui.ui.chat", "webui.ui.chat_edit",
                                                                       "webui.ui.chat_presets")}
    return fns | {"_handlers": blocks.atelier_components["tab_chat"]["_handlers"]}


def test_open_export_rename_import_remove_last_and_delete(studio):
    ev = _events(studio)
    store = studio.jobs.services_of("chat").conversations
    _, conv_id, _, _ = _drain(ev["_handlers"].run(None, DEMO_LLM_NAME, "Be brief.", SAMPLING,
                                                  [{"role": "user", "content": "Name a colour"}]))
    opened = ev["open_conversation"](conv_id)
    chatbot, cid, stats, export, title, system = opened[:6]
    assert cid == conv_id and chatbot[0]["content"] == "Name a colour" and "Tokens:" in stats
    assert title == "Name a colour" and _value(system) == "Be brief."
    assert _value(opened[6 + 5]) == 6  # max_new_tokens restored from the conversation's settings
    export_path = _value(export)["path"] if isinstance(_value(export), dict) else _value(export)
    exported = json.loads(open(export_path, encoding="utf-8").read())
    assert exported["format"] == "atelier-conversation" and exported["id"] == conv_id

    listed, export = ev["rename"](conv_id, "  Colours  ")
    assert ("Colours (3)", conv_id) in [tuple(c) for c in listed.choices]
    assert store.get(conv_id).title == "Colours"

    export_path = _value(export)["path"] if isinstance(_value(export), dict) else _value(export)
    assert json.loads(open(export_path, encoding="utf-8").read())["title"] == "Colours"
    ev["import_"](export_path)
    copies = [c for c in store.list() if c["title"] == "Colours"]
    assert len(copies) == 2

    chatbot, box, _ = ev["remove_last"](conv_id)
    assert _value(box)["text"] == "Name a colour" and chatbot == []
    assert [m.role for m in store.get(conv_id).messages] == ["system"]

    ev["delete"](conv_id)
    assert not store.exists(conv_id)
    assert [c for c in store.list() if c["title"] == "Colours"]  # the imported copy stays


def test_load_options_load_the_chosen_chat_model(studio):
    import gradio as gr
    import pytest

    ev = _events(studio)
    said = ev["load_model"](DEMO_LLM_NAME, "fp32", "none")
    assert said.startswith(f"{DEMO_LLM_NAME} loaded (fp32, none)")
    assert any(d["name"] == DEMO_LLM_NAME and d["kind"] == "llm" and d["location"] != "disk"
               for d in studio.models.describe()), studio.models.describe()
    with pytest.raises(gr.Error):
        ev["load_model"]("", "auto", "none")


def _edit(index, value, previous=""):
    import gradio as gr

    return gr.EditData(None, {"index": index, "value": value, "previous_value": previous})


def test_editing_a_past_message_cuts_there_and_resends_from_it(studio):
    """The Chatbot's edit event on the first of two turns: the saved file holds the edited message and a
    new reply after it, the second turn is gone; the chat shown is the saved one."""
    ev = _events(studio)
    h = ev["_handlers"]
    store = studio.jobs.services_of("chat").conversations
    _, conv_id, _, _ = _drain(h.run(None, DEMO_LLM_NAME, "Be brief.", SAMPLING, [{"role": "user", "content": "One"}]))
    _drain(h.run(conv_id, DEMO_LLM_NAME, "Be brief.", SAMPLING, [{"role": "user", "content": "Two"}]))
    assert [m.content for m in store.get(conv_id).messages if m.role == "user"] == ["One", "Two"]
    chatbot, cid, job_id, stats = _drain(ev["edit_message"](_edit(0, "One, edited", "One"), conv_id, DEMO_LLM_NAME,
                                                            "Be brief.", *SAMPLING))
    conv = store.get(conv_id)
    assert [m.role for m in conv.messages] == ["system", "user", "assistant"]
    assert conv.messages[1].content == "One, edited" and conv.messages[2].meta["completion_tokens"] >= 1
    assert cid == conv_id and job_id is None and "Tokens:" in stats
    assert chatbot == [{"role": "user", "content": "One, edited"}, {"role": "assistant", "content": conv.messages[2].content}]
    assert conv.messages[2].versions == []  # a reply to another question is not a version of this one

    # The assistant's text cannot be edited (editable="user"); a stale index is refused with a message.
    import gradio as gr
    import pytest

    for index in (1, 9):
        with pytest.raises(gr.Error):
            _drain(ev["edit_message"](_edit(index, "x"), conv_id, DEMO_LLM_NAME, "", *SAMPLING))
    assert store.get(conv_id).messages[1].content == "One, edited"  # untouched by the refusals


def test_editing_the_text_beside_an_image_keeps_the_image(studio):
    from PIL import Image

    from modules.models.demo_lm import DEMO_VLM_NAME

    ev = _events(studio)
    store = studio.jobs.services_of("chat").conversations
    image = {"role": "user", "content": [{"type": "image", "image": Image.new("RGB", (16, 12), (200, 0, 0))},
                                         {"type": "text", "text": "what is it?"}]}
    _, conv_id, _, _ = _drain(ev["_handlers"].run(None, DEMO_VLM_NAME, "", SAMPLING, [image]))
    sent_image = store.get(conv_id).messages[0].content[0]["image"]
    chatbot, _, _, _ = _drain(ev["edit_message"](_edit(1, "what colour is it?"), conv_id, DEMO_VLM_NAME, "",
                                                 *SAMPLING))
    saved = store.get(conv_id).messages
    assert [m.role for m in saved] == ["user", "assistant"]
    assert [p["type"] for p in saved[0].content] == ["image", "text"] and saved[0].content[1]["text"] == "what colour is it?"
    assert saved[0].content[0]["image"] == sent_image
    assert isinstance(chatbot[0]["content"], dict) and chatbot[1]["content"] == "what colour is it?"


def test_system_prompt_presets_save_pick_delete_and_survive_a_restart(data_dir):
    import gradio as gr
    import pytest

    from modules.studio import Studio, StudioOptions

    studio = Studio(StudioOptions(data_dir=data_dir, device="cpu"))
    studio.load()
    try:
        ev = _events(studio)
        listed, name = ev["save_preset"]("  Pirate  ", "Answer like a pirate.")
        assert name == "Pirate" and "Pirate" in [c[0] if isinstance(c, tuple) else c for c in listed.choices]
        ev["save_preset"]("Terse", "One sentence.")
        with pytest.raises(gr.Error, match="name"):
            ev["save_preset"]("", "text")
        with pytest.raises(gr.Error, match="empty"):
            ev["save_preset"]("Blank", "  ")
        ev["delete_preset"]("Terse")
    finally:
        studio.shutdown()
    saved = json.loads((data_dir / "system_prompts.json").read_text(encoding="utf-8"))
    assert saved["presets"] == {"Pirate": "Answer like a pirate."}

    again = Studio(StudioOptions(data_dir=data_dir, device="cpu"))
    again.load()
    try:
        ev = _events(again)
        system, name = ev["pick_preset"]("Pirate")
        assert _value(system) == "Answer like a pirate." and name == "Pirate"
        with pytest.raises(gr.Error):
            ev["delete_preset"]("Terse")
    finally:
        again.shutdown()

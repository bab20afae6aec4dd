"""Chat tab: a model picker (models/LLM and models/VLM), a streamed gr.Chatbot, Stop that keeps the
partial reply, saved conversations (new, open, rename, delete, export, import), the system prompt,
sampling settings, Regenerate / Continue / Remove last, edit a past message and resend (chat_edit.py),
system prompt presets (chat_presets.py), images for image+text models (attached, dropped or pasted), and
the last reply's numbers under the chat. Every reply is a "chat" job with the conversation's id: the job saves
the messages and the reply (modules/chat/conversations.py), so the tab keeps no history of its own.

Enter sends, Shift+Enter is a new line: Gradio 6's textboxes submit on Enter only when `lines=1`
(with lines > 1 it is Shift+Enter), so the box starts at one line and grows to `max_lines`.
"""
from __future__ import annotations

from pathlib import Path

from modules.chat.params import MAX_TEXT_CHARS
from modules.errors import AtelierError
from modules.extensions.tabs import TabSpec
from webui.ui.chat_edit import wire_edit
from webui.ui.chat_presets import build_presets
from webui.ui.gradio_api import endpoint
from webui.ui.events import then_always
from webui.ui.chat_turn import (SAMPLING, ChatHandlers, adapter_choices, chatbot_messages, conversation_choices,
                                conversation_store, files_dir, gr_error, model_choices, stats_text)
from webui.ui.models import DTYPES, QUANTIZATIONS


def build(studio) -> dict:
    import gradio as gr

    h = ChatHandlers(studio)
    c: dict = {"_handlers": h}
    with gr.Row(equal_height=False):
        with gr.Column(scale=1, min_width=260):
            c["model"] = gr.Dropdown([], label="Model", elem_id="chat_model", allow_custom_value=True)
            c["adapter"] = gr.Dropdown([("none (the base model)", "")], value="", label="Adapter (models/LLM-loras)",
                                       elem_id="chat_adapter", allow_custom_value=True)
            with gr.Accordion("Load options", open=False, elem_id="chat_load_acc"):
                with gr.Row():
                    c["dtype"] = gr.Dropdown(list(DTYPES), value="auto", label="dtype", elem_id="chat_dtype")
                    c["quantization"] = gr.Dropdown(list(QUANTIZATIONS), value="none", label="Quantization",
                                                    elem_id="chat_quantization")
                c["load"] = gr.Button("Load with these options", elem_id="chat_load", size="sm")
                c["load_status"] = gr.Markdown("", elem_id="chat_load_status")
            c["new"] = gr.Button("➕ New chat", elem_id="chat_new", size="sm")
            c["conversations"] = gr.Dropdown([], label="Saved conversations", elem_id="chat_conversations",
                                             allow_custom_value=False)
            c["title"] = gr.Textbox(label="Title", elem_id="chat_title")
            with gr.Row():
                c["rename"] = gr.Button("Rename", elem_id="chat_rename", size="sm")
                c["delete"] = gr.Button("🗑️ Delete", elem_id="chat_delete", size="sm", variant="stop")
            c["export"] = gr.DownloadButton("Export JSON", elem_id="chat_export", size="sm", visible=False)
            c["import_file"] = gr.File(label="Import a conversation (JSON)", file_types=[".json"], type="filepath",
                                       elem_id="chat_import")
            c["system"] = gr.Textbox(label="System prompt", lines=3, elem_id="chat_system")
            c.update(build_presets(studio, c["system"]))
            with gr.Accordion("Sampling", open=False, elem_id="chat_sampling"):
                c["temperature"] = gr.Slider(0.0, 2.0, 0.7, step=0.05, label="Temperature (0: greedy)",
                                             elem_id="chat_temperature")
                c["top_p"] = gr.Slider(0.01, 1.0, 0.95, step=0.01, label="top_p", elem_id="chat_top_p")
                c["top_k"] = gr.Slider(0, 200, 64, step=1, label="top_k (0: off)", elem_id="chat_top_k")
                c["min_p"] = gr.Slider(0.0, 1.0, 0.0, step=0.01, label="min_p (0: off)", elem_id="chat_min_p")
                c["repetition_penalty"] = gr.Slider(0.5, 2.0, 1.0, step=0.01, label="Repetition penalty (1: off)",
                                                    elem_id="chat_repetition_penalty")
                c["max_new_tokens"] = gr.Number(512, label="Max new tokens", precision=0, minimum=1, maximum=32768,
                                                elem_id="chat_max_new_tokens")
                c["seed"] = gr.Number(-1, label="Seed (-1: random)", precision=0, elem_id="chat_seed")
                c["stop"] = gr.Textbox(label="Stop strings (one per line)", lines=2, elem_id="chat_stop_strings")
        with gr.Column(scale=4):
            # editable="user": a past message of the person's can be edited and resent (chat_edit.py); one bubble
            # per message, so the text beside an image is edited on its own.
            c["chatbot"] = gr.Chatbot([], label="Chat", height=520, elem_id="chat_chatbot", feedback_options=None,
                                      editable="user", group_consecutive_messages=False)
            c["stats"] = gr.Markdown("", elem_id="chat_stats")
            c["message"] = gr.MultimodalTextbox(
                placeholder="Message… (Enter sends, Shift+Enter: new line; attach images for image+text models)",
                lines=1, max_lines=12, file_types=["image"], file_count="multiple", show_label=False,
                elem_id="chat_message", submit_btn=True, max_plain_text_length=MAX_TEXT_CHARS)
            with gr.Row():
                c["stop_btn"] = gr.Button("⏹ Stop", elem_id="chat_stop", size="sm")
                c["regenerate"] = gr.Button("🔄 Regenerate", elem_id="chat_regenerate", size="sm")
                c["continue"] = gr.Button("▶ Continue", elem_id="chat_continue", size="sm")
                c["remove_last"] = gr.Button("↩ Remove last", elem_id="chat_remove_last", size="sm")
    c["conv_id"] = gr.State(None)
    c["job_id"] = gr.State(None)
    sampling = [c[k] for k in SAMPLING]
    reply_outs = [c["chatbot"], c["conv_id"], c["job_id"], c["stats"]]

    def conv_list(conv_id=None):
        return gr.Dropdown(choices=conversation_choices(studio), value=conv_id)

    def export_button(conv_id):
        if not conv_id or not conversation_store(studio).exists(conv_id):
            return gr.DownloadButton(visible=False)
        import json

        data = conversation_store(studio).export(conv_id)
        path = files_dir() / f"conversation-{conv_id}.json"
        path.write_text(json.dumps(data, indent=1), encoding="utf-8")
        return gr.DownloadButton(value=str(path), visible=True)

    def title_of(conv_id):
        if not conv_id or not conversation_store(studio).exists(conv_id):
            return ""
        return conversation_store(studio).get(conv_id).summary()["title"]

    def after_reply(conv_id):
        return conv_list(conv_id), export_button(conv_id), title_of(conv_id)

    after_outs = [c["conversations"], c["export"], c["title"]]

    def send(box, conv_id, model, system, *values):
        message, files = h._user_message(box)
        if message is None:
            raise gr.Error("Type a message first")
        shown = [{"role": "user", "content": {"path": f}} for f in files]
        text = box.get("text") if isinstance(box, dict) else ""
        if text and text.strip():
            shown.append({"role": "user", "content": text})
        first = True
        for chatbot, cid, jid, stats in h.run(conv_id, model, system, values, [message], shown_user=shown):
            yield chatbot, cid, jid, stats, (gr.MultimodalTextbox(value=None) if first else gr.MultimodalTextbox())
            first = False

    def refresh_after(event) -> None:
        """The conversation list, export and title follow every reply — one that failed too."""
        then_always(event, after_reply, [c["conv_id"]], after_outs, queue=False, api_visibility="private")

    refresh_after(gr.on([c["message"].submit], endpoint(send, "chat"),
                        [c["message"], c["conv_id"], c["model"], c["system"], *sampling],
                        [*reply_outs, c["message"]], concurrency_id="chat", api_name="chat", show_progress="hidden"))

    def regenerate(conv_id, model, system, *values):
        if not conv_id:
            raise gr.Error("There is no reply to regenerate yet")
        yield from h.run(conv_id, model, system, values, drop_last_reply=True, new_seed=True)

    def continue_(conv_id, model, system, *values):
        if not conv_id:
            raise gr.Error("There is no reply to continue yet")
        yield from h.run(conv_id, model, system, values, continue_final=True)

    for button, fn in ((c["regenerate"], regenerate), (c["continue"], continue_)):
        refresh_after(button.click(fn, [c["conv_id"], c["model"], c["system"], *sampling], reply_outs,
                                   concurrency_id="chat", api_visibility="private", show_progress="hidden"))

    def stop(job_id):
        if job_id:
            try:
                studio.jobs.interrupt(job_id)
            except AtelierError:
                pass  # already finished and forgotten: nothing to stop

    refresh_after(wire_edit(studio, h, c["chatbot"], [c["conv_id"], c["model"], c["system"], *sampling], reply_outs))

    c["stop_btn"].click(stop, [c["job_id"]], None, queue=False, api_visibility="private")

    def remove_last(conv_id):
        store = conversation_store(studio)
        if not conv_id or not store.exists(conv_id):
            raise gr.Error("Nothing to remove")
        msgs = list(store.get(conv_id).messages)
        text = ""
        if msgs and msgs[-1].role == "assistant":
            msgs.pop()
        if msgs and msgs[-1].role == "user":
            last = msgs.pop()
            text = last.content if isinstance(last.content, str) else "".join(
                p.get("text", "") for p in last.content if isinstance(p, dict))
        conv = store.update(conv_id, messages=msgs)
        return chatbot_messages(conv), gr.MultimodalTextbox(value={"text": text, "files": []}), ""

    c["remove_last"].click(remove_last, [c["conv_id"]], [c["chatbot"], c["message"], c["stats"]], queue=False,
                           api_visibility="private").then(after_reply, [c["conv_id"]], after_outs, queue=False,
                                                          api_visibility="private")

    def load_model(name, dtype, quantization):
        """The model manager's load with options (the Models tab's job), for the chosen chat model."""
        from modules.chat.choose import chat_models

        entry = next((e for e in chat_models(studio.registry) if e.name == name), None) if name else None
        if entry is None:
            raise gr.Error("Choose a chat model first")
        try:
            job = studio.submit("load_model", {"kind": entry.kind, "name": entry.name,
                                               "options": {"dtype": dtype, "quantization": quantization}}).wait()
            job.raise_for_error()
        except AtelierError as exc:
            raise gr_error(exc) from None
        r = job.result or {}
        return f"{entry.name} loaded ({dtype}, {quantization}) in {r.get('seconds') or 0:.1f} s."

    c["load"].click(load_model, [c["model"], c["dtype"], c["quantization"]], [c["load_status"]],
                    concurrency_id="gpu", api_visibility="private")

    def new_chat():
        return [], None, "", conv_list(None), gr.DownloadButton(visible=False), ""

    c["new"].click(new_chat, None, [c["chatbot"], c["conv_id"], c["stats"], c["conversations"], c["export"],
                                    c["title"]], queue=False, api_visibility="private")

    def open_conversation(conv_id):
        keep = [gr.update() for _ in SAMPLING]
        if not conv_id:
            return (*new_chat()[:3], gr.DownloadButton(visible=False), "", gr.Textbox(), *keep)
        try:
            conv = conversation_store(studio).get(conv_id)
        except AtelierError as exc:
            raise gr_error(exc) from None
        last = next((m.meta for m in reversed(conv.messages) if m.role == "assistant" and m.meta), None)
        settings = conv.settings or {}
        system = settings.get("system")
        if system is None:
            system = next((m.content for m in conv.messages if m.role == "system" and isinstance(m.content, str)), None)
        restored = [gr.update(value="\n".join(settings["stop"]) if k == "stop" else settings[k]) if k in settings
                    else gr.update() for k in SAMPLING]
        return (chatbot_messages(conv), conv.id, stats_text(last), export_button(conv.id), conv.summary()["title"],
                gr.Textbox(value=system) if system is not None else gr.Textbox(), *restored)

    c["conversations"].input(open_conversation, [c["conversations"]],
                             [c["chatbot"], c["conv_id"], c["stats"], c["export"], c["title"], c["system"], *sampling],
                             queue=False, api_visibility="private")

    def rename(conv_id, title):
        if not conv_id:
            raise gr.Error("Open or start a conversation first")
        try:
            conversation_store(studio).rename(conv_id, title)
        except AtelierError as exc:
            raise gr_error(exc) from None
        return conv_list(conv_id), export_button(conv_id)  # the export carries the new title

    c["rename"].click(rename, [c["conv_id"], c["title"]], [c["conversations"], c["export"]], queue=False,
                      api_visibility="private")

    def delete(conv_id):
        if not conv_id:
            raise gr.Error("Open a conversation first")
        try:
            conversation_store(studio).delete(conv_id)
        except AtelierError as exc:
            raise gr_error(exc) from None
        return new_chat()

    c["delete"].click(delete, [c["conv_id"]], [c["chatbot"], c["conv_id"], c["stats"], c["conversations"],
                                               c["export"], c["title"]], queue=False, api_visibility="private")

    def import_(path):
        if not path:
            return gr.Dropdown(), None, gr.File(value=None)
        try:
            conv = conversation_store(studio).import_(Path(path).read_bytes())
        except AtelierError as exc:
            raise gr_error(exc) from None
        gr.Info(f"Imported “{conv.summary()['title']}”")
        return conv_list(None), None, gr.File(value=None)

    c["import_file"].upload(import_, [c["import_file"]], [c["conversations"], c["conv_id"], c["import_file"]],
                            queue=False, api_visibility="private")

    def adapters_of(model, adapter):
        choices = adapter_choices(studio, model)
        return gr.Dropdown(choices=choices, value=adapter if adapter in [v for _, v in choices] else "")

    c["model"].change(adapters_of, [c["model"], c["adapter"]], [c["adapter"]], queue=False, api_visibility="private")

    def show(model, conv_id):
        models = model_choices(studio)
        names = [v for _, v in models]
        chosen = model if model in names else (names[0] if names else None)
        return gr.Dropdown(choices=models, value=chosen), conv_list(conv_id)

    def show_tab(model, conv_id, preset):
        return (*show(model, conv_id), c["_preset_list"](preset))

    c["_on_show"] = (show_tab, [c["model"], c["conv_id"], c["preset"]], [c["model"], c["conversations"], c["preset"]])
    return c


def register(studio) -> None:
    studio.tabs.add(TabSpec("Chat", build, order=35, elem_id="tab_chat"))

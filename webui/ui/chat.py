"""Chat tab: a model picker (models/LLM and models/VLM), a streamed gr.Chatbot, Stop that keeps the
partial reply, saved conversations (new, open, rename, delete, export, import), the system prompt,
sampling settings, Regenerate / Continue / Remove last, images for image+text models, and the last
reply's numbers under the chat. Every reply is a "chat" job with the conversation's id: the job saves
the messages and the reply (modules/chat/conversations.py), so the tab keeps no history of its own.

Enter sends, Shift+Enter is a new line: Gradio 6's textboxes submit on Enter only when `lines=1`
(with lines > 1 it is Shift+Enter), so the box starts at one line and grows to `max_lines`.
"""
from __future__ import annotations

import base64
import hashlib
import tempfile
import time
from pathlib import Path

from modules.errors import AtelierError
from modules.extensions.tabs import TabSpec

STARTING = "The studio is still starting; try again in a moment."
SAMPLING = ("temperature", "top_p", "top_k", "min_p", "repetition_penalty", "max_new_tokens", "seed", "stop")


def _store(studio):
    return studio.jobs.services_of("chat").conversations


def _files_dir() -> Path:
    # Gradio serves files from the system temp dir; images of saved messages and exports are written there.
    d = Path(tempfile.gettempdir()) / "atelier-chat"
    d.mkdir(parents=True, exist_ok=True)
    return d


def _image_file(url: str) -> str | None:
    """A data: URL of a saved message → a PNG file the Chatbot can show (written once per image)."""
    if not isinstance(url, str) or "," not in url:
        return None
    data = url.split(",", 1)[1]
    path = _files_dir() / (hashlib.sha1(data.encode("ascii", "ignore")).hexdigest()[:20] + ".png")
    if not path.exists():
        try:
            path.write_bytes(base64.b64decode(data))
        except (ValueError, OSError):
            return None
    return str(path)


def chatbot_messages(conv) -> list[dict]:
    """A saved conversation → gr.Chatbot's messages (the system prompt is in its own box)."""
    out: list[dict] = []
    if conv is None:
        return out
    for m in conv.messages:
        if m.role == "system":
            continue
        if isinstance(m.content, str):
            out.append({"role": m.role, "content": m.content})
            continue
        for part in m.content:
            if part.get("type") == "image":
                path = _image_file(part.get("image"))
                out.append({"role": m.role, "content": {"path": path} if path else "(image)"})
            elif part.get("text"):
                out.append({"role": m.role, "content": part["text"]})
    return out


def stats_text(stats: dict | None) -> str:
    """Under the chat: tokens used / context length, time to first token, tokens/s of the last reply."""
    if not stats:
        return ""
    used = (stats.get("prompt_tokens") or 0) + (stats.get("completion_tokens") or 0)
    parts = [f"Tokens: {used} / {stats.get('context_length') or '?'}"]
    ttft, tps = stats.get("time_to_first_token"), stats.get("tokens_per_second")
    parts.append(f"first token: {ttft:.2f} s" if ttft is not None else "first token: –")
    parts.append(f"{tps:.1f} tokens/s" if tps else "– tokens/s")
    if stats.get("seed") is not None:
        parts.append(f"seed {stats['seed']}")
    if stats.get("interrupted"):
        parts.append("stopped")
    elif stats.get("finish_reason") == "length":
        parts.append("reached max new tokens")
    if stats.get("dropped_messages"):
        parts.append(f"{stats['dropped_messages']} oldest messages left out to fit the context")
    return " · ".join(parts)


def _choices(studio) -> list[tuple[str, str]]:
    if not studio.ready.is_set():
        return []
    return [(f"{c['title']} ({c['messages']})", c["id"]) for c in _store(studio).list()]


def _model_choices(studio) -> list[tuple[str, str]]:
    from modules.chat.choose import accepts_images, chat_models

    if not studio.ready.is_set():
        return []
    return [(f"{e.name}" + (" (image+text)" if accepts_images(e) else ""), e.name) for e in chat_models(studio.registry)]


class ChatHandlers:
    """The tab's event functions (plain methods, so tests can drive them without a browser)."""

    def __init__(self, studio):
        self.studio = studio

    # -- building a request -----------------------------------------------------------------
    def _sampling(self, values) -> dict:
        d = dict(zip(SAMPLING, values))
        stops = [s for s in (d.pop("stop") or "").split("\n") if s]
        out = {k: v for k, v in d.items() if v is not None}
        for k in ("top_k", "max_new_tokens", "seed"):
            if k in out:
                out[k] = int(out[k])
        return out | {"stop": stops}

    def _history(self, conv, system: str) -> list[dict]:
        msgs = [m.model_dump(include={"role", "content"}) for m in (conv.messages if conv else []) if m.role != "system"]
        system = (system or "").strip()
        return ([{"role": "system", "content": system}] if system else []) + msgs

    def _conversation(self, conv_id):
        """The saved conversation, or a new id (the chat job creates the file with the first message, so a
        refused first message leaves no empty conversation behind)."""
        import uuid

        store = _store(self.studio)
        if conv_id and store.exists(conv_id):
            conv = store.get(conv_id)
            return conv.id, conv
        return uuid.uuid4().hex[:16], None

    def _user_message(self, box) -> tuple[dict | None, list[str]]:
        from PIL import Image

        box = box or {}
        text = (box.get("text") if isinstance(box, dict) else str(box)) or ""
        files = [f if isinstance(f, str) else (f.get("path") if isinstance(f, dict) else getattr(f, "name", None))
                 for f in (box.get("files") or [] if isinstance(box, dict) else [])]
        files = [f for f in files if f]
        if not text.strip() and not files:
            return None, []
        if not files:
            return {"role": "user", "content": text}, []
        parts = []
        for f in files:
            try:
                with Image.open(f) as im:
                    parts.append({"type": "image", "image": im.convert("RGB")})
            except OSError:
                raise gr_error(f"{Path(f).name} is not an image the chat can read") from None
        if text.strip():
            parts.append({"type": "text", "text": text})
        return {"role": "user", "content": parts}, files

    # -- one reply, streamed ----------------------------------------------------------------
    def run(self, conv_id, model, system, sampling_values, extra_messages=(), *, drop_last_reply=False,
            continue_final=False, new_seed=False, shown_user=None):
        """Submit the chat job and yield (chatbot, conv_id, job_id, stats) as the reply streams."""
        import gradio as gr

        from modules.chat.params import ChatRequest, parse

        if not self.studio.ready.is_set():
            self.studio.wait_ready()
        sampling = self._sampling(sampling_values)
        if new_seed:
            sampling["seed"] = -1
        try:
            cid, conv = self._conversation(conv_id)
            messages = self._history(conv, system)
            if drop_last_reply:
                if not messages or messages[-1]["role"] != "assistant":
                    raise gr.Error("There is no reply to regenerate yet")
                messages = messages[:-1]
            if continue_final and (not messages or messages[-1]["role"] != "assistant"):
                raise gr.Error("There is no reply to continue yet")
            messages += list(extra_messages)
            request = parse(ChatRequest, {"messages": messages, "model": model or None, "conversation_id": cid,
                                          "continue_final": continue_final, **sampling})
            job = self.studio.submit("chat", request)
        except AtelierError as exc:
            raise gr_error(exc) from None
        shown = chatbot_messages(conv)
        if drop_last_reply and shown and shown[-1]["role"] == "assistant":
            while shown and shown[-1]["role"] == "assistant":
                shown.pop()
        shown += shown_user or []
        prefix = ""
        if continue_final:
            prefix = shown.pop()["content"] if shown and isinstance(shown[-1]["content"], str) else ""
        yield shown + [{"role": "assistant", "content": prefix}], cid, job.id, "Waiting for the model…"
        interval = 1.0 / max(0.1, self.studio.settings.get().ui_updates_per_second)
        text, cursor, last_sent, info, sent_cursor = "", 0, 0.0, {}, 0
        while True:
            pieces, cursor, ended = job.read_stream(cursor, timeout=interval)
            for p in pieces:
                if "text" in p:
                    text += p["text"]
                elif "prompt" in p:
                    info = p["prompt"]
            if ended:
                break
            if cursor == sent_cursor:
                continue  # nothing new (the model is loading, say): no update
            wait = interval - (time.monotonic() - last_sent)
            if wait > 0:
                job.wait(wait)  # throttled: at most ui_updates_per_second updates; the job runs on
                continue
            last_sent, sent_cursor = time.monotonic(), cursor
            tokens = f"{info.get('prompt_tokens', 0)} prompt tokens / {info.get('context_length', '?')}" if info else ""
            yield shown + [{"role": "assistant", "content": prefix + text}], cid, job.id, f"Replying… {tokens}"
        try:
            job.raise_for_error()
        except AtelierError as exc:
            raise gr_error(exc) from None
        result = job.result
        store = _store(self.studio)
        if not store.exists(cid):  # stopped while it waited in the queue: nothing was sent
            yield chatbot_messages(conv), conv_id if conv else None, None, "Stopped before the reply started"
            return
        try:
            store.update(cid, settings={**sampling, "system": system or ""})  # restored when it is opened
            saved = store.get(cid)
        except AtelierError as exc:
            raise gr_error(exc) from None
        yield chatbot_messages(saved), cid, None, stats_text(result.stats() if result is not None else None)


def gr_error(exc):
    """An AtelierError (or any message) → gr.Error with its text; the tab never shows a traceback."""
    import gradio as gr

    return gr.Error(str(exc))


def build(studio) -> dict:
    import gradio as gr

    h = ChatHandlers(studio)
    c: dict = {"_handlers": h}
    with gr.Row(equal_height=False):
        with gr.Column(scale=1, min_width=260):
            c["model"] = gr.Dropdown([], label="Model", elem_id="chat_model", allow_custom_value=True)
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
            c["chatbot"] = gr.Chatbot([], label="Chat", height=520, elem_id="chat_chatbot", feedback_options=None)
            c["stats"] = gr.Markdown("", elem_id="chat_stats")
            c["message"] = gr.MultimodalTextbox(
                placeholder="Message… (Enter sends, Shift+Enter: new line; attach images for image+text models)",
                lines=1, max_lines=12, file_types=["image"], file_count="multiple", show_label=False,
                elem_id="chat_message", submit_btn=True)
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
        return gr.Dropdown(choices=_choices(studio), value=conv_id)

    def export_button(conv_id):
        if not conv_id or not _store(studio).exists(conv_id):
            return gr.DownloadButton(visible=False)
        import json

        data = _store(studio).export(conv_id)
        path = _files_dir() / f"conversation-{conv_id}.json"
        path.write_text(json.dumps(data, indent=1), encoding="utf-8")
        return gr.DownloadButton(value=str(path), visible=True)

    def title_of(conv_id):
        if not conv_id or not _store(studio).exists(conv_id):
            return ""
        return _store(studio).get(conv_id).summary()["title"]

    def after_reply(conv_id):
        return conv_list(conv_id), export_button(conv_id), title_of(conv_id)

    after_outs = [c["conversations"], c["export"], c["title"]]

    def send(box, conv_id, model, system, *values):
        try:
            message, files = h._user_message(box)
        except gr.Error:
            raise
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

    gr.on([c["message"].submit], send, [c["message"], c["conv_id"], c["model"], c["system"], *sampling],
          [*reply_outs, c["message"]], concurrency_id="chat", api_name="chat", show_progress="hidden"
          ).then(after_reply, [c["conv_id"]], after_outs, queue=False, api_visibility="private")

    def regenerate(conv_id, model, system, *values):
        if not conv_id:
            raise gr.Error("There is no reply to regenerate yet")
        yield from h.run(conv_id, model, system, values, drop_last_reply=True, new_seed=True)

    def continue_(conv_id, model, system, *values):
        if not conv_id:
            raise gr.Error("There is no reply to continue yet")
        yield from h.run(conv_id, model, system, values, continue_final=True)

    for button, fn in ((c["regenerate"], regenerate), (c["continue"], continue_)):
        button.click(fn, [c["conv_id"], c["model"], c["system"], *sampling], reply_outs, concurrency_id="chat",
                     api_visibility="private", show_progress="hidden"
                     ).then(after_reply, [c["conv_id"]], after_outs, queue=False, api_visibility="private")

    def stop(job_id):
        if job_id:
            try:
                studio.jobs.interrupt(job_id)
            except AtelierError:
                pass  # already finished and forgotten: nothing to stop

    c["stop_btn"].click(stop, [c["job_id"]], None, queue=False, api_visibility="private")

    def remove_last(conv_id):
        store = _store(studio)
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

    def new_chat():
        return [], None, "", conv_list(None), gr.DownloadButton(visible=False), ""

    c["new"].click(new_chat, None, [c["chatbot"], c["conv_id"], c["stats"], c["conversations"], c["export"],
                                    c["title"]], queue=False, api_visibility="private")

    def open_conversation(conv_id):
        keep = [gr.update() for _ in SAMPLING]
        if not conv_id:
            return (*new_chat()[:3], gr.DownloadButton(visible=False), "", gr.Textbox(), *keep)
        try:
            conv = _store(studio).get(conv_id)
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
            _store(studio).rename(conv_id, title)
        except AtelierError as exc:
            raise gr_error(exc) from None
        return conv_list(conv_id), export_button(conv_id)  # the export carries the new title

    c["rename"].click(rename, [c["conv_id"], c["title"]], [c["conversations"], c["export"]], queue=False,
                      api_visibility="private")

    def delete(conv_id):
        if not conv_id:
            raise gr.Error("Open a conversation first")
        try:
            _store(studio).delete(conv_id)
        except AtelierError as exc:
            raise gr_error(exc) from None
        return new_chat()

    c["delete"].click(delete, [c["conv_id"]], [c["chatbot"], c["conv_id"], c["stats"], c["conversations"],
                                               c["export"], c["title"]], queue=False, api_visibility="private")

    def import_(path):
        if not path:
            return gr.Dropdown(), None, gr.File(value=None)
        try:
            conv = _store(studio).import_(Path(path).read_bytes())
        except AtelierError as exc:
            raise gr_error(exc) from None
        gr.Info(f"Imported “{conv.summary()['title']}”")
        return conv_list(None), None, gr.File(value=None)

    c["import_file"].upload(import_, [c["import_file"]], [c["conversations"], c["conv_id"], c["import_file"]],
                            queue=False, api_visibility="private")

    def show(model, conv_id):
        models = _model_choices(studio)
        names = [v for _, v in models]
        chosen = model if model in names else (names[0] if names else None)
        return gr.Dropdown(choices=models, value=chosen), conv_list(conv_id)

    c["_on_show"] = (show, [c["model"], c["conv_id"]], [c["model"], c["conversations"]])
    return c


def register(studio) -> None:
    studio.tabs.add(TabSpec("Chat", build, order=35, elem_id="tab_chat"))

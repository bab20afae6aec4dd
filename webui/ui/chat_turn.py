"""The Chat tab's turn: what the saved conversation looks like in a gr.Chatbot, the numbers under the
chat, and one reply as a "chat" job streamed into the Chatbot (cursor reads of the job's stream,
throttled to `ui_updates_per_second`). Plain functions and methods, so tests drive them without a
browser; chat.py lays out the tab and wires these to its events."""
from __future__ import annotations

import base64
import hashlib
import tempfile
import time
from pathlib import Path

from modules.errors import AtelierError

# The request fields the tab sends beside the messages (restored when a conversation is opened); the adapter last.
SAMPLING = ("temperature", "top_p", "top_k", "min_p", "repetition_penalty", "max_new_tokens", "seed", "stop", "adapter")


def conversation_store(studio):
    return studio.jobs.services_of("chat").conversations


def files_dir() -> Path:
    # Gradio serves files from the system temp dir; images of saved messages and exports are written there.
    d = Path(tempfile.gettempdir()) / "atelier-chat"
    d.mkdir(parents=True, exist_ok=True)
    return d


def _image_file(url: str) -> str | None:
    """A data: URL of a saved message → a PNG file the Chatbot can show (written once per image)."""
    if not isinstance(url, str) or "," not in url:
        return None
    data = url.split(",", 1)[1]
    path = files_dir() / (hashlib.sha1(data.encode("ascii", "ignore")).hexdigest()[:20] + ".png")
    if not path.exists():
        try:
            path.write_bytes(base64.b64decode(data))
        except (ValueError, OSError):
            return None
    return str(path)


def chatbot_messages(conv) -> list[dict]:
    """A saved conversation → gr.Chatbot's messages (the system prompt is in its own box)."""
    return [shown for _, shown in shown_with_origins(conv)]


def shown_with_origins(conv) -> list[tuple[tuple[int, int | None], dict]]:
    """Each Chatbot message with where it comes from: (the saved message's index, the part's index or None
    for plain text) — what an edit of the n-th shown message changes."""
    out: list = []
    if conv is None:
        return out
    for i, m in enumerate(conv.messages):
        if m.role != "system":
            out += [((i, j), shown) for j, shown in shown_parts(m)]
    return out


def shown_parts(m) -> list[tuple[int | None, dict]]:
    """One saved message → its Chatbot messages: the text, or one per image and text part."""
    if isinstance(m.content, str):
        return [(None, {"role": m.role, "content": m.content})]
    out = []
    for j, part in enumerate(m.content):
        if part.get("type") == "image":
            path = _image_file(part.get("image"))
            out.append((j, {"role": m.role, "content": {"path": path} if path else "(image)"}))
        elif part.get("text"):
            out.append((j, {"role": m.role, "content": part["text"]}))
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


def conversation_choices(studio) -> list[tuple[str, str]]:
    if not studio.ready.is_set():
        return []
    return [(f"{c['title']} ({c['messages']})", c["id"]) for c in conversation_store(studio).list()]


def adapter_choices(studio, model: str | None) -> list[tuple[str, str]]:
    """The PEFT adapters of models/LLM-loras made for `model` (an LLM LoRA the Train tab wrote), after "none"."""
    from modules.chat.choose import chat_models

    entry = next((e for e in chat_models(studio.registry) if e.name == model), None) if studio.ready.is_set() else None
    return [("none (the base model)", "")] + ([(a.name, a.name) for a in studio.registry.adapters_for(entry)]
                                              if entry else [])


def model_choices(studio) -> list[tuple[str, str]]:
    from modules.chat.choose import accepts_images, chat_models

    if not studio.ready.is_set():
        return []
    return [(e.name + (" (image+text)" if accepts_images(e) else ""), e.name) for e in chat_models(studio.registry)]


class ChatHandlers:
    """The tab's event functions (plain methods, so tests can drive them without a browser)."""

    def __init__(self, studio):
        self.studio = studio

    # -- building a request -----------------------------------------------------------------
    def _sampling(self, values) -> dict:
        d = dict(zip(SAMPLING, values))
        stops = [s for s in (d.pop("stop") or "").split("\n") if s]
        out = {k: v for k, v in d.items() if v is not None and (k != "adapter" or v)}  # "": the base model
        for k in ("top_k", "max_new_tokens", "seed"):
            if k in out:
                out[k] = int(out[k])
        return out | {"stop": stops}

    def _history(self, conv, system: str) -> list[dict]:
        saved = conv.messages if conv else []
        msgs = [m.model_dump(include={"role", "content"}) for m in saved if m.role != "system"]
        system = (system or "").strip()
        return ([{"role": "system", "content": system}] if system else []) + msgs

    def _conversation(self, conv_id):
        """The saved conversation, or a new id (the chat job creates the file with the first message, so a
        refused first message leaves no empty conversation behind)."""
        import uuid

        store = conversation_store(self.studio)
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
            continue_final=False, new_seed=False, shown_user=None, keep: int | None = None):
        """Submit the chat job and yield (chatbot, conv_id, job_id, stats) as the reply streams.

        `keep`: send only the saved conversation's first `keep` messages (then `extra_messages`): an edited
        message resent from there; the job saves the cut conversation before its reply."""
        import gradio as gr

        from modules.chat.params import ChatRequest, parse

        if not self.studio.ready.is_set():
            self.studio.wait_ready()
        sampling = self._sampling(sampling_values)
        if new_seed:
            sampling["seed"] = -1
        try:
            cid, conv = self._conversation(conv_id)
            if keep is not None and conv is not None:
                conv = conv.model_copy(update={"messages": conv.messages[:keep]})
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
        store = conversation_store(self.studio)
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

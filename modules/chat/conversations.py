"""Saved conversations: one JSON file per conversation in <data-dir>/chats/, written atomically.

Every change (a message sent, a reply finished or stopped, a rename) rewrites that one file with
modules/atomic.py (temporary file, fsync, rename), so a crash or kill -9 leaves either the old or
the new version — never half a file — and loses at most the reply being generated.
Images inside messages are kept as data: URLs, so an exported file is complete on its own.
"""
from __future__ import annotations

import json
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from modules import atomic
from modules.chat.params import CONVERSATION_ID, ChatMessage
from modules.errors import InvalidRequest, NotFound

FORMAT = "atelier-conversation"
VERSION = 1
MAX_TITLE = 200


class StoredMessage(BaseModel):
    """A message as saved: the ChatMessage fields (images as data: URLs) plus what the UI shows."""

    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "user", "assistant"]
    content: str | list[dict]
    meta: dict = Field(default_factory=dict)  # a reply's stats: tokens, tokens/s, seed, finish_reason…
    versions: list[str] = Field(default_factory=list)  # earlier texts of a regenerated reply, oldest first

    def to_chat(self) -> ChatMessage:
        return ChatMessage.model_validate({"role": self.role, "content": self.content})

    @classmethod
    def from_chat(cls, m: ChatMessage, **extra) -> "StoredMessage":
        return cls(**m.model_dump(mode="json"), **extra)

    def same_turn(self, other: "StoredMessage") -> bool:
        return self.role == other.role and self.content == other.content


class Conversation(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: str
    title: str = ""
    created_at: float = Field(default_factory=time.time)
    updated_at: float = Field(default_factory=time.time)
    model: str | None = None
    settings: dict = Field(default_factory=dict)  # the sampling settings last used (the tab restores them)
    messages: list[StoredMessage] = Field(default_factory=list)

    def chat_messages(self) -> list[ChatMessage]:
        return [m.to_chat() for m in self.messages]

    def summary(self) -> dict:
        return {"id": self.id, "title": self.title or _title_from(self.messages), "created_at": self.created_at,
                "updated_at": self.updated_at, "model": self.model, "messages": len(self.messages)}


class ConversationStore:
    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self._lock = threading.RLock()

    # -- one conversation -------------------------------------------------------
    def create(self, title: str = "", model: str | None = None, messages: list | None = None,
               settings: dict | None = None) -> Conversation:
        conv = Conversation(id=uuid.uuid4().hex[:16], title=_clean_title(title), model=model,
                            settings=settings or {}, messages=[_stored(m) for m in messages or []])
        return self._write(conv)

    def get(self, conversation_id: str) -> Conversation:
        path = self._path(conversation_id)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise NotFound(f"no saved conversation {conversation_id!r}", "conversation_id") from None
        except (OSError, ValueError) as exc:
            raise InvalidRequest(f"conversation {conversation_id!r} cannot be read ({exc})", "conversation_id") from None
        return Conversation.model_validate(data)

    def exists(self, conversation_id: str) -> bool:
        return self._path(conversation_id).exists()

    def update(self, conversation_id: str, **changes) -> Conversation:
        """Change title, model, settings or messages (StoredMessage, ChatMessage or dicts) and save."""
        with self._lock:
            conv = self.get(conversation_id)
            if "title" in changes:
                changes["title"] = _clean_title(changes["title"])
            if "messages" in changes:
                changes["messages"] = [_stored(m) for m in changes["messages"]]
            unknown = set(changes) - {"title", "model", "settings", "messages"}
            if unknown:
                raise InvalidRequest(f"a conversation has no field {sorted(unknown)[0]!r}", sorted(unknown)[0])
            return self._write(conv.model_copy(update=changes))

    def rename(self, conversation_id: str, title: str) -> Conversation:
        return self.update(conversation_id, title=title)

    def delete(self, conversation_id: str) -> None:
        try:
            self._path(conversation_id).unlink()
        except FileNotFoundError:
            raise NotFound(f"no saved conversation {conversation_id!r}", "conversation_id") from None

    # -- what the chat job does -------------------------------------------------------
    def begin_reply(self, conversation_id: str, messages: list[ChatMessage], model: str | None = None) -> list[str]:
        """Save the conversation as sent (the user's new message is on disk before the reply starts).

        Sending the history without its last reply is a regenerate: the earlier reply's texts are
        returned, to be kept as the new reply's `versions`."""
        with self._lock:
            conv = self.get(conversation_id) if self.exists(conversation_id) else None
            sent = [StoredMessage.from_chat(m) for m in messages]
            versions: list[str] = []
            if conv is not None:
                old = conv.messages
                regenerate = (len(old) == len(sent) + 1 and old[-1].role == "assistant"
                              and all(a.same_turn(b) for a, b in zip(old, sent)))
                if regenerate:
                    versions = old[-1].versions + [_text(old[-1].content)]
                keep = {i: m for i, m in enumerate(old[:len(sent)]) if m.same_turn(sent[i])}
                sent = [keep.get(i, m) for i, m in enumerate(sent)]  # unchanged messages keep their stats
            else:
                conv = Conversation(id=conversation_id)
            self._write(conv.model_copy(update={"messages": sent, "model": model or conv.model}))
            return versions

    def finish_reply(self, conversation_id: str, text: str, meta: dict, versions: list[str] = (),
                     continued: bool = False) -> Conversation:
        """Append the reply (or, continuing, extend the last message) and save."""
        with self._lock:
            conv = self.get(conversation_id)
            messages = list(conv.messages)
            if continued and messages and messages[-1].role == "assistant":
                last = messages[-1]
                messages[-1] = last.model_copy(update={"content": _text(last.content) + text, "meta": meta})
            else:
                messages.append(StoredMessage(role="assistant", content=text, meta=meta, versions=list(versions)))
            return self._write(conv.model_copy(update={"messages": messages}))

    # -- many ----------------------------------------------------------------------------
    def list(self) -> list[dict]:
        """Summaries, most recently changed first; unreadable files are skipped."""
        rows = []
        if not self.folder.is_dir():
            return rows
        for path in self.folder.glob("*.json"):
            try:
                rows.append(Conversation.model_validate_json(path.read_text(encoding="utf-8")).summary())
            except (OSError, ValueError, ValidationError):
                continue
        return sorted(rows, key=lambda r: r["updated_at"], reverse=True)

    def export(self, conversation_id: str) -> dict:
        """The conversation as a self-contained JSON object (what import_ reads back)."""
        return {"format": FORMAT, "version": VERSION, **self.get(conversation_id).model_dump(mode="json")}

    def import_(self, data: dict | str | bytes) -> Conversation:
        """A conversation exported before (here or elsewhere), saved under a new id."""
        if isinstance(data, (str, bytes)):
            try:
                data = json.loads(data)
            except ValueError as exc:
                raise InvalidRequest(f"not a JSON file ({exc})", "file") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise InvalidRequest(f"not an exported conversation (expected \"format\": \"{FORMAT}\")", "file")
        try:
            conv = Conversation.model_validate({**data, "id": uuid.uuid4().hex[:16]})
            for m in conv.messages:
                m.to_chat()  # the parts must be real text/image parts
        except ValidationError as exc:
            err = exc.errors(include_url=False)[0]
            raise InvalidRequest(f"the file's {'.'.join(map(str, err['loc']))}: {err['msg']}", "file") from None
        return self._write(conv.model_copy(update={"title": _clean_title(conv.title)}))

    # -- files ----------------------------------------------------------------------------
    def remove_stale_temporaries(self) -> int:
        return atomic.remove_stale_temporaries(self.folder)

    def _path(self, conversation_id: str) -> Path:
        if not isinstance(conversation_id, str) or not CONVERSATION_ID.match(conversation_id):
            raise InvalidRequest("a conversation id holds only letters, digits, - and _", "conversation_id")
        return self.folder / f"{conversation_id}.json"

    def _write(self, conv: Conversation) -> Conversation:
        conv = conv.model_copy(update={"updated_at": time.time()})
        with self._lock:
            atomic.write_text(self._path(conv.id), conv.model_dump_json(indent=1) + "\n")
        return conv


def _stored(m: Any) -> StoredMessage:
    if isinstance(m, StoredMessage):
        return m
    if isinstance(m, ChatMessage):
        return StoredMessage.from_chat(m)
    if isinstance(m, dict):
        return StoredMessage.from_chat(ChatMessage.model_validate({k: m[k] for k in ("role", "content") if k in m}),
                                       meta=m.get("meta") or {}, versions=m.get("versions") or [])
    raise InvalidRequest("a message is {role, content}", "messages")


def _text(content) -> str:
    return content if isinstance(content, str) else "".join(p.get("text", "") for p in content if isinstance(p, dict))


def _clean_title(title: str) -> str:
    return " ".join(str(title or "").split())[:MAX_TITLE]


def _title_from(messages: list[StoredMessage]) -> str:
    first = next((m for m in messages if m.role == "user"), None)
    return _clean_title(_text(first.content))[:60] if first else "New chat"

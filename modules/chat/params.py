"""Typed chat and completion requests — the one place chat input is validated — and the result.

The Chat tab, the OpenAI-compatible API and extensions build the same objects, so bad input is
refused here with one kind of error naming the field. Images travel inside messages as parts
(PIL images; base64 or data: URLs are decoded on the way in) and are written back as data: URLs.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, Union

from pydantic import (BaseModel, BeforeValidator, ConfigDict, Discriminator, Field, PlainSerializer, Tag,
                      ValidationError, field_validator, model_validator)

from modules.errors import FieldError, InvalidRequest
from modules.images import decode_image

MAX_TEXT_CHARS = 1_000_000  # a long document pasted in; the context check decides what fits
MAX_MESSAGES = 10_000
MAX_NEW_TOKENS = 32_768
MAX_STOP_STRINGS = 16
CONVERSATION_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
Role = Literal["system", "user", "assistant"]


def _image(value):
    try:
        return decode_image(value)
    except ValueError as exc:
        raise ValueError(f"image {exc}") from None


def _data_url(image) -> str:
    from modules.images import encode_png_base64

    return "data:image/png;base64," + encode_png_base64(image)


ImageInput = Annotated[Any, BeforeValidator(_image), PlainSerializer(_data_url, return_type=str, when_used="json")]


class TextPart(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["text"] = "text"
    text: str = Field(..., max_length=MAX_TEXT_CHARS)


class ImagePart(BaseModel):
    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    type: Literal["image"] = "image"
    image: ImageInput = Field(..., description="a PIL image, base64 or a data: URL of a PNG/JPEG/WebP")


Part = Annotated[Union[TextPart, ImagePart], Field(discriminator="type")]


def _content_kind(value) -> str | None:
    return "str" if isinstance(value, str) else "list" if isinstance(value, list) else None


# A tagged union, so a bad part is reported as that part's error (not as "should be a valid string").
Content = Annotated[Union[Annotated[str, Tag("str")], Annotated[list[Part], Tag("list")]],
                    Discriminator(_content_kind, custom_error_type="content_type",
                                  custom_error_message="content must be a string or a list of parts")]


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Role
    content: Content = Field(..., description="text, or a list of text and image parts")

    @field_validator("content")
    @classmethod
    def _not_empty_list(cls, value):
        if isinstance(value, list) and not value:
            raise ValueError("content must not be an empty list; send a string or at least one part")
        if isinstance(value, str) and len(value) > MAX_TEXT_CHARS:
            raise ValueError(f"content is longer than {MAX_TEXT_CHARS} characters")
        return value

    @property
    def text(self) -> str:
        """The text parts joined (images left out)."""
        if isinstance(self.content, str):
            return self.content
        return "".join(p.text for p in self.content if isinstance(p, TextPart))

    @property
    def images(self) -> list:
        return [] if isinstance(self.content, str) else [p.image for p in self.content if isinstance(p, ImagePart)]


class ResponseFormat(BaseModel):
    """OpenAI's response_format: plain text, any JSON object, or JSON matching a schema."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["text", "json_object", "json_schema"] = "text"
    json_schema: dict | None = Field(None, description="the JSON schema itself (type json_schema)")

    @model_validator(mode="after")
    def _check_schema(self):
        if self.type != "json_schema":
            return self
        if not isinstance(self.json_schema, dict) or not self.json_schema:
            raise _at("response_format.json_schema", "json_schema needs a schema object")
        from jsonschema import SchemaError
        from jsonschema.validators import validator_for

        try:
            validator_for(self.json_schema).check_schema(self.json_schema)
        except SchemaError as exc:
            raise _at("response_format.json_schema", f"json_schema is not a valid JSON schema: {exc.message}") from None
        return self

    @property
    def schema(self) -> dict | None:
        """The schema decoding follows; None for plain text."""
        if self.type == "json_object":
            return {"type": "object"}
        return self.json_schema if self.type == "json_schema" else None


class Sampling(BaseModel):
    """What chat and plain completions share: the model, sampling, stops, structure, the cache."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    model: str | None = Field(None, max_length=512, description="a name in models/LLM or models/VLM; None: the default")
    kind: Literal["llm", "vlm"] | None = Field(None, description="where to look the model up; None: LLM, then VLM")
    adapter: str | None = Field(None, max_length=200, description="a PEFT adapter of models/LLM-loras made for this "
                                                                  "model (an LLM LoRA the Train tab wrote); None: "
                                                                  "the base model")
    temperature: float = Field(1.0, ge=0.0, le=2.0, description="0: greedy")
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    top_k: int = Field(0, ge=0, le=100_000, description="0: off")
    min_p: float = Field(0.0, ge=0.0, le=1.0, description="0: off")
    repetition_penalty: float = Field(1.0, gt=0.0, le=3.0, description="1: off")
    max_new_tokens: int = Field(512, ge=1, le=MAX_NEW_TOKENS)
    seed: int = Field(-1, ge=-1, le=2**63 - 1, description="-1 picks a random seed (reported in the result)")
    stop: list[str] = Field(default_factory=list, max_length=MAX_STOP_STRINGS,
                            description="the reply ends before the first of these strings")
    response_format: ResponseFormat | None = None
    context_tokens: int | None = Field(None, ge=16, le=10_000_000,
                                       description="fit the prompt into this many tokens (default: the model's context)")
    reuse_cache: bool = Field(True, description="reuse the KV cache of this conversation's shared prefix")
    cache_key: str | None = Field(None, max_length=200, description="which prefix cache to use (default: the "
                                                                    "conversation id, else one shared slot)")

    @field_validator("stop")
    @classmethod
    def _stops(cls, value):
        for i, s in enumerate(value):
            if not s:
                raise ValueError(f"stop[{i}] is empty; every stop string needs at least one character")
            if len(s) > 500:
                raise ValueError(f"stop[{i}] is longer than 500 characters")
        return value

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


class ChatRequest(Sampling):
    """One reply to a conversation (job kind "chat")."""

    messages: list[ChatMessage] = Field(..., min_length=1, max_length=MAX_MESSAGES)
    continue_final: bool = Field(False, description="extend the last (assistant) message instead of answering it")
    conversation_id: str | None = Field(None, description="save the messages and the reply in this saved "
                                                          "conversation (ConversationStore)")

    @field_validator("conversation_id")
    @classmethod
    def _conversation_id(cls, value):
        if value is not None and not CONVERSATION_ID.match(value):
            raise ValueError("conversation_id may hold only letters, digits, - and _ (1 to 64)")
        return value

    @model_validator(mode="after")
    def _check_roles(self):
        msgs = self.messages
        for i, m in enumerate(msgs):
            if m.role == "system" and i != 0:
                raise _at(f"messages.{i}.role", "a system message must come first (there is one system prompt)")
        turns = [(i, m) for i, m in enumerate(msgs) if m.role != "system"]
        if not turns:
            raise _at("messages", "send at least one user message after the system prompt")
        if turns[0][1].role != "user":
            raise _at(f"messages.{turns[0][0]}.role", "the first message after the system prompt must be the user's")
        last = msgs[-1].role
        if self.continue_final and last != "assistant":
            raise _at("continue_final", "continue_final extends the last message, which must be the assistant's")
        if not self.continue_final and last != "user":
            raise _at(f"messages.{len(msgs) - 1}.role", "the last message must be the user's (or set continue_final "
                                                        "to extend the assistant's)")
        return self

    @property
    def has_images(self) -> bool:
        return any(m.images for m in self.messages)

    @property
    def prefix_key(self) -> str:
        return self.cache_key or (f"conversation:{self.conversation_id}" if self.conversation_id else "chat")


class CompletionRequest(Sampling):
    """A plain-text continuation of a prompt, no chat template (job kind "completion")."""

    prompt: str = Field(..., max_length=MAX_TEXT_CHARS)
    max_new_tokens: int = Field(16, ge=1, le=MAX_NEW_TOKENS, description="OpenAI's default for completions")

    @property
    def has_images(self) -> bool:
        return False

    @property
    def prefix_key(self) -> str:
        return self.cache_key or "completion"


def _at(loc: str, message: str) -> FieldError:
    return FieldError(loc, message)


def parse(cls: type[BaseModel], data: Any):
    """A dict (JSON body, UI values) → the request; InvalidRequest names the field."""
    if isinstance(data, cls):
        return data
    if not isinstance(data, dict):
        raise InvalidRequest("the request must be a JSON object", "body")
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        raise from_pydantic(exc) from None


def from_pydantic(exc: ValidationError) -> InvalidRequest:
    err = exc.errors(include_url=False)[0]
    cause = (err.get("ctx") or {}).get("error")
    loc = cause.field if isinstance(cause, FieldError) else _loc(err.get("loc", ()))
    msg = str(cause) if isinstance(cause, FieldError) else err.get("msg", "is invalid")
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    return InvalidRequest(msg, loc)


def _loc(parts: tuple) -> str:
    """pydantic's location without the union tags: ("messages", 0, "content", "list", 1, "image", "image")
    → "messages.0.content.1.image"."""
    out: list[str] = []
    for i, p in enumerate(parts):
        if p in ("str", "list") and i and parts[i - 1] == "content":
            continue
        if out and str(p) == out[-1] and isinstance(p, str):
            continue
        out.append(str(p))
    return ".".join(out) or "body"


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0  # prompt tokens whose KV came from the prefix cache (not computed again)

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass
class ChatResult:
    """A finished reply (also an interrupted one: `text` holds what was generated)."""

    text: str
    finish_reason: Literal["stop", "length"]
    usage: Usage
    model: str
    kind: str
    seed: int
    interrupted: bool = False
    seconds: float = 0.0
    time_to_first_token: float | None = None  # from the job's start to the first generated token
    tokens_per_second: float | None = None  # decode rate after the first token
    dropped_messages: int = 0  # oldest turns left out so the prompt fits the context
    context_length: int = 0
    conversation_id: str | None = None
    stopped_by: str | None = None  # "eos", "stop_string", "length", "interrupt", "grammar"

    def stats(self) -> dict:
        """What the Chat tab shows under the chat, and what a saved reply keeps."""
        return {"finish_reason": self.finish_reason, "interrupted": self.interrupted, "seed": self.seed,
                "model": self.model, "prompt_tokens": self.usage.prompt_tokens,
                "completion_tokens": self.usage.completion_tokens, "cached_tokens": self.usage.cached_tokens,
                "context_length": self.context_length, "dropped_messages": self.dropped_messages,
                "time_to_first_token": self.time_to_first_token, "tokens_per_second": self.tokens_per_second,
                "seconds": round(self.seconds, 4)}


@dataclass
class ChatStreamPiece:
    """What the `chat_stream` hook receives for each piece of text as it is produced."""

    job_id: str
    text: str
    index: int  # 0, 1, 2… within the reply
    model: str
    conversation_id: str | None = None
    extra: dict = field(default_factory=dict)

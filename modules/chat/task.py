"""The chat task: replies to conversations ("chat") and plain completions ("completion") as jobs on
the "chat" queue, so a reply runs while an image batch renders (whether both models fit is the
model manager's call)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from modules.jobs import JobKind

if TYPE_CHECKING:
    from modules.chat.cache import PrefixCache
    from modules.chat.conversations import ConversationStore
    from modules.chat.presets import SystemPromptPresets
    from modules.chat.structured import GrammarTokenizers
    from modules.extensions.hooks import HookRegistry
    from modules.models.manager import ModelManager
    from modules.models.registry import ModelRegistry
    from modules.settings import SettingsStore
    from modules.tasks import Registrar

QUEUE = "chat"
CHATS_FOLDER = "chats"  # <data-dir>/chats/<id>.json
PRESETS_FILE = "system_prompts.json"  # <data-dir>/system_prompts.json: the Chat tab's system prompt presets


@dataclass(frozen=True)
class ChatServices:
    """What a chat job sees of the studio."""

    models: "ModelManager"
    registry: "ModelRegistry"
    hooks: "HookRegistry"
    settings: "SettingsStore"
    conversations: "ConversationStore"
    prefix_cache: "PrefixCache"
    presets: "SystemPromptPresets"
    grammars: "GrammarTokenizers" = field(repr=False, default=None)


def build_services(reg: "Registrar") -> ChatServices:
    from modules.chat.cache import PrefixCache
    from modules.chat.conversations import ConversationStore
    from modules.chat.presets import SystemPromptPresets
    from modules.chat.structured import GrammarTokenizers

    prefix = PrefixCache()
    # A cache's keys/values belong to one copy of the weights on one device: forget them when it goes.
    reg.models.add_release_listener(lambda loaded: prefix.forget_model(getattr(loaded.handle, "model", None)))
    return ChatServices(models=reg.models, registry=reg.registry, hooks=reg.hooks, settings=reg.settings,
                        conversations=ConversationStore(reg.paths.root / CHATS_FOLDER), prefix_cache=prefix,
                        presets=SystemPromptPresets(reg.paths.root / PRESETS_FILE), grammars=GrammarTokenizers())


def register(reg: "Registrar") -> None:
    from modules.chat.run import run_chat, run_completion, validator

    services = build_services(reg)
    validate = validator(services)
    reg.add_job_kind(JobKind("chat", run_chat, queue=QUEUE, validate=validate), services)
    reg.add_job_kind(JobKind("completion", run_completion, queue=QUEUE, validate=validate), services)
    reg.on_load(services.conversations.remove_stale_temporaries)  # leftovers of a write a kill interrupted

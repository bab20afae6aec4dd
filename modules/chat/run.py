"""The chat and completion jobs, in order:

  before_chat hook (may edit the messages) → check again → save the conversation as sent →
  the model from the manager (`with models.use(kind, name) as lm`) → prompt (template, overflow)
  → generate, streaming {"text": piece} into the job (and the chat_stream hook) → after_chat hook
  (may edit the text) → save the reply → ChatResult.

The stream's first piece is {"prompt": {…}} (tokens, context, dropped turns), then text pieces.
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING, Callable

from modules.chat import choose, prompt as prompts, structured
from modules.chat.params import ChatRequest, ChatResult, ChatStreamPiece, CompletionRequest, Usage, parse
from modules.errors import InvalidRequest

if TYPE_CHECKING:
    from modules.chat.task import ChatServices
    from modules.jobs import JobContext


def validator(services: "ChatServices"):
    """Submit-time checks the types cannot make alone: the model exists, images only for a model that
    reads them, a schema llguidance can enforce."""
    def validate(req) -> None:
        if not isinstance(req, (ChatRequest, CompletionRequest)):
            raise InvalidRequest("send a ChatRequest or a CompletionRequest", "request")
        entry = choose.find(services.registry, services.models, req.model, req.kind, req.has_images)
        if req.has_images and not choose.accepts_images(entry):
            i, j = _first_image(req)
            raise InvalidRequest(f"{entry.name} reads text only; remove the image or choose an image+text model "
                                 "(models/VLM)", f"messages.{i}.content.{j}")
        choose.adapter_of(services.registry, entry, req.adapter)
        structured.grammar(req.response_format)
    return validate


def run_chat(ctx: "JobContext", req: ChatRequest) -> ChatResult:
    services: "ChatServices" = ctx.services
    started = time.perf_counter()
    original = req
    req = services.hooks.before_chat(req)
    validator(services)(req)  # a hook may have changed the request
    entry = choose.find(services.registry, services.models, req.model, req.kind, req.has_images)
    versions: list[str] = []
    if req.conversation_id:
        versions = services.conversations.begin_reply(req.conversation_id, original.messages, entry.name)
    adapter = choose.adapter_of(services.registry, entry, req.adapter)
    with services.models.use(entry.kind, entry.name) as lm, lm.adapter_active(*adapter):
        prompt = prompts.render_chat(lm, req.messages, req.continue_final, req.context_tokens, req.max_new_tokens)
        result = _generate(ctx, services, req, entry, lm, prompt, started)
    result = services.hooks.after_chat(result)
    if req.conversation_id:
        services.conversations.finish_reply(req.conversation_id, result.text, result.stats(), versions,
                                            continued=req.continue_final)
    return result


def run_completion(ctx: "JobContext", req: CompletionRequest) -> ChatResult:
    services: "ChatServices" = ctx.services
    started = time.perf_counter()
    validator(services)(req)
    entry = choose.find(services.registry, services.models, req.model, req.kind)
    adapter = choose.adapter_of(services.registry, entry, req.adapter)
    with services.models.use(entry.kind, entry.name) as lm, lm.adapter_active(*adapter):
        prompt = prompts.render_completion(lm, req.prompt, req.context_tokens, req.max_new_tokens)
        return _generate(ctx, services, req, entry, lm, prompt, started)


def answer_once(lm, messages: list[dict], max_new_tokens: int,
                interrupted: Callable[[], bool] | None = None) -> str:
    """One greedy reply on a model the caller already holds: the chat job's own template rendering and
    generation, without a conversation, hooks or prefix cache. Another task reaches it through the
    registrar (modules/tasks.py), never by import: the vision task's free question to Gemma 3."""
    from modules.chat.generate import run_generation

    req = parse(ChatRequest, {"messages": messages, "temperature": 0, "max_new_tokens": max_new_tokens,
                              "reuse_cache": False})
    prompt = prompts.render_chat(lm, req.messages, False, None, req.max_new_tokens)
    gen = run_generation(lm, prompt, req, emit=lambda _piece: None, interrupted=interrupted or (lambda: False),
                         started=time.perf_counter(), prefix=None, cache_key=(), grammars=None)
    return gen.text.strip()


def _generate(ctx, services: "ChatServices", req, entry, lm, prompt, started: float) -> ChatResult:
    from modules.chat.generate import run_generation

    conversation_id = getattr(req, "conversation_id", None)
    ctx.emit({"prompt": {"prompt_tokens": len(prompt), "context_length": prompt.context_length,
                         "dropped_messages": prompt.dropped_messages, "model": entry.name}})
    if prompt.dropped_messages:
        ctx.log(f"{prompt.dropped_messages} oldest messages left out to fit the context of {prompt.context_length}")
    streaming_hooks = bool(services.hooks.handlers("chat_stream"))
    count = 0

    def emit(text: str) -> None:
        nonlocal count
        ctx.emit({"text": text})
        if streaming_hooks:
            services.hooks.chat_stream(ChatStreamPiece(ctx.job.id, text, count, entry.name, conversation_id))
        count += 1

    # The KV prefix depends on the weights: another adapter is another prefix (the model object is checked too).
    key = (req.prefix_key, entry.kind, str(entry.path), req.adapter)
    gen = run_generation(lm, prompt, req, emit=emit, interrupted=lambda: ctx.interrupted, started=started,
                         prefix=services.prefix_cache if req.reuse_cache else None, cache_key=key,
                         grammars=services.grammars)
    ctx.progress(gen.completion_tokens, req.max_new_tokens, text=f"{gen.completion_tokens} tokens")
    return ChatResult(
        text=gen.text, finish_reason="length" if gen.stopped_by == "length" else "stop",
        usage=Usage(len(prompt), gen.completion_tokens, gen.cached_tokens), model=entry.name, kind=entry.kind,
        seed=gen.seed, interrupted=gen.stopped_by == "interrupt", seconds=time.perf_counter() - started,
        time_to_first_token=gen.time_to_first_token, tokens_per_second=gen.tokens_per_second,
        dropped_messages=prompt.dropped_messages, context_length=prompt.context_length,
        conversation_id=conversation_id, stopped_by=gen.stopped_by)


def _first_image(req: ChatRequest) -> tuple[int, int]:
    for i, m in enumerate(req.messages):
        if not isinstance(m.content, str):
            for j, p in enumerate(m.content):
                if p.type == "image":
                    return i, j
    return 0, 0

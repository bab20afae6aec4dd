"""A conversation → the model's prompt tokens, rendered by the model's own chat template.

- The template is the tokenizer's (or, for image+text models, the processor's) Jinja chat template,
  through `apply_chat_template`; never a hand-made format.
- A template without a system role (Gemma 2's raises on one) gets the system prompt folded into the
  first user turn, as Google's docs do (Gemma 3's template does the same itself).
- The rendered text already holds `<bos>`: it is tokenized with add_special_tokens=False.
- Context overflow: the oldest turns go first (never the system prompt) until the prompt and room
  for the reply fit; when even the last message does not fit, the request is refused (`messages`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from modules.errors import InvalidRequest

if TYPE_CHECKING:
    from modules.chat.params import ChatMessage
    from modules.models.hf import LanguageModel

DEFAULT_CONTEXT = 8192  # a model whose config names no context length


@dataclass
class Prompt:
    input_ids: list[int]
    text: str  # what the template rendered (special tokens included)
    context_length: int
    dropped_messages: int = 0
    model_inputs: dict = field(default_factory=dict)  # pixel_values, token_type_ids… (image+text models)
    image_token_id: int | None = None  # where image features go in input_ids (prefix reuse must not cut an image)

    def __len__(self) -> int:
        return len(self.input_ids)


def context_length(lm: "LanguageModel", asked: int | None) -> int:
    own = lm.info.context_length or DEFAULT_CONTEXT
    return min(own, asked) if asked else own


def reply_room(max_new_tokens: int, context: int) -> int:
    """Tokens kept free for the reply when fitting the history: what was asked, at most half the context."""
    return min(max_new_tokens, context // 2)


def render_chat(lm: "LanguageModel", messages: list["ChatMessage"], continue_final: bool = False,
                context_tokens: int | None = None, max_new_tokens: int = 512) -> Prompt:
    """The prompt for the reply to `messages` (or the continuation of the last, assistant, one)."""
    if not lm.info.has_chat_template:
        raise InvalidRequest(f"this {lm.info.model_type} model has no chat template; use a plain completion "
                             "(POST /v1/completions) or an instruction-tuned model", "model")
    _check_images(lm, messages)
    context = context_length(lm, context_tokens)
    budget = context - reply_room(max_new_tokens, context)
    system = [m for m in messages if m.role == "system"]
    turns = [m for m in messages if m.role != "system"]
    # Never drop into the middle of the last exchange: the last user message (and, continuing, the reply after it).
    last_user = max(i for i, m in enumerate(turns) if m.role == "user")
    drop = 0
    while True:
        kept = turns[drop:]
        prompt = _render(lm, system + kept, continue_final, context)
        if len(prompt) <= budget:
            prompt.dropped_messages = drop
            return prompt
        if drop >= last_user:
            what = "the system prompt and the last message" if system else "the last message"
            raise InvalidRequest(f"{what} alone take {len(prompt)} tokens; the model's context holds {context} "
                                 f"with {context - budget} kept for the reply: shorten the message or lower "
                                 "max_new_tokens", "messages")
        drop += 1
        while drop < last_user and turns[drop].role != "user":  # a kept history starts with a user turn
            drop += 1


def render_completion(lm: "LanguageModel", text: str, context_tokens: int | None = None,
                      max_new_tokens: int = 16) -> Prompt:
    """A plain prompt: no template, so the tokenizer adds its own special tokens (Gemma's <bos>)."""
    context = context_length(lm, context_tokens)
    ids = lm.tokenizer(text, add_special_tokens=True)["input_ids"]
    budget = context - reply_room(max_new_tokens, context)
    if len(ids) > budget:
        raise InvalidRequest(f"the prompt takes {len(ids)} tokens; the model's context holds {context} with "
                             f"{context - budget} kept for the reply: shorten it or lower max_tokens", "prompt")
    return Prompt(list(ids), text, context)


def _check_images(lm: "LanguageModel", messages: list["ChatMessage"]) -> None:
    if lm.info.accepts_images:
        return
    for i, m in enumerate(messages):
        if m.images:
            j = next(j for j, p in enumerate(m.content) if p.type == "image")
            raise InvalidRequest(f"this model ({lm.info.model_type}) reads text only; remove the image or choose an "
                                 "image+text model (models/VLM)", f"messages.{i}.content.{j}")


def _render(lm: "LanguageModel", messages: list["ChatMessage"], continue_final: bool, context: int) -> Prompt:
    images = [img for m in messages for img in m.images]
    renderer = lm.processor if lm.processor is not None and getattr(lm.processor, "chat_template", None) \
        else lm.tokenizer
    convo = _merge_same_role([_template_message(m, lm.info.accepts_images) for m in messages])
    if convo and convo[0]["role"] == "system" and not _takes_system_role(renderer):
        convo = _fold_system(convo)
    text = renderer.apply_chat_template(convo, tokenize=False, add_generation_prompt=not continue_final,
                                        continue_final_message=continue_final)
    if not images:
        ids = lm.tokenizer(text, add_special_tokens=False)["input_ids"]
        return Prompt(list(ids), text, context)
    batch = lm.processor(text=text, images=images, add_special_tokens=False, return_tensors="pt")
    extra = {k: v for k, v in batch.items() if k not in ("input_ids", "attention_mask")}
    return Prompt(batch["input_ids"][0].tolist(), text, context, model_inputs=extra,
                  image_token_id=_image_token_id(lm))


def _template_message(m: "ChatMessage", parts: bool) -> dict[str, Any]:
    """Templates of image+text models take a list of parts; text-only templates take a string."""
    if isinstance(m.content, str) or not parts:
        return {"role": m.role, "content": m.text}
    return {"role": m.role, "content": [{"type": "image"} if p.type == "image" else {"type": "text", "text": p.text}
                                        for p in m.content]}


def _merge_same_role(convo: list[dict]) -> list[dict]:
    """Two user messages in a row become one (Gemma's templates require user/model alternation)."""
    out: list[dict] = []
    for m in convo:
        if out and out[-1]["role"] == m["role"] and m["role"] != "system":
            out[-1] = {"role": m["role"], "content": _join(out[-1]["content"], m["content"])}
        else:
            out.append(dict(m))
    return out


def _join(a, b):
    if isinstance(a, str) and isinstance(b, str):
        return a + "\n\n" + b
    as_parts = lambda c: [{"type": "text", "text": c}] if isinstance(c, str) else list(c)
    return as_parts(a) + [{"type": "text", "text": "\n\n"}] + as_parts(b)


def _takes_system_role(renderer) -> bool:
    """Whether the template renders a system turn (Gemma 2's raises "System role not supported")."""
    from jinja2.exceptions import TemplateError

    try:
        renderer.apply_chat_template([{"role": "system", "content": "s"}, {"role": "user", "content": "u"}],
                                     tokenize=False)
    except TemplateError:
        return False
    return True


def _fold_system(convo: list[dict]) -> list[dict]:
    system, rest = convo[0]["content"], [dict(m) for m in convo[1:]]
    system = system if isinstance(system, str) else "".join(p.get("text", "") for p in system)
    first = rest[0]
    if isinstance(first["content"], str):
        first["content"] = system + "\n\n" + first["content"]
    else:
        first["content"] = [{"type": "text", "text": system + "\n\n"}] + list(first["content"])
    return rest


def _image_token_id(lm: "LanguageModel") -> int | None:
    config = lm.model.config
    for name in ("image_token_id", "image_token_index"):
        value = getattr(config, name, None)
        if isinstance(value, int):
            return value
    return None

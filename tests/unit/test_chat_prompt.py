"""Prompts exactly as each model's chat template renders them: Gemma 2's system prompt folded into the
first user turn, Gemma 3's images, one <bos>, context overflow dropping the oldest turns (never the
system prompt), and the request types refusing bad input by field."""
from __future__ import annotations

import pytest

from modules.chat.params import ChatMessage, ChatRequest, parse
from modules.chat.prompt import render_chat, render_completion
from modules.errors import InvalidRequest
from tests.unit.chat_support import image_url


def msgs(*pairs):
    return [ChatMessage(role=r, content=c) for r, c in pairs]


def test_gemma2_system_prompt_is_folded_into_the_first_user_turn(gemma2):
    tok = gemma2.tokenizer
    history = msgs(("system", "You are terse."), ("user", "hello"), ("assistant", "hi"), ("user", "and now?"))
    prompt = render_chat(gemma2, history)
    folded = [{"role": "user", "content": "You are terse.\n\nhello"}, {"role": "assistant", "content": "hi"},
              {"role": "user", "content": "and now?"}]
    expected = tok.apply_chat_template(folded, tokenize=False, add_generation_prompt=True)
    assert prompt.text == expected
    assert prompt.text.startswith("<bos><start_of_turn>user\nYou are terse.\n\nhello<end_of_turn>\n")
    assert prompt.text.endswith("<start_of_turn>model\n")
    assert prompt.input_ids == tok(expected, add_special_tokens=False)["input_ids"]
    assert prompt.input_ids.count(tok.bos_token_id) == 1 and prompt.input_ids[0] == tok.bos_token_id
    assert prompt.dropped_messages == 0


def test_gemma2_template_itself_refuses_a_system_role(gemma2):
    """Why folding is needed: the shipped template raises on a system message."""
    from jinja2.exceptions import TemplateError

    with pytest.raises(TemplateError):
        gemma2.tokenizer.apply_chat_template([{"role": "system", "content": "s"}, {"role": "user", "content": "u"}],
                                             tokenize=False)


def test_consecutive_user_messages_are_joined(gemma2):
    prompt = render_chat(gemma2, msgs(("user", "one"), ("user", "two")))
    assert "<start_of_turn>user\none\n\ntwo<end_of_turn>" in prompt.text
    assert prompt.text.count("<start_of_turn>user") == 1


def test_gemma3_renders_images_and_its_own_system_folding(gemma3):
    proc = gemma3.processor
    history = [ChatMessage(role="system", content="Look closely."),
               ChatMessage.model_validate({"role": "user", "content": [
                   {"type": "image", "image": image_url()}, {"type": "text", "text": "what is it?"}]})]
    prompt = render_chat(gemma3, history)
    expected = proc.apply_chat_template(
        [{"role": "system", "content": "Look closely."},
         {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "what is it?"}]}],
        tokenize=False, add_generation_prompt=True)
    assert prompt.text == expected
    assert "<start_of_turn>user\nLook closely.\n\n<start_of_image>what is it?" in prompt.text
    image_token = gemma3.model.config.image_token_id
    assert prompt.input_ids.count(image_token) == gemma3.model.config.mm_tokens_per_image == 4
    assert prompt.input_ids.count(gemma3.tokenizer.bos_token_id) == 1
    assert prompt.model_inputs["pixel_values"].shape[0] == 1
    assert prompt.image_token_id == image_token


def test_text_only_model_refuses_an_image_naming_the_part(gemma2):
    history = [ChatMessage.model_validate({"role": "user", "content": [
        {"type": "text", "text": "see"}, {"type": "image", "image": image_url()}]})]
    with pytest.raises(InvalidRequest) as err:
        render_chat(gemma2, history)
    assert err.value.field == "messages.0.content.1"


def test_overflow_drops_the_oldest_turns_but_never_the_system_prompt(gemma2):
    tok = gemma2.tokenizer
    history = [("system", "SYSTEM-PROMPT")]
    for i in range(12):
        history += [("user", f"question {i} " + "words " * 30), ("assistant", f"answer {i} " + "text " * 30)]
    history.append(("user", "LAST-QUESTION"))
    whole = render_chat(gemma2, msgs(*history))
    context = len(whole) // 2 + 64
    prompt = render_chat(gemma2, msgs(*history), context_tokens=context, max_new_tokens=32)
    assert 0 < prompt.dropped_messages < 24 and prompt.dropped_messages % 2 == 0  # whole exchanges
    assert len(prompt) <= context - 32
    assert prompt.text.startswith("<bos><start_of_turn>user\nSYSTEM-PROMPT\n\n")
    assert "question 0 " not in prompt.text and "LAST-QUESTION" in prompt.text
    kept = prompt.dropped_messages // 2
    assert f"question {kept} " in prompt.text and f"question {kept - 1} " not in prompt.text
    assert prompt.input_ids == tok(prompt.text, add_special_tokens=False)["input_ids"]


def test_refused_when_the_last_message_alone_does_not_fit(gemma2):
    history = msgs(("system", "s"), ("user", "old"), ("assistant", "reply"), ("user", "long " * 200))
    with pytest.raises(InvalidRequest) as err:
        render_chat(gemma2, history, context_tokens=100, max_new_tokens=10)
    assert err.value.field == "messages"
    assert "100" in err.value.message


def test_continue_final_extends_the_assistant_message(gemma2):
    prompt = render_chat(gemma2, msgs(("user", "count"), ("assistant", "one two")), continue_final=True)
    assert prompt.text.endswith("<start_of_turn>model\none two")


def test_completion_prompt_gets_the_tokenizers_own_bos(gemma2):
    prompt = render_completion(gemma2, "Once upon")
    assert prompt.input_ids[0] == gemma2.tokenizer.bos_token_id
    assert prompt.input_ids.count(gemma2.tokenizer.bos_token_id) == 1
    with pytest.raises(InvalidRequest) as err:
        render_completion(gemma2, "word " * 300, context_tokens=64, max_new_tokens=8)
    assert err.value.field == "prompt"


@pytest.mark.parametrize("fields, field", [
    ({"messages": []}, "messages"),
    ({"messages": [{"role": "wizard", "content": "x"}]}, "messages.0.role"),
    ({"messages": [{"role": "user", "content": "a"}, {"role": "system", "content": "s"}]}, "messages.1.role"),
    ({"messages": [{"role": "assistant", "content": "a"}, {"role": "user", "content": "b"}]}, "messages.0.role"),
    ({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}, "messages.1.role"),
    ({"messages": [{"role": "user", "content": []}]}, "messages.0.content"),
    ({"messages": [{"role": "user", "content": [{"type": "image", "image": "not base64!"}]}]}, "messages.0.content"),
    ({"messages": [{"role": "user", "content": "a"}], "continue_final": True}, "continue_final"),
    ({"messages": [{"role": "user", "content": "a"}], "temperature": 2.5}, "temperature"),
    ({"messages": [{"role": "user", "content": "a"}], "top_p": 0}, "top_p"),
    ({"messages": [{"role": "user", "content": "a"}], "max_new_tokens": 0}, "max_new_tokens"),
    ({"messages": [{"role": "user", "content": "a"}], "stop": [""]}, "stop"),
    ({"messages": [{"role": "user", "content": "a"}], "conversation_id": "../x"}, "conversation_id"),
    ({"messages": [{"role": "user", "content": "a"}],
      "response_format": {"type": "json_schema", "json_schema": {"type": "nonsense"}}}, "response_format"),
])
def test_bad_requests_are_refused_naming_the_field(fields, field):
    with pytest.raises(InvalidRequest) as err:
        parse(ChatRequest, fields)
    assert err.value.field == field or err.value.field.startswith(field + "."), (err.value.field, err.value.message)

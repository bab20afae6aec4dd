"""Chat jobs on the demo Gemma 2 / Gemma 3: streaming, stop strings, interrupt keeping the partial
reply, seeds, usage counts, finish reasons, and the before_chat / after_chat / chat_stream hooks."""
from __future__ import annotations

import time

from modules.chat.generate import eos_ids
from modules.chat.params import ChatMessage, ChatResult
from modules.chat.prompt import render_chat
from modules.jobs import JobState
from modules.models.demo_lm import DEMO_LLM_NAME, DEMO_VLM_NAME
from tests.unit.chat_support import chat, image_url, text_of

USER = [{"role": "user", "content": "Tell me about the quick brown fox."}]


def test_reply_streams_and_counts_true_tokens(chat_studio, gemma2):
    job = chat(chat_studio, model=DEMO_LLM_NAME, messages=USER, temperature=0, max_new_tokens=24)
    assert job.state == JobState.DONE, job.error
    r: ChatResult = job.result
    prompt = render_chat(gemma2, [ChatMessage(**USER[0])])
    assert r.usage.prompt_tokens == len(prompt)
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    assert job.stream[0]["prompt"]["prompt_tokens"] == len(prompt)
    assert text_of(job) == r.text and len(job.stream) > 2  # pieces as generated, adding up to the reply
    assert r.finish_reason in ("stop", "length")
    if r.finish_reason == "length":
        assert r.usage.completion_tokens == 24 and r.stopped_by == "length"
    assert r.time_to_first_token is not None and 0 < r.time_to_first_token < r.seconds
    assert r.tokens_per_second and r.tokens_per_second > 0


def test_greedy_is_deterministic_and_a_seed_reproduces_sampling(chat_studio):
    a, b = (chat(chat_studio, messages=USER, temperature=0, max_new_tokens=16).result for _ in range(2))
    assert a.text == b.text
    s1, s2 = (chat(chat_studio, messages=USER, temperature=1.0, seed=1234, max_new_tokens=16).result for _ in range(2))
    assert s1.text == s2.text and s1.seed == 1234
    other = chat(chat_studio, messages=USER, temperature=1.0, seed=99, max_new_tokens=16).result
    assert other.text != s1.text
    rand = chat(chat_studio, messages=USER, temperature=1.0, max_new_tokens=4).result
    assert 0 <= rand.seed < 2**32  # -1 picked one and reported it


def test_stop_strings_end_the_reply_before_them_and_never_reach_the_stream(chat_studio):
    asks = [{"role": "user", "content": "hello world"}]  # the demo answers this one with ASCII text
    full = chat(chat_studio, messages=asks, temperature=0, max_new_tokens=40).result.text
    # The first two printable ASCII characters that appear after the start: a stop string the tokens can spell.
    stop = next(full[k:k + 2] for k in range(1, len(full) - 1)
                if full[k:k + 2].isascii() and full[k:k + 2].isprintable() and full.find(full[k:k + 2]) > 0)
    expected = full[:full.find(stop)]
    job = chat(chat_studio, messages=asks, temperature=0, max_new_tokens=40, stop=[stop, "never-there"])
    r = job.result
    assert r.text == expected and r.stopped_by == "stop_string" and r.finish_reason == "stop"
    assert text_of(job) == expected
    assert r.usage.completion_tokens < 40


def test_stop_at_end_of_turn_and_eos_ids(gemma2):
    tok = gemma2.tokenizer
    assert set(eos_ids(gemma2)) == {tok.eos_token_id, tok.convert_tokens_to_ids("<end_of_turn>")}


def test_interrupt_keeps_the_partial_reply_and_saves_it(chat_studio):
    from modules.chat.params import ChatRequest, parse

    store = chat_studio.jobs.services_of("chat").conversations
    conv = store.create(title="stop test")
    req = parse(ChatRequest, {"messages": USER, "temperature": 0, "max_new_tokens": 6000,
                              "conversation_id": conv.id})
    job = chat_studio.submit("chat", req)
    cursor, pieces, deadline = 0, [], time.monotonic() + 120
    while len([p for p in pieces if "text" in p]) < 5:
        got, cursor, ended = job.read_stream(cursor, timeout=5)
        pieces += got
        assert not ended and time.monotonic() < deadline, "the reply ended before it could be interrupted"
    chat_studio.jobs.interrupt(job.id)
    job.wait(60)
    assert job.state == JobState.INTERRUPTED
    r = job.result
    assert r.interrupted and r.stopped_by == "interrupt" and r.finish_reason == "stop"
    assert 0 < r.usage.completion_tokens < 6000
    assert r.text and r.text == text_of(job)
    saved = store.get(conv.id).messages
    assert [m.role for m in saved] == ["user", "assistant"]
    assert saved[-1].content == r.text and saved[-1].meta["interrupted"] is True


def test_image_part_to_gemma3(chat_studio):
    job = chat(chat_studio, messages=[{"role": "user", "content": [
        {"type": "image", "image": image_url()}, {"type": "text", "text": "what is this?"}]}],
        temperature=0, max_new_tokens=8)
    assert job.state == JobState.DONE, job.error
    assert job.result.model == DEMO_VLM_NAME and job.result.kind == "vlm"  # no model named: the one reading images
    assert job.result.usage.prompt_tokens > 4


def test_image_to_a_text_only_model_is_refused_at_submit(chat_studio):
    import pytest

    from modules.chat.params import ChatRequest, parse
    from modules.errors import InvalidRequest

    req = parse(ChatRequest, {"model": DEMO_LLM_NAME, "messages": [{"role": "user", "content": [
        {"type": "text", "text": "see"}, {"type": "image", "image": image_url()}]}]})
    with pytest.raises(InvalidRequest) as err:
        chat_studio.submit("chat", req)
    assert err.value.field == "messages.0.content.1"


def test_hooks_edit_messages_and_text_and_see_the_stream(chat_studio, gemma2):
    hooks = chat_studio.hooks
    seen = []

    def before(req):
        edited = [m.model_copy(update={"content": "EDITED " + m.text}) if m.role == "user" else m for m in req.messages]
        return req.model_copy(update={"messages": edited})

    hooks.add("before_chat", before, owner="test-hooks")
    hooks.add("after_chat", lambda r: ChatResult(**{**r.__dict__, "text": r.text.upper() + "!"}), owner="test-hooks")
    hooks.add("chat_stream", seen.append, owner="test-hooks")
    try:
        store = chat_studio.jobs.services_of("chat").conversations
        conv = store.create()
        job = chat(chat_studio, messages=USER, temperature=0, max_new_tokens=12, conversation_id=conv.id)
    finally:
        hooks.remove_owner("test-hooks")
    r = job.result
    edited = render_chat(gemma2, [ChatMessage(role="user", content="EDITED " + USER[0]["content"])])
    assert r.usage.prompt_tokens == len(edited)
    assert r.text == text_of(job).upper() + "!"
    assert "".join(p.text for p in seen) == text_of(job) and [p.index for p in seen] == list(range(len(seen)))
    assert all(p.job_id == job.id and p.model == DEMO_LLM_NAME for p in seen)
    saved = store.get(conv.id).messages
    assert saved[0].content == USER[0]["content"]  # history keeps what the user wrote, not the hook's edit
    assert saved[-1].content == r.text


def test_a_failing_hook_is_skipped(chat_studio):
    def broken(req):
        raise RuntimeError("boom")

    chat_studio.hooks.add("before_chat", broken, owner="test-broken")
    try:
        job = chat(chat_studio, messages=USER, temperature=0, max_new_tokens=4)
    finally:
        chat_studio.hooks.remove_owner("test-broken")
    assert job.state == JobState.DONE and job.result.usage.completion_tokens > 0

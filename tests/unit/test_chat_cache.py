"""KV prefix reuse between turns: the same greedy tokens as recomputing everything, fewer prompt
tokens computed, images inside the reused prefix, bounded, forgotten when the model goes."""
from __future__ import annotations

from modules.chat.cache import PrefixCache, _not_inside_an_image
from modules.jobs import JobState
from modules.models.demo_lm import DEMO_LLM_NAME, DEMO_VLM_NAME
from tests.unit.chat_support import chat, image_url


def _services(studio):
    return studio.jobs.services_of("chat")


def _two_turns(studio, conversation_id: str, first_user, model: str):
    """Turn 1 through the cache, then the history + a second question; returns (turn 1, the history)."""
    turn1 = chat(studio, model=model, messages=[first_user], temperature=0, max_new_tokens=12,
                 cache_key=conversation_id)
    assert turn1.state == JobState.DONE, turn1.error
    history = [first_user, {"role": "assistant", "content": turn1.result.text},
               {"role": "user", "content": "And then what happened next?"}]
    return turn1.result, history


def test_reuse_gives_the_same_tokens_and_computes_fewer(chat_studio):
    first = {"role": "user", "content": "Tell me a long story about a fox " * 4}
    turn1, history = _two_turns(chat_studio, "cache-a", first, DEMO_LLM_NAME)
    reused = chat(chat_studio, model=DEMO_LLM_NAME, messages=history, temperature=0, max_new_tokens=20,
                  cache_key="cache-a").result
    fresh = chat(chat_studio, model=DEMO_LLM_NAME, messages=history, temperature=0, max_new_tokens=20,
                 reuse_cache=False).result
    assert reused.text == fresh.text and reused.usage.completion_tokens == fresh.usage.completion_tokens
    assert fresh.usage.cached_tokens == 0 and turn1.usage.cached_tokens == 0
    # At least the whole first prompt came from the cache; only the rest was computed.
    assert reused.usage.cached_tokens >= turn1.usage.prompt_tokens
    assert reused.usage.prompt_tokens == fresh.usage.prompt_tokens
    # The same request again: everything but one token of the prompt is reused, and the reply is unchanged.
    again = chat(chat_studio, model=DEMO_LLM_NAME, messages=history, temperature=0, max_new_tokens=20,
                 cache_key="cache-a").result
    assert again.usage.cached_tokens == again.usage.prompt_tokens - 1 and again.text == fresh.text


def test_reuse_with_an_image_inside_the_prefix(chat_studio):
    first = {"role": "user", "content": [{"type": "image", "image": image_url()},
                                         {"type": "text", "text": "describe it"}]}
    turn1, history = _two_turns(chat_studio, "cache-img", first, DEMO_VLM_NAME)
    reused = chat(chat_studio, model=DEMO_VLM_NAME, messages=history, temperature=0, max_new_tokens=12,
                  cache_key="cache-img").result
    fresh = chat(chat_studio, model=DEMO_VLM_NAME, messages=history, temperature=0, max_new_tokens=12,
                 reuse_cache=False).result
    assert reused.usage.cached_tokens >= turn1.usage.prompt_tokens  # the image's tokens among them
    assert reused.text == fresh.text


def test_a_different_conversation_does_not_reuse_another_ones_history(chat_studio):
    chat(chat_studio, messages=[{"role": "user", "content": "alpha " * 20}], temperature=0, max_new_tokens=4,
         cache_key="cache-x")
    other = chat(chat_studio, messages=[{"role": "user", "content": "omega " * 20}], temperature=0,
                 max_new_tokens=4, cache_key="cache-y").result
    assert other.usage.cached_tokens == 0


def test_forgotten_when_the_model_is_unloaded(chat_studio):
    cache = _services(chat_studio).prefix_cache
    chat(chat_studio, model=DEMO_LLM_NAME, messages=[{"role": "user", "content": "hi"}], temperature=0,
         max_new_tokens=4, cache_key="cache-unload")
    old = chat_studio.models.load(DEMO_LLM_NAME, kind="llm").model
    assert any(e.model is old for e in cache._entries.values())
    chat_studio.models.unload(DEMO_LLM_NAME, kind="llm")
    assert not any(e.model is old for e in cache._entries.values())
    del old
    turn = chat(chat_studio, model=DEMO_LLM_NAME, messages=[{"role": "user", "content": "hi"}], temperature=0,
                max_new_tokens=4, cache_key="cache-unload").result
    assert turn.usage.cached_tokens == 0  # a reloaded model starts afresh


def test_bounded_least_recently_used_first():
    cache = PrefixCache(max_entries=2)
    model = object()

    class FakeCache:
        def get_seq_length(self):
            return 3

    for key in ("a", "b", "c"):
        cache.put((key,), model, [1, 2, 3, 4], FakeCache())
    assert len(cache) == 2 and set(cache._entries) == {("b",), ("c",)}
    assert cache._entries[("c",)].token_ids == [1, 2, 3]  # what the cache holds, position by position


def test_reuse_boundary_never_cuts_an_image():
    ids = [2, 7, 9, 9, 9, 9, 8, 5, 9, 9, 3]  # image token 9: blocks at 2..5 and 8..9
    assert _not_inside_an_image(ids, 7, 9) == (7, 1)  # the first image is inside, cached
    assert _not_inside_an_image(ids, 4, 9) == (2, 0)  # inside the first image: back to its start
    assert _not_inside_an_image(ids, 9, 9) == (8, 1)
    assert _not_inside_an_image(ids, 11, 9) == (11, 2)

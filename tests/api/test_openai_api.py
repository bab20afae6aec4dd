"""The OpenAI-compatible /v1 API against a real server, with the real `openai` client: models, chat
completions (streaming and not), an image to the demo Gemma 3, json_schema, completions, errors in
OpenAI's shape, a disconnect interrupting its job, and --api-key beside --api-auth."""
from __future__ import annotations

import json
import time

import httpx
import openai
import pytest
from jsonschema import validate

from modules.models.demo_lm import DEMO_LLM_NAME, DEMO_VLM_NAME
from tests.api.conftest import server_errors, start_server
from tests.unit.chat_support import image_url

KEY = "sk-atelier-test"
HI = [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "Say hello to the fox."}]


@pytest.fixture(scope="module")
def server(tmp_path_factory, demo_checkpoint):
    s = start_server(tmp_path_factory, demo_checkpoint, "--api-key", KEY, "--api-auth", "user:pass",
                     auth=("user", "pass"))
    yield s
    s.stop()


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0, timeout=120)


def _error(exc_info) -> dict:
    body = exc_info.value.response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, body
    assert body["error"]["message"]
    return body["error"]


def test_lists_the_language_models(client):
    ids = [m.id for m in client.models.list().data]
    assert DEMO_LLM_NAME in ids and DEMO_VLM_NAME in ids
    assert client.models.retrieve(DEMO_VLM_NAME).id == DEMO_VLM_NAME


def test_non_streaming_reply_with_true_usage(client, server):
    from transformers import AutoTokenizer

    r = client.chat.completions.create(model=DEMO_LLM_NAME, messages=HI, max_tokens=8, temperature=0)
    choice = r.choices[0]
    assert r.object == "chat.completion" and choice.message.role == "assistant"
    assert isinstance(choice.message.content, str)
    tok = AutoTokenizer.from_pretrained(str(server.data_dir / "models" / "LLM" / DEMO_LLM_NAME))
    folded = [{"role": "user", "content": "Answer briefly.\n\nSay hello to the fox."}]
    prompt = tok.apply_chat_template(folded, tokenize=False, add_generation_prompt=True)
    assert r.usage.prompt_tokens == len(tok(prompt, add_special_tokens=False)["input_ids"])
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    assert choice.finish_reason in ("stop", "length")
    if choice.finish_reason == "length":
        assert r.usage.completion_tokens == 8
    timings = r.model_extra["timings"]  # Atelier's own measurements beside OpenAI's fields
    assert timings["job_s"] >= timings["generation_s"] > 0 and timings["tokens_per_second"] > 0
    r2 = client.chat.completions.create(model=DEMO_LLM_NAME, messages=HI, max_completion_tokens=3, temperature=0)
    assert r2.usage.completion_tokens <= 3


def test_streaming_gives_the_same_reply_and_usage(client):
    whole = client.chat.completions.create(model=DEMO_LLM_NAME, messages=HI, max_tokens=12, temperature=0, seed=3)
    stream = client.chat.completions.create(model=DEMO_LLM_NAME, messages=HI, max_tokens=12, temperature=0, seed=3,
                                            stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    finishing = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishing == [whole.choices[0].finish_reason]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    assert chunks[-1].usage.prompt_tokens == whole.usage.prompt_tokens
    assert all(c.id == chunks[0].id for c in chunks)


def test_sse_ends_with_done(server):
    body = {"model": DEMO_LLM_NAME, "messages": HI, "max_tokens": 4, "stream": True}
    with httpx.stream("POST", server.url + "/v1/chat/completions", json=body, timeout=60,
                      headers={"Authorization": f"Bearer {KEY}"}) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in r.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    assert json.loads(lines[0][6:])["choices"][0]["delta"]["role"] == "assistant"


def test_an_image_part_to_gemma3(client):
    text_only = client.chat.completions.create(
        model=DEMO_VLM_NAME, max_tokens=4, temperature=0,
        messages=[{"role": "user", "content": [{"type": "text", "text": "What is this?"}]}])
    r = client.chat.completions.create(
        model=DEMO_VLM_NAME, max_tokens=4, temperature=0,
        messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": image_url()}},
                                               {"type": "text", "text": "What is this?"}]}])
    assert isinstance(r.choices[0].message.content, str)
    # <start_of_image> opens 4 image tokens and an <end_of_image> with newlines around the block.
    assert r.usage.prompt_tokens >= text_only.usage.prompt_tokens + 4


def test_json_schema_response_validates(client):
    schema = {"type": "object", "additionalProperties": False, "required": ["ok", "mood"],
              "properties": {"ok": {"type": "boolean"}, "mood": {"enum": ["calm", "wild"]}}}
    r = client.chat.completions.create(
        model=DEMO_LLM_NAME, messages=[{"role": "user", "content": "JSON!"}], max_tokens=40, seed=7,
        response_format={"type": "json_schema", "json_schema": {"name": "mood", "schema": schema}})
    validate(json.loads(r.choices[0].message.content), schema)
    assert r.choices[0].finish_reason == "stop"


def test_completions_plain_and_streaming(client):
    r = client.completions.create(model=DEMO_LLM_NAME, prompt="Once upon a time", max_tokens=6, temperature=0)
    assert r.object == "text_completion" and r.usage.completion_tokens <= 6
    parts = list(client.completions.create(model=DEMO_LLM_NAME, prompt="Once upon a time", max_tokens=6,
                                           temperature=0, stream=True))
    assert "".join(p.choices[0].text for p in parts) == r.choices[0].text
    assert parts[-1].choices[0].finish_reason == r.choices[0].finish_reason


@pytest.mark.parametrize("change, status, param", [
    ({"model": "no-such-model"}, 404, "model"),
    ({"n": 2}, 400, "n"),
    ({"messages": []}, 400, "messages"),
    ({"messages": [{"role": "wizard", "content": "hi"}]}, 400, "messages[0].role"),
    ({"messages": [{"role": "tool", "content": "hi"}]}, 400, "messages[0].role"),
    ({"messages": [{"role": "user"}]}, 400, "messages[0].content"),
    ({"messages": [{"role": "user", "content": [{"type": "audio", "x": 1}]}]}, 400, "messages[0].content[0].type"),
    ({"messages": [{"role": "user", "content": [{"type": "text", "text": "see"},
                                                {"type": "image_url", "image_url": {"url": image_url()}}]}]},
     400, "messages[0].content[1]"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url",
                                                 "image_url": {"url": "https://example.com/a.png"}}]}],
      "model": DEMO_VLM_NAME}, 400, "messages[0].content[0].image_url.url"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url",
                                                 "image_url": {"url": "data:image/png;base64,!!notbase64"}}]}],
      "model": DEMO_VLM_NAME}, 400, "messages[0].content[0].image_url.url"),
    ({"temperature": 3}, 400, "temperature"),
    ({"top_p": 1.5}, 400, "top_p"),
    ({"max_tokens": 0}, 400, "max_tokens"),
    ({"max_completion_tokens": -5}, 400, "max_completion_tokens"),
    ({"presence_penalty": 5}, 400, "presence_penalty"),
    ({"stop": 5}, 400, "stop"),
    ({"tools": [{"type": "function", "function": {"name": "f"}}]}, 400, "tools"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "nonsense"}}}},
     400, "response_format.json_schema.schema"),
    ({"response_format": {"type": "yaml"}}, 400, "response_format.type"),
    ({"extra_body": {"adapter": "no-such-adapter"}}, 400, "adapter"),  # Atelier's field: an LLM LoRA by name
    ({"messages": [{"role": "user", "content": "overflow " * 9000}]}, 400, "messages"),
])
@pytest.mark.parametrize("stream", [False, True])
def test_bad_input_is_a_4xx_in_openais_shape(client, server, change, status, param, stream):
    kw = {"model": DEMO_LLM_NAME, "messages": HI, "max_tokens": 4, **change}
    with pytest.raises(openai.APIStatusError) as exc:
        if stream:
            list(client.chat.completions.create(stream=True, **kw))
        else:
            client.chat.completions.create(**kw)
    assert exc.value.status_code == status
    err = _error(exc)
    assert err["param"] == param, err
    assert err["type"] == "invalid_request_error"
    if status == 404:
        assert err["code"] == "model_not_found"
    assert server_errors(server) == []


def test_malformed_bodies_and_unknown_paths(server):
    h = {"Authorization": f"Bearer {KEY}", "content-type": "application/json"}
    for raw in (b"{not json", b"[1, 2]", b""):
        r = httpx.post(server.url + "/v1/chat/completions", content=raw, headers=h, timeout=30)
        assert r.status_code == 400 and r.json()["error"]["param"] == "body", r.text
    r = httpx.get(server.url + "/v1/embeddings", headers=h, timeout=30)
    assert r.status_code == 404 and r.json()["error"]["code"] == "unknown_url"
    r = httpx.post(server.url + "/v1/completions", json={"model": DEMO_LLM_NAME, "prompt": ["a", "b"]}, headers=h)
    assert r.status_code == 400 and r.json()["error"]["param"] == "prompt"


def test_a_disconnected_stream_interrupts_its_job(server):
    h = {"Authorization": f"Bearer {KEY}"}
    body = {"model": DEMO_LLM_NAME, "messages": HI, "max_tokens": 6000, "temperature": 0, "stream": True}
    with httpx.stream("POST", server.url + "/v1/chat/completions", json=body, headers=h, timeout=60) as r:
        lines = r.iter_lines()
        first = json.loads(next(line for line in lines if line.startswith("data: "))[6:])
        for _ in range(5):
            next(lines)
    job_id = first["id"].removeprefix("chatcmpl-")
    deadline, state = time.monotonic() + 60, None
    while time.monotonic() < deadline:
        state = httpx.get(server.url + f"/atelier/v1/jobs/{job_id}", headers=h, timeout=10).json()["state"]
        if state != "running":
            break
        time.sleep(0.2)
    assert state == "interrupted"


def test_api_key_and_api_auth_both_open_every_api_route(server):
    url = server.url
    assert httpx.get(url + "/v1/models", timeout=10).status_code == 401
    bad = httpx.get(url + "/v1/models", headers={"Authorization": "Bearer wrong"}, timeout=10)
    assert bad.status_code == 401 and bad.json()["error"]["code"] == "invalid_api_key"
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=url + "/v1", api_key="wrong", max_retries=0).models.list()
    assert httpx.get(url + "/v1/models", auth=("user", "pass"), timeout=10).status_code == 200
    key = {"Authorization": f"Bearer {KEY}"}
    assert httpx.get(url + "/sdapi/v1/sd-models", headers=key, timeout=10).status_code == 200
    assert httpx.get(url + "/atelier/v1/models", headers=key, timeout=30).status_code == 200
    refused = httpx.get(url + "/sdapi/v1/sd-models", timeout=10)
    assert refused.status_code == 401 and refused.json()["error"] == "Unauthorized"
    flags = httpx.get(url + "/sdapi/v1/cmd-flags", headers=key, timeout=10).json()
    assert flags["api_key"] == "***"

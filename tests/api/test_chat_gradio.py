"""The Chat tab's send event (api_name "chat"), driven with the real gradio_client as a script would: the
streamed updates end with the saved reply and its numbers; a text-only model refuses an image with the
engine's message, not a traceback."""
from __future__ import annotations

import json

import pytest

MODEL = "atelier-demo-gemma2"
# message, model, system prompt, temperature, top_p, top_k, min_p, repetition penalty, max new tokens, seed, stops
SETTINGS = (0.0, 1.0, 0, 0.0, 1.0, 8, 3, "")


@pytest.fixture(scope="module")
def client(plain_server):
    from gradio_client import Client

    return Client(plain_server.url + "/", verbose=False)


def test_the_chat_event_streams_and_saves(client, plain_server):
    text = "Hello from a script 7f3a"
    job = client.submit({"text": text, "files": []}, MODEL, "Be brief.", *SETTINGS, api_name="/chat")
    outputs = job.result(timeout=120)
    chatbot, stats = outputs[0], outputs[1]
    assert chatbot[0]["role"] == "user" and text in json.dumps(chatbot[0]["content"])
    assert chatbot[-1]["role"] == "assistant"
    assert "Tokens:" in stats and "first token" in stats
    saved = [json.loads(p.read_text(encoding="utf-8")) for p in (plain_server.data_dir / "chats").glob("*.json")]
    mine = [c for c in saved if any(m["role"] == "user" and m["content"] == text for m in c["messages"])]
    assert len(mine) == 1 and mine[0]["messages"][-1]["role"] == "assistant"
    assert mine[0]["messages"][-1]["meta"]["seed"] == 3


def test_a_text_only_model_refuses_an_image_with_a_clear_message(client, tmp_path):
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError
    from PIL import Image

    Image.new("RGB", (16, 16), (9, 9, 9)).save(tmp_path / "dot.png")
    with pytest.raises(AppError) as exc:
        client.predict({"text": "what is it?", "files": [handle_file(str(tmp_path / "dot.png"))]}, MODEL, "",
                       *SETTINGS, api_name="/chat")
    assert "reads text only" in str(exc.value) and "Traceback" not in str(exc.value)

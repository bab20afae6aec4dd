"""Chat tab: type a message to the demo Gemma 2, see the reply stream in, Stop it mid-reply and keep the
partial reply, reload the page and open the saved conversation from the list."""
from __future__ import annotations

import json

from tests.browser.helpers import choose, open_tab, set_number
from tests.conftest import wait_until

MODEL = "atelier-demo-gemma2"
BOT = "#chat_chatbot [data-testid='bot']"
USER = "#chat_chatbot [data-testid='user']"


def _bot_text(page) -> str:
    bots = page.locator(BOT)
    return bots.last.inner_text().strip() if bots.count() else ""


def _saved(data_dir, title: str):
    for path in (data_dir / "chats").glob("*.json"):
        conv = json.loads(path.read_text(encoding="utf-8"))
        if conv["messages"] and conv["messages"][0]["content"] == title:
            return conv
    return None


def test_stream_stop_keep_partial_reload_and_reopen(page, live_server):
    message = "Tell me a very long story in the browser"
    open_tab(page, "Chat")
    page.wait_for_function("() => document.querySelector('#chat_model input').value !== ''", timeout=30_000)
    choose(page, "chat_model", MODEL)
    page.get_by_text("Sampling", exact=True).click()
    # Greedy on the demo's fixed random weights: the same long reply every run (sampling could draw <eos> early),
    # with room for 6000 tokens, so there is time to press Stop mid-reply.
    set_number(page, "chat_temperature", 0)
    set_number(page, "chat_max_new_tokens", 6000)
    box = page.locator("#chat_message textarea")
    box.fill(message)
    box.press("Shift+Enter")  # a new line, not a send
    page.wait_for_timeout(500)  # a send would have cleared the box and shown the message by now
    assert page.locator(USER).count() == 0 and "\n" in box.input_value()
    box.fill(message)
    box.press("Enter")
    page.wait_for_selector(USER, timeout=30_000)
    # Streaming: the reply appears, then grows, while the job runs.
    first = wait_until(lambda: _bot_text(page), 120, "the first streamed piece of the reply", interval=0.05)
    wait_until(lambda: len(_bot_text(page)) > len(first), 60, "the reply to grow", interval=0.05)
    assert "Replying" in page.locator("#chat_stats").inner_text()
    page.click("#chat_stop")
    page.wait_for_function("() => document.querySelector('#chat_stats').innerText.includes('stopped')",
                           timeout=30_000)
    assert "tokens/s" in page.locator("#chat_stats").inner_text()
    assert "Tokens:" in page.locator("#chat_stats").inner_text()
    partial = _bot_text(page)
    assert partial, "the partial reply is kept in the chat"
    conv = wait_until(lambda: _saved(live_server.data_dir, message), 10, "the saved conversation")
    reply = conv["messages"][-1]
    assert reply["role"] == "assistant" and reply["content"] and reply["meta"]["interrupted"] is True
    assert reply["meta"]["completion_tokens"] < 6000
    assert conv["settings"]["temperature"] == 0 and conv["settings"]["max_new_tokens"] == 6000

    page.reload()
    page.wait_for_selector("#txt2img_prompt textarea")
    open_tab(page, "Chat")
    page.locator("#chat_conversations input").click()
    option = page.get_by_role("option", name=f"{message} (2)", exact=True)
    option.wait_for(timeout=30_000)
    option.click()
    page.wait_for_function(f"() => document.querySelector(\"{USER}\")?.innerText.includes({json.dumps(message)})",
                           timeout=30_000)
    assert page.locator(BOT).count() >= 1 and _bot_text(page)
    assert "stopped" in page.locator("#chat_stats").inner_text()

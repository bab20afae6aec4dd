"""Saved conversations: one JSON file each, atomic writes; list, get, rename, delete, export, import;
regenerate keeps versions; a chat survives a restart of the studio and a kill -9 mid-write."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from modules.chat.conversations import Conversation, ConversationStore
from modules.errors import InvalidRequest, NotFound
from tests.unit.chat_support import chat, image_url

REPO = Path(__file__).resolve().parents[2]


def test_create_list_rename_delete(tmp_path):
    store = ConversationStore(tmp_path / "chats")
    a = store.create(title="First", messages=[{"role": "user", "content": "hello"}])
    time.sleep(0.01)
    b = store.create(messages=[{"role": "user", "content": "what is a fox?"}])
    assert [r["id"] for r in store.list()] == [b.id, a.id]  # most recently changed first
    assert store.list()[0]["title"] == "what is a fox?"  # untitled: named after the first message
    store.rename(a.id, "  Renamed \n title ")
    assert store.get(a.id).title == "Renamed title" and store.list()[0]["id"] == a.id
    store.delete(b.id)
    assert [r["id"] for r in store.list()] == [a.id]
    with pytest.raises(NotFound):
        store.get(b.id)
    with pytest.raises(InvalidRequest):
        store.get("../../etc/passwd")
    assert sorted(p.name for p in (tmp_path / "chats").iterdir()) == [f"{a.id}.json"]


def test_export_import_round_trip_keeps_images(tmp_path):
    store = ConversationStore(tmp_path / "chats")
    conv = store.create(title="pic", messages=[
        {"role": "user", "content": [{"type": "image", "image": image_url((1, 2, 3))}, {"type": "text", "text": "?"}]},
        {"role": "assistant", "content": "a square", "meta": {"seed": 5}}])
    exported = json.dumps(store.export(conv.id))
    other = ConversationStore(tmp_path / "elsewhere").import_(exported)
    assert other.id != conv.id and other.title == "pic"
    msgs = other.chat_messages()
    assert msgs[0].images[0].getpixel((0, 0)) == (1, 2, 3) and msgs[1].text == "a square"
    assert other.messages[1].meta == {"seed": 5}
    with pytest.raises(InvalidRequest) as err:
        store.import_('{"format": "something else"}')
    assert err.value.field == "file"
    with pytest.raises(InvalidRequest):
        store.import_(json.dumps({"format": "atelier-conversation", "messages": [{"role": "robot", "content": "x"}]}))


def test_regenerate_keeps_the_earlier_reply_as_a_version(tmp_path):
    from modules.chat.params import ChatMessage

    store = ConversationStore(tmp_path / "chats")
    conv = store.create()
    user = [ChatMessage(role="user", content="hi")]
    store.begin_reply(conv.id, user)
    store.finish_reply(conv.id, "first answer", {"seed": 1})
    versions = store.begin_reply(conv.id, user)  # the same history without its reply: regenerate
    assert versions == ["first answer"]
    store.finish_reply(conv.id, "second answer", {"seed": 2}, versions)
    last = store.get(conv.id).messages[-1]
    assert last.content == "second answer" and last.versions == ["first answer"]
    assert len(store.get(conv.id).messages) == 2


def test_a_chat_survives_a_restart(tmp_path, demo_language_models):
    from tests.unit.conftest import chat_data_dir, open_chat_studio

    root = chat_data_dir(tmp_path / "data", demo_language_models)
    studio = open_chat_studio(root)
    try:
        store = studio.jobs.services_of("chat").conversations
        conv = store.create(title="keep me")
        job = chat(studio, messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello"}],
                   temperature=0, max_new_tokens=6, conversation_id=conv.id)
        reply = job.result.text
    finally:
        studio.shutdown()
    again = open_chat_studio(root)
    try:
        saved = again.jobs.services_of("chat").conversations.get(conv.id)
    finally:
        again.shutdown()
    assert saved.title == "keep me"
    assert [(m.role, m.content) for m in saved.messages] == [("system", "be brief"), ("user", "hello"),
                                                            ("assistant", reply)]
    assert saved.messages[-1].meta["completion_tokens"] == job.result.usage.completion_tokens
    assert saved.model == job.result.model


WRITER = textwrap.dedent("""
    import sys
    from modules.chat.conversations import ConversationStore
    store = ConversationStore(sys.argv[1])
    conv = store.create(title="busy", messages=[{"role": "user", "content": "start"}])
    print(conv.id, flush=True)
    i = 0
    while True:  # ever longer histories: each save rewrites the whole file
        i += 1
        store.update(conv.id, messages=[{"role": "user", "content": "x" * 2000}] * (1 + i % 40)
                     + [{"role": "assistant", "content": f"reply {i}"}])
""")


@pytest.mark.parametrize("after_s", [0.3, 0.7, 1.1])
def test_kill_9_mid_write_leaves_a_whole_file(tmp_path, after_s):
    folder = tmp_path / "chats"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(folder)], cwd=REPO, stdout=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        conv_id = proc.stdout.readline().strip()
        assert conv_id, "the writer did not start"
        time.sleep(after_s)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    store = ConversationStore(folder)
    conv = store.get(conv_id)  # parses: the old or the new version, never half of one
    assert isinstance(conv, Conversation) and conv.messages[-1].content.startswith("reply")
    (folder / f".{conv_id}.json.dead.tmp").write_text('{"half": ')  # what a kill mid-write may leave
    store.remove_stale_temporaries()
    assert [p.name for p in folder.iterdir()] == [f"{conv_id}.json"]
    assert [r["id"] for r in store.list()] == [conv_id]

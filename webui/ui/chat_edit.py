"""The Chat tab's edit-and-resend (text-generation-webui's, Open WebUI's, LM Studio's): the person edits one
of their past messages in the gr.Chatbot (`editable="user"`, the `.edit` event); the conversation is cut
after that message and the reply generated again from there by a "chat" job, which saves the cut
conversation and the new reply (atomically, as every reply). The replies after it are dropped.

No `from __future__ import annotations` here: Gradio reads the `gr.EditData` hint of the event function.
"""
from webui.ui.chat_turn import ChatHandlers, chatbot_messages, conversation_store, shown_parts, shown_with_origins


def edited_message(conv, index, text: str) -> tuple[int, dict, object]:
    """The edit of shown message `index` → (how many saved messages stay before it, the edited message as
    sent, the same as saved for the Chatbot). Refuses what cannot be edited with a message for the person."""
    import gradio as gr

    from modules.chat.conversations import StoredMessage

    shown = shown_with_origins(conv)
    index = index[0] if isinstance(index, (list, tuple)) else index
    if not isinstance(index, int) or not 0 <= index < len(shown):
        raise gr.Error("That message is no longer in this conversation; open it again from the list")
    (i, j), item = shown[index]
    saved = conv.messages[i]
    if saved.role != "user" or not isinstance(item["content"], str):
        raise gr.Error("Only the text of your own messages can be edited")
    text = text if isinstance(text, str) else ""
    if isinstance(saved.content, str):
        content = text
    else:  # image parts stay; the edited text part changes (or goes, when emptied beside an image)
        content = [dict(p, text=text) if k == j else p for k, p in enumerate(saved.content)]
        content = [p for p in content if p.get("type") != "text" or p.get("text")]
    if not content or (isinstance(content, str) and not content.strip()):
        raise gr.Error("The edited message is empty; type something, or use Remove last")
    message = {"role": "user", "content": content}
    return i, message, StoredMessage(**message)


def wire_edit(studio, handlers: ChatHandlers, chatbot, inputs: list, outputs: list):
    """chatbot.edit → cut after the edited message and stream the new reply; returns the event (for .then)."""
    import gradio as gr

    def edit_message(edit: gr.EditData, conv_id, model, system, *values):
        store = conversation_store(studio)
        if not conv_id or not store.exists(conv_id):
            raise gr.Error("Open a saved conversation to edit its messages")
        conv = store.get(conv_id)
        keep, message, saved = edited_message(conv, edit.index, edit.value)
        if saved.same_turn(conv.messages[keep]):  # submitted unchanged: nothing to resend
            yield chatbot_messages(conv), conv_id, None, gr.update()
            return
        shown = [item for _, item in shown_parts(saved)]
        yield from handlers.run(conv_id, model, system, values, [message], keep=keep, shown_user=shown)

    return chatbot.edit(edit_message, [*inputs], outputs, concurrency_id="chat", api_visibility="private",
                        show_progress="hidden")

"""Durable chats: every message is stored, the URL carries the conversation (``?c=<id>``), and
a reload or a shared link reopens it."""

from __future__ import annotations

from streamlit.testing.v1 import AppTest

from chatmem.store import Store
from chatmem.ui.state import NO_REPLY, PAGE_SIZE, UNAVAILABLE
from tests.app.conftest import close, open_app, retry, send, session, shown_messages
from tests.fakes import FakeServerProcess


def test_first_message_is_stored_and_puts_the_id_in_the_url(app: AppTest, store: Store) -> None:
    assert "c" not in app.query_params
    assert store.list_conversations() == []  # nothing saved before there is something to keep
    send(app, "Hi, my name is Sam.")
    cid = session(app).conversation_id
    assert cid is not None
    assert app.query_params["c"] == cid
    rows = store.messages(cid)
    assert [(m.role, m.content, m.status) for m in rows] == [
        ("user", "Hi, my name is Sam.", "ok"),
        ("assistant", "You said: Hi, my name is Sam.", "ok"),
    ]
    assert store.get_conversation(cid).title == "Hi, my name is Sam."
    app.switch_page("app_pages/inspector.py").run()  # page links drop the query string...
    assert app.query_params["c"] == cid  # ...and it is put back


def test_reload_reopens_the_conversation_with_its_summary(
    app: AppTest, fake: FakeServerProcess
) -> None:
    for text in [
        "Hi, my name is Sam.",
        *[f"Tell me more about day {i} of the trip, with museums and food." for i in range(6)],
    ]:
        send(app, text)
    app.slider(key="max_tokens").set_value(256).run()
    bot = session(app).bot
    bot.wait_for_fold(timeout=10)
    cid, before = bot.conversation_id, shown_messages(app)
    assert "The user's name is Sam." in bot.summary

    again = open_app(cid)  # a reload: a new browser session on the same URL
    sess = session(again)
    assert sess.conversation_id == cid
    assert sess.bot is not bot
    assert shown_messages(again) == before
    assert again.slider(key="max_tokens").value == 256  # saved with the conversation
    sidebar = "\n".join(m.value for m in again.sidebar.markdown)
    assert "The user's name is Sam." in sidebar
    assert not again.warning  # the last message has its reply
    send(again, "What is my name?")
    assert shown_messages(again)[-1] == ("assistant", "Your name is Sam.")
    close(again)


def test_earlier_messages_are_paged_from_the_store(app: AppTest, store: Store) -> None:
    send(app, "Hi, my name is Sam.")
    cid = session(app).conversation_id
    store._bulk_append(
        cid,
        [
            {"role": role, "content": f"{role} {i}"}
            for i in range(80)
            for role in ("user", "assistant")
        ],
    )
    store.add_summary(cid, "The user's name is Sam.", 20, covers_seq=150)
    again = open_app(cid)
    sess = session(again)
    total = store.count_messages(cid)
    assert total == 162
    shown = len(again.chat_message)
    assert shown == PAGE_SIZE
    more = again.button(key="show_earlier")
    assert more.label == f"Show earlier messages ({total - shown:,} hidden)"
    more.click().run()
    assert len(again.chat_message) == 2 * PAGE_SIZE
    assert again.button(key="show_earlier").label == (
        f"Show earlier messages ({total - 2 * PAGE_SIZE:,} hidden)"
    )
    while any(b.key == "show_earlier" for b in again.button):
        again.button(key="show_earlier").click().run()
    assert len(again.chat_message) == total
    assert shown_messages(again)[0] == ("user", "Hi, my name is Sam.")
    assert [e["seq"] for e in sess.transcript] == list(range(1, total + 1))
    close(again)


def test_unknown_id_is_a_plain_message_with_a_new_chat(app_env: FakeServerProcess) -> None:
    at = open_app("0123456789abcdef0123456789abcdef")
    assert [w.value for w in at.warning] == [UNAVAILABLE]
    assert not at.chat_input  # nothing to type into a conversation that is not there
    at.button(key="missing_new_chat").click().run()
    assert not at.warning
    assert "c" not in at.query_params
    send(at, "Hi, my name is Sam.")
    assert at.query_params["c"] == session(at).conversation_id
    close(at)


def test_garbage_id_is_refused_the_same_way(app_env: FakeServerProcess) -> None:
    at = open_app("'; DROP TABLE conversations; --")
    assert [w.value for w in at.warning] == [UNAVAILABLE]
    close(at)


def test_failed_and_incomplete_messages_show_as_such(app: AppTest, store: Store) -> None:
    send(app, "Hi, my name is Sam.")
    cid = session(app).conversation_id
    store.append_message(cid, "user", "lorem ipsum " * 50, status="failed")
    store.append_message(cid, "user", "Tell me a long story.")
    store.append_message(cid, "assistant", "Once upon a", status="incomplete")
    again = open_app(cid)
    captions = [c.value for c in again.main.caption]
    assert "Failed: not sent to the model." in captions
    assert "Cut off before it finished." in captions
    assert shown_messages(again)[-1] == ("assistant", "Once upon a")
    retry(again)  # replaces the cut-off reply
    assert shown_messages(again)[-1] == ("assistant", "You said: Tell me a long story.")
    assert [m.status for m in store.messages(cid)][-2:] == ["incomplete", "ok"]
    close(again)


def test_a_message_left_without_reply_offers_retry(app: AppTest, store: Store) -> None:
    """What a crash mid-reply leaves behind: the user's message, stored, and no reply."""
    send(app, "Hi, my name is Sam.")
    cid = session(app).conversation_id
    store.append_message(cid, "user", "What is my name?")
    again = open_app(cid)
    assert shown_messages(again)[-1] == ("user", "What is my name?")
    assert [w.value for w in again.warning] == [NO_REPLY]
    retry(again)
    assert shown_messages(again)[-1] == ("assistant", "Your name is Sam.")
    assert not again.warning
    close(again)


def test_new_chat_clears_the_url(app: AppTest) -> None:
    send(app, "Hi, my name is Sam.")
    assert "c" in app.query_params
    app.button(key="new_chat").click().run()
    assert "c" not in app.query_params
    assert shown_messages(app) == []

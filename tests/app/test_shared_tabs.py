"""Two tabs on one conversation (``?c=``): each catches up with the other before it asks the
model, folds land by compare-and-set, and a message the store refused stays with Retry."""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from chatmem.errors import StoreError
from chatmem.store import Store
from tests.app.conftest import close, open_app, retry, send, session, shown_messages
from tests.fakes import FakeServerProcess
from tests.unit.shared_checks import invariant_violations, lineage_is_linear

WORDS = ["amber", "birch", "cedar", "dune", "ember", "fjord", "grove", "heath", "inlet", "jade"]


def test_two_tabs_on_one_conversation_share_one_memory(
    app_env: FakeServerProcess, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHATMEM_MAX_TOKENS", "400")
    tab_a = open_app()
    send(tab_a, "Hello from tab A.")
    cid = session(tab_a).conversation_id
    tab_b = open_app(cid)
    for i, word in enumerate(WORDS):
        send(tab_a, f"Remember: my t{word} is A{i}x. Museums, harbours and long train rides.")
        send(tab_b, f"Tab B chats about day {i} with museums, food and the weather.")
    for tab in (tab_a, tab_b):
        session(tab).bot.wait_for_fold(timeout=20)
    versions = store.list_summaries(cid)
    assert versions, "the conversation folded"
    assert invariant_violations(store, cid) == []
    assert lineage_is_linear(store, cid)
    newest = versions[-1]
    for i, word in enumerate(WORDS):
        seq = next(m.seq for m in store.messages(cid) if f"is A{i}x." in m.content)
        if seq <= newest.covers_seq:
            assert f"The user's t{word} is A{i}x." in newest.text

    send(tab_b, f"What is my t{WORDS[0]}?")  # tab B answers from tab A's facts
    assert shown_messages(tab_b)[-1] == ("assistant", f"Your t{WORDS[0]} is A0x.")
    sent = "\n".join(m["content"] for m in app_env.control.requests("chat")[-1]["body"]["messages"])
    held = [word for i, word in enumerate(WORDS) if f"t{word} is A{i}x" in sent]
    assert held == WORDS, "the request holds every fact of tab A"

    again = open_app(cid)  # a reload
    send(again, f"What is my t{WORDS[9]}?")
    assert shown_messages(again)[-1] == ("assistant", f"Your t{WORDS[9]} is A9x.")
    rows = store.messages(cid)
    for reply in (m for m in rows if m.role == "assistant"):
        question = next(m for m in rows if m.seq == reply.reply_to)
        assert question.role == "user"
        assert reply.content.startswith(("You said:", "Your ")), reply.content
        if reply.content.startswith("You said:"):
            assert question.content.startswith(reply.content.removeprefix("You said: ")[:20])
    for tab in (tab_a, tab_b, again):
        close(tab)


def test_a_message_the_store_refused_stays_on_screen_with_retry(
    app: AppTest, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    send(app, "Hello there.")
    cid = session(app).conversation_id
    real = Store.append_message
    failing = {"on": True}

    def append_message(self: Store, *args, **kw):
        if failing["on"]:
            raise StoreError("postgresql error: the server closed the connection unexpectedly")
        return real(self, *args, **kw)

    monkeypatch.setattr(Store, "append_message", append_message)
    send(app, "Please keep this message.")
    assert shown_messages(app)[-1] == ("user", "Please keep this message.")
    assert any("could not be saved" in w.value for w in app.warning)
    assert [m.content for m in store.messages(cid)][-1] == "You said: Hello there."
    failing["on"] = False
    retry(app)
    assert not app.exception
    assert shown_messages(app)[-2:] == [
        ("user", "Please keep this message."),
        ("assistant", "You said: Please keep this message."),
    ]
    assert [m.content for m in store.messages(cid)][-2:] == [
        "Please keep this message.",
        "You said: Please keep this message.",
    ]
    assert not app.warning


def test_a_summary_that_cannot_be_saved_is_toasted_and_retried(
    app: AppTest, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    for i in range(8):
        send(app, f"Hi, my name is Sam. Tell me more about day {i} of the trip, with museums.")
    real = Store.add_summary
    failing = {"on": True}

    def add_summary(self: Store, *args, **kw):
        if failing["on"]:
            raise StoreError("postgresql error: the server closed the connection unexpectedly")
        return real(self, *args, **kw)

    monkeypatch.setattr(Store, "add_summary", add_summary)
    app.slider(key="max_tokens").set_value(256).run()
    toasts = [t.value for t in app.toast]
    bot = session(app).bot
    bot.wait_for_fold(timeout=10)
    app.run()
    toasts += [t.value for t in app.toast]
    assert any("The summary could not be saved" in t for t in toasts), toasts
    cid = session(app).conversation_id
    assert bot.summary == "" and store.list_summaries(cid) == []  # memory and database agree
    assert any("No summary yet" in c.value for c in app.sidebar.caption)
    failing["on"] = False
    send(app, "What is my name?")  # the fold is tried again after this turn
    bot.wait_for_fold(timeout=10)
    stored = store.list_summaries(cid)
    assert len(stored) == 1 and "Sam" in stored[0].text
    assert bot.current_summary is not None and bot.current_summary.id == stored[0].id

"""A reply runs on a thread of its own: a dropped session or a reload never cuts it off;
Stop ends it on purpose. (A slider, a page switch, a closed tab and a refused message are
tried in Chromium: tests/e2e/test_turns_browser.py.)

The fake server streams slowly here (one word every 40 ms) so each step happens mid-reply.
"""

from __future__ import annotations

import time

import pytest
from streamlit.testing.v1 import AppTest

from chatmem.events import EventKind
from chatmem.store import Store
from chatmem.ui.turns import Turn, running
from tests.app.conftest import (
    close,
    finish_turn,
    open_app,
    retry,
    send,
    session,
    shown_messages,
)
from tests.fakes import FakeServerProcess

WORDS = 40  # a reply of 40 words, 40 ms apart: about 1.6 s
QUESTION = "Hi, my name is Sam."


@pytest.fixture
def slow(fake: FakeServerProcess) -> FakeServerProcess:
    fake.control.config(chunk_delay_ms=40, reply_words=WORDS)
    return fake


def submit(at: AppTest, text: str = QUESTION) -> Turn:
    """Submit ``text`` and return the turn in flight, once some of the reply has arrived."""
    at.chat_input(key="chat_input").set_value(text).run()
    assert not at.exception, at.exception
    turn = session(at).turn
    assert turn is not None and not turn.done
    deadline = time.monotonic() + 10
    while not turn.text_so_far() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert turn.text_so_far() and not turn.done
    return turn


def stored(store: Store, cid: str) -> list[tuple[str, str, int]]:
    return [(m.role, m.status, len(m.content.split())) for m in store.messages(cid)]


def test_a_dropped_session_still_stores_the_reply(
    app_env: FakeServerProcess, store: Store, slow: FakeServerProcess
) -> None:
    at = open_app()
    turn = submit(at)
    cid = session(at).conversation_id
    assert cid is not None and running(cid) is turn
    del at  # the tab is closed: the page state goes, the turn does not
    assert turn.wait(30)
    assert running(cid) is None
    assert stored(store, cid) == [("user", "ok", 5), ("assistant", "ok", WORDS)]
    turn.bot.close()


def test_a_reload_mid_reply_shows_it_streaming_then_stored(
    app: AppTest, store: Store, slow: FakeServerProcess
) -> None:
    slow.control.config(chunk_delay_ms=120)  # time for a new session's first run
    turn = submit(app)
    cid = session(app).conversation_id
    again = open_app(cid)  # a reload: a new browser session on ?c=<cid>
    assert session(again).turn is turn and session(again).attached
    assert again.button(key="stop_reply")  # it can be stopped from here too
    assert shown_messages(again)[0] == ("user", QUESTION)  # from the store, drawn once
    assert [r for r, _ in shown_messages(again)] == ["user", "assistant"]  # the reply so far
    finish_turn(again)
    assert not again.warning  # no "No reply was saved"
    assert [r for r, _ in shown_messages(again)] == ["user", "assistant"]
    assert len(shown_messages(again)[-1][1].split()) == WORDS
    send(again, "What is my name?")  # the reopened memory has the reply it did not stream
    assert shown_messages(again)[-1] == ("assistant", "Your name is Sam.")
    close(again)


def test_stop_stores_the_part_that_arrived_marked_stopped(
    app: AppTest, store: Store, slow: FakeServerProcess
) -> None:
    turn = submit(app)
    app.button(key="stop_reply").click().run()
    assert turn.stopping
    finish_turn(app)
    sess = session(app)
    last = sess.transcript[-1]
    assert (last["role"], last["status"]) == ("assistant", "stopped")
    words = len(last["content"].split())
    assert 0 < words < WORDS
    captions = [c.value for c in app.main.caption]
    assert any(c.startswith("Stopped") for c in captions), captions
    assert not any("Cut off" in c for c in captions)
    cid = sess.conversation_id
    assert cid is not None
    assert stored(store, cid) == [("user", "ok", 5), ("assistant", "incomplete", words)]
    event = [e for e in store.list_events(cid) if e.kind == EventKind.STOPPED][-1]
    assert event.data["seq"] == 2
    reopened = open_app(cid)  # after a reload it is still shown as stopped
    assert any(c.value.startswith("Stopped") for c in reopened.main.caption)
    close(reopened)
    slow.control.config(chunk_delay_ms=0)
    retry(app)  # asks again; the whole reply replaces the stopped one on screen
    assert [r for r, _ in shown_messages(app)] == ["user", "assistant"]
    assert len(shown_messages(app)[-1][1].split()) == WORDS

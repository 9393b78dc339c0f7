"""Replies survive what a person does in the browser while they stream.

One ``streamlit run`` for the module, against the fake server streaming a short, slow reply
(30 words, 100 ms apart: about 3 s), so there is time to move a slider, switch pages, close
the tab or press Stop mid-reply. Each test reads the app's store to see what was kept.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from chatmem.events import EventKind
from chatmem.store import Store, StoredMessage
from tests.e2e.conftest import ARTIFACTS, start_app, wait_for_app
from tests.e2e.test_app_browser import chat_box, chat_messages, conversation_id
from tests.fakes import FakeServerProcess
from tests.fakes.app_process import app_workdir

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

WORDS = 30
QUESTION = "Hi, my name is Sam."
WAIT = 20_000  # ms; a loaded machine can take seconds before the first word


@pytest.fixture(scope="module")
def turns_app(
    fake_server: FakeServerProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Path]]:
    """The app's URL and its SQLite file."""
    workdir = app_workdir(tmp_path_factory.mktemp("turns-app"))
    db = workdir / "chatmem-turns.db"
    server = start_app(fake_server.url, workdir, f"sqlite:///{db}", ARTIFACTS / "turns-app.log")
    try:
        yield server.url, db
    finally:
        server.stop()


@pytest.fixture
def slow(fake: FakeServerProcess) -> FakeServerProcess:
    fake.control.config(chunk_delay_ms=100, reply_words=WORDS)
    return fake


@pytest.fixture
def tab(browser: Browser, turns_app: tuple[str, Path]) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1440, "height": 1000})
    context.set_default_timeout(20_000)
    page = context.new_page()
    page.goto(turns_app[0])
    chat_box(page).wait_for(timeout=60_000)  # the first run of a fresh process imports a lot
    wait_for_app(page)
    try:
        yield page
    finally:
        context.close()


def start_reply(page: Page, text: str = QUESTION) -> str:
    """Send ``text`` and return the conversation id once the reply has begun streaming."""
    box = chat_box(page)
    expect(box).to_be_enabled()
    box.fill(text)
    box.press("Enter")
    expect(stop_button(page)).to_be_visible(timeout=WAIT)  # the reply is in flight
    expect(box).to_be_disabled()  # one reply at a time
    return conversation_id(page)


def stop_button(page: Page):  # type: ignore[no-untyped-def]
    return page.locator(".st-key-stop_reply button")


def stored(db: Path, cid: str, count: int) -> list[StoredMessage]:
    """The conversation's messages once there are ``count`` of them (waits up to 20 s)."""
    deadline = time.monotonic() + 20
    with Store(f"sqlite:///{db}") as store:
        while True:
            messages = store.messages(cid)
            if len(messages) >= count or time.monotonic() > deadline:
                return messages
            time.sleep(0.1)


def whole_reply_stored(db: Path, cid: str, count: int = 2) -> None:
    """The conversation holds ``count`` messages, the last a whole reply."""
    messages = stored(db, cid, count)
    assert [(m.role, m.status) for m in messages[-2:]] == [("user", "ok"), ("assistant", "ok")]
    assert len(messages) == count
    assert len(messages[-1].content.split()) == WORDS


def whole_reply_shown(page: Page, count: int = 2) -> None:
    expect(stop_button(page)).to_have_count(0, timeout=WAIT)
    expect(chat_messages(page)).to_have_count(count)
    reply = chat_messages(page).last.inner_text()
    assert len(reply.split()) >= WORDS, reply


def test_a_slider_moved_then_a_page_switch_mid_reply(
    tab: Page, turns_app: tuple[str, Path], slow: FakeServerProcess
) -> None:
    cid = start_reply(tab)
    thumb = tab.locator(".st-key-keep_recent input[type='range']")
    thumb.focus()
    thumb.press("ArrowRight")  # a rerun while the reply streams
    whole_reply_shown(tab)
    whole_reply_stored(turns_app[1], cid)
    expect(chat_box(tab)).to_be_enabled()
    assert len(slow.control.requests("chat")) == 1

    start_reply(tab, "My city is Lisbon.")
    tab.get_by_role("link", name="Inspector").click()  # another page while it streams
    expect(tab.get_by_role("heading", name="Inspector")).to_be_visible(timeout=WAIT)
    whole_reply_stored(turns_app[1], cid, 4)
    tab.get_by_role("link", name="Chat").click()
    whole_reply_shown(tab, 4)


def test_a_tab_closed_mid_reply(
    browser: Browser, tab: Page, turns_app: tuple[str, Path], slow: FakeServerProcess
) -> None:
    cid = start_reply(tab)
    tab.context.close()
    whole_reply_stored(turns_app[1], cid)
    context = browser.new_context()
    try:
        again = context.new_page()
        again.goto(f"{turns_app[0]}/?c={cid}")
        wait_for_app(again)
        whole_reply_shown(again)
        expect(again.get_by_text("No reply to your last message")).to_have_count(0)
    finally:
        context.close()


def test_stop_then_a_message_the_store_refuses(
    tab: Page, turns_app: tuple[str, Path], slow: FakeServerProcess
) -> None:
    db = turns_app[1]
    slow.control.config(reply_words=10 * WORDS)  # long: Stop ends it well before its end
    cid = start_reply(tab)
    stop_button(tab).click()
    expect(tab.get_by_text("Stopped: you ended this reply")).to_be_visible(timeout=WAIT)
    expect(tab.get_by_text("Cut off")).to_have_count(0)
    shown = chat_messages(tab).last.inner_text()
    messages = stored(db, cid, 2)
    assert [(m.role, m.status) for m in messages] == [("user", "ok"), ("assistant", "incomplete")]
    assert 0 < len(messages[1].content.split()) < 10 * WORDS
    assert messages[1].content.split()[0] in shown
    with Store(f"sqlite:///{db}") as store:
        stops = [e for e in store.list_events(cid) if e.kind == EventKind.STOPPED]
    assert [e.data["seq"] for e in stops] == [messages[1].seq]
    expect(tab.get_by_role("button", name="Retry")).to_be_visible()
    tab.reload()
    wait_for_app(tab)
    expect(tab.get_by_text("Stopped: you ended this reply")).to_be_visible(timeout=WAIT)

    # nothing typed is lost: a message the store refuses stays on screen, with Retry
    slow.control.config(chunk_delay_ms=0, reply_words=None)
    with sqlite3.connect(db) as conn:  # as a full disk would: every new message refused
        conn.execute(
            "CREATE TRIGGER refuse BEFORE INSERT ON messages "
            "BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END"
        )
    try:
        box = chat_box(tab)
        box.fill("My city is Lisbon.")
        box.press("Enter")
        expect(tab.get_by_text("could not be saved, so it was not sent")).to_be_visible(
            timeout=WAIT
        )
        expect(tab.get_by_text("disk is full")).to_be_visible()
        expect(chat_messages(tab)).to_have_count(3)
        expect(chat_messages(tab).last).to_contain_text("My city is Lisbon.")
    finally:
        with sqlite3.connect(db) as conn:
            conn.execute("DROP TRIGGER refuse")
    tab.get_by_role("button", name="Retry").click()
    expect(chat_messages(tab).last).to_contain_text("You said: My city is Lisbon.", timeout=WAIT)
    expect(stop_button(tab)).to_have_count(0, timeout=WAIT)
    expect(chat_messages(tab)).to_have_count(4)
    messages = stored(db, cid, 4)
    assert [(m.role, m.content) for m in messages[2:]] == [
        ("user", "My city is Lisbon."),
        ("assistant", "You said: My city is Lisbon."),
    ]

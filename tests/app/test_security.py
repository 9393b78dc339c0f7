"""Sign-in and owners: with CHATMEM_REQUIRE_LOGIN=1 nothing but a login prompt shows until
Streamlit's OIDC sign-in names the user, and each user sees only their own conversations.

``st.login`` itself needs an identity provider, so these tests never call it: they set the
user AppTest hands to the app (``AppTest.user``) and check the guard.
"""

from __future__ import annotations

import base64
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from streamlit import config as st_config
from streamlit.testing.v1 import AppTest

from chatmem.redact import redact
from chatmem.store import NotFoundError, Store
from chatmem.ui.conversations import checked_conversation, visible_conversations
from chatmem.ui.sidebar import LOCAL_MODE
from chatmem.ui.state import UNAVAILABLE, may_open
from tests.app.conftest import (
    APP,
    TIMEOUT,
    close,
    db_url,
    open_app,
    send,
    session,
    shown_messages,
)
from tests.fakes import FakeServerProcess

SAM = {"is_logged_in": True, "email": "sam@example.com", "name": "Sam"}
KIM = {"is_logged_in": True, "email": "kim@example.com", "name": "Kim"}
PAGES = [
    "app_pages/chat.py",
    "app_pages/inspector.py",
    "app_pages/conversations.py",
    "app_pages/compare.py",
]


@pytest.fixture
def login_env(app_env: FakeServerProcess, monkeypatch: pytest.MonkeyPatch) -> FakeServerProcess:
    monkeypatch.setenv("CHATMEM_REQUIRE_LOGIN", "1")
    return app_env


def shows_only_the_login_prompt(at: AppTest) -> None:
    assert not at.exception, at.exception
    texts = [m.value for m in at.markdown]
    assert "## Sign in" in texts
    assert "## Chat" not in texts
    assert not at.chat_input
    assert "### Memory" not in texts  # no sidebar inspector either
    assert [b.label for b in at.button] == ["Log in"]
    assert not at.dataframe


@pytest.mark.parametrize("user", [{}, {"email": "sam@example.com"}, {"is_logged_in": False}])
def test_login_required_shows_only_a_login_prompt(login_env: FakeServerProcess, user: dict) -> None:
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    at.user = user
    at.run()
    shows_only_the_login_prompt(at)


def test_signed_out_pages_and_links_show_the_login_prompt(
    login_env: FakeServerProcess, store: Store
) -> None:
    conv = store.create_conversation("Sam's secrets", owner="sam@example.com")
    store.append_message(conv.id, "user", "My PIN is 4321.")
    at = open_app(conv.id, is_logged_in=False)
    shows_only_the_login_prompt(at)
    assert "4321" not in str(at)


def test_signed_in_user_chats_and_owns_the_conversation(
    login_env: FakeServerProcess, store: Store
) -> None:
    at = open_app(**SAM)
    assert "## Chat" in [m.value for m in at.main.markdown]
    assert any(c.value == "Signed in as sam@example.com" for c in at.sidebar.caption)
    assert at.button(key="logout")
    send(at, "Hi, my name is Sam.")
    info = store.get_conversation(session(at).conversation_id)
    assert info.owner == "sam@example.com"
    close(at)


def test_each_user_sees_and_opens_only_their_own(
    login_env: FakeServerProcess, store: Store
) -> None:
    sam = open_app(**SAM)
    send(sam, "Sam's trip to Lisbon")
    sam_id = session(sam).conversation_id
    kim = open_app(**KIM)
    send(kim, "Kim's PIN is 4321")
    kim_id = session(kim).conversation_id
    legacy = store.create_conversation("from before sign-in")  # no owner

    kim.switch_page("app_pages/conversations.py").run()
    listed = "\n".join(m.value for m in kim.main.markdown)
    assert "Kim's PIN is 4321" in listed
    assert "Sam's trip" not in listed and "from before sign-in" not in listed
    kim.text_input(key="conversations_search").set_value("Lisbon").run()
    assert "Sam's trip" not in "\n".join(m.value for m in kim.main.markdown)

    # Sam cannot open Kim's conversation by its link, nor the ownerless one
    for other in (kim_id, legacy.id):
        stranger = open_app(other, **SAM)
        assert [w.value for w in stranger.warning] == [UNAVAILABLE]
        assert shown_messages(stranger) == []
        assert "4321" not in str(stranger)
        close(stranger)
    # ...while his own opens
    again = open_app(sam_id, **SAM)
    assert shown_messages(again)[0] == ("user", "Sam's trip to Lisbon")
    for at in (sam, kim, again):
        close(at)


def test_owner_isolation_in_the_helpers(store: Store) -> None:
    sam = store.create_conversation("Sam's", owner="sam@example.com")
    kim = store.create_conversation("Kim's", owner="kim@example.com")
    nobody = store.create_conversation("Nobody's")
    # sign-in required: only one's own
    assert [c.id for c in visible_conversations(store, "sam@example.com", True)] == [sam.id]
    assert visible_conversations(store, None, True) == []
    assert checked_conversation(store, sam.id, "sam@example.com", True) == sam
    for cid in (kim.id, nobody.id, "no-such-id"):
        with pytest.raises(NotFoundError):
            checked_conversation(store, cid, "sam@example.com", True)
    assert not may_open(kim, "sam@example.com", True)
    assert not may_open(nobody, None, True)
    # local mode (no sign-in): one user, every conversation
    assert {c.id for c in visible_conversations(store, None, False)} == {sam.id, kim.id, nobody.id}
    assert may_open(kim, None, False)


def test_sign_in_without_an_identity_is_refused(login_env: FakeServerProcess) -> None:
    at = open_app(is_logged_in=True, name="No Email")
    assert not at.chat_input
    assert any("did not say who you are" in e.value for e in at.error)


@pytest.fixture
def localhost() -> Iterator[None]:
    saved = st_config.get_option("server.address")
    st_config.set_option("server.address", "localhost")
    try:
        yield
    finally:
        st_config.set_option("server.address", saved)


def test_local_mode_says_so(app_env: FakeServerProcess, localhost: None) -> None:
    at = open_app()
    assert LOCAL_MODE == "Local mode: no sign-in; serving on localhost only"
    assert LOCAL_MODE in [c.value for c in at.sidebar.caption]
    assert not at.button(key="new_chat").disabled
    close(at)


def test_no_sign_in_on_every_interface_is_flagged(app_env: FakeServerProcess) -> None:
    saved = st_config.get_option("server.address")
    st_config.set_option("server.address", "0.0.0.0")
    try:
        at = open_app()
    finally:
        st_config.set_option("server.address", saved)
    assert any("anyone who can reach it" in c.value for c in at.sidebar.caption)
    close(at)


def page_text(at: AppTest) -> str:
    """Everything a page shows as text, tables included."""
    shown = [
        str(e.value)
        for kind in ("markdown", "caption", "error", "warning", "info", "toast", "text")
        for e in getattr(at, kind)
    ]
    shown += [e.value.to_csv() for e in at.dataframe]
    return "\n".join(shown)


@pytest.mark.parametrize("credential", ["api key", "URL password"])
def test_echoed_key_or_url_password_on_no_page_and_in_no_row(
    app_env: FakeServerProcess, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, credential: str
) -> None:
    """A server that repeats the credential in its error: not on any page, not in the
    database (read with sqlite3), not in the conversation's JSON export."""
    if credential == "api key":
        key = "sk-test-LEAKCHECK-appTest0123456789"
        monkeypatch.setenv("OPENAI_API_KEY", key)
        needles = [key]
    else:
        monkeypatch.delenv("OPENAI_API_KEY")
        url = app_env.url.replace("http://", "http://sam:hunter2-app@")
        monkeypatch.setenv("OPENAI_BASE_URL", url)
        needles = ["hunter2-app", base64.b64encode(b"sam:hunter2-app").decode()]
    at = open_app()
    send(at, "Hi, my name is Sam.")
    app_env.control.fail({"kind": "400", "echo": True})
    send(at, "Are you still there?")
    assert any("refused the request (HTTP 400)" in e.value for e in at.error)
    assert needles[-1] in app_env.control.requests()[-1]["headers"]["authorization"]
    cid = session(at).conversation_id
    for page in PAGES:
        at.switch_page(page).run()
        assert not at.exception, at.exception
        text = page_text(at)
        assert "Answering" in text or page != "app_pages/chat.py"
        assert not any(n in text for n in needles), page
    close(at)
    with sqlite3.connect(tmp_path / "chatmem-test.db") as conn:
        rows = json.dumps(conn.execute("SELECT kind, data FROM events").fetchall())
    assert "refused the request (HTTP 400)" in rows
    assert not any(n in rows for n in needles)
    with Store(db_url(tmp_path)) as store:
        exported = json.dumps(store.export_json(cid), default=str)
    assert not any(n in exported for n in needles)


def test_url_password_with_api_key_is_one_sentence_at_start(
    app_env: FakeServerProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", app_env.url.replace("http://", "http://sam:hunter2@"))
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    at.run()
    assert not at.exception, at.exception
    (error,) = {e.value for e in at.error}  # on the page and in the sidebar
    assert "OPENAI_BASE_URL" in error and "OPENAI_API_KEY" in error
    assert "hunter2" not in page_text(at)
    assert not at.chat_input


def test_redact() -> None:
    shown = redact("gpt-4o at http://u:pw@h:1/v1 sk-1234", "sk-1234")
    assert shown == "gpt-4o at http://h:1/v1 ***"
    assert redact("no secrets here, sam@example.com", None) == "no secrets here, sam@example.com"

"""AppTest fixtures: the real app against the fake OpenAI-compatible server.

Every test runs in an empty working directory (no stray ``.env`` or ``secrets.toml``) with
only the settings it sets, and its own SQLite database file.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from streamlit.testing.v1 import AppTest

from chatmem.config import ENV_NAMES
from chatmem.store import Store
from chatmem.ui.state import SESSION_KEY, ChatSession
from tests.fakes import FakeServerProcess

ROOT = Path(__file__).resolve().parents[2]
APP = ROOT / "app.py"
TIMEOUT = 30


@pytest.fixture
def app_env(
    fake: FakeServerProcess, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> FakeServerProcess:
    """Settings for the fake server only; an empty working directory."""
    for name in ENV_NAMES.values():
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OPENAI_BASE_URL", fake.url)
    monkeypatch.setenv("OPENAI_API_KEY", "test-key")
    monkeypatch.setenv("CHATMEM_MAX_RETRIES", "0")
    monkeypatch.setenv("CHATMEM_TIMEOUT", "15")
    monkeypatch.setenv("CHATMEM_DATABASE_URL", db_url(tmp_path))
    monkeypatch.chdir(tmp_path)
    return fake


def db_url(folder: Path) -> str:
    return f"sqlite:///{folder / 'chatmem-test.db'}"


@pytest.fixture
def store(app_env: FakeServerProcess, tmp_path: Path) -> Iterator[Store]:
    """The test's database, opened beside the app's own connection to it."""
    with Store(db_url(tmp_path)) as opened:
        yield opened


@pytest.fixture
def app(app_env: FakeServerProcess) -> Iterator[AppTest]:
    """The app, run once (on the chat page)."""
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    at.run()
    assert not at.exception, at.exception
    yield at
    sess = at.session_state.get(SESSION_KEY)
    if isinstance(sess, ChatSession):
        sess.bot.close()


def open_app(cid: str | None = None, **user: Any) -> AppTest:
    """A new browser session (as after a reload), on ``?c=<cid>`` if given."""
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    if cid is not None:
        at.query_params["c"] = cid
    if user:
        at.user = dict(user)
    at.run()
    assert not at.exception, at.exception
    return at


def close(at: AppTest) -> None:
    sess = at.session_state.get(SESSION_KEY)
    if isinstance(sess, ChatSession):
        sess.bot.close()


def session(at: AppTest) -> ChatSession:
    sess = at.session_state[SESSION_KEY]
    assert isinstance(sess, ChatSession)
    return sess


def send(at: AppTest, text: str) -> AppTest:
    """Submit ``text`` and wait for the reply (produced on its own thread) to end."""
    at.chat_input(key="chat_input").set_value(text).run()
    assert not at.exception, at.exception
    return finish_turn(at)


def retry(at: AppTest) -> AppTest:
    """Click Retry and wait for the reply to end."""
    at.button(key="retry").click().run()
    assert not at.exception, at.exception
    return finish_turn(at)


def finish_turn(at: AppTest) -> AppTest:
    """Wait for the turn in flight (if any) to end, then run once more, as the page's poll
    does in a browser."""
    sess = at.session_state.get(SESSION_KEY)
    turn = sess.turn if isinstance(sess, ChatSession) else None
    if turn is not None:
        assert turn.wait(TIMEOUT), "the reply did not end"
        at.run()
        assert not at.exception, at.exception
    return at


def shown_messages(at: AppTest) -> list[tuple[str, str]]:
    """(role, text) of every chat message on the page."""
    return [(m.name, "\n".join(md.value for md in m.markdown)) for m in at.chat_message]

"""Credentials stay out of everything chatmem stores, exports or logs, even when a server
repeats them in an error; and a URL password never silently replaces the API key.

The fake server's ``echo`` failure answers with the Authorization header it received (and,
for Basic auth, the decoded user name and password), the way a careless server might.
Each row of the README's Reliability table names the test that backs it.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import sqlite3
from dataclasses import asdict
from pathlib import Path

import pytest

from chatmem import ChatMemory, ModelError, OpenAIChat, Settings, SettingsError, load_settings
from chatmem.embeddings import Embedder
from chatmem.events import Event, EventKind
from chatmem.journal import Journal
from chatmem.models import ServerAccess
from chatmem.redact import SecretFilter, redact, register, url_secrets
from chatmem.store import Store
from tests.fakes import FakeServerProcess

KEY = "sk-test-ECHOED-key-0123456789abcdef"
USER, PASSWORD = "sam", "hunter2-echoed-pw"
BASIC = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()


def with_password(url: str, user: str = USER, password: str = PASSWORD) -> str:
    return url.replace("http://", f"http://{user}:{password}@")


def db_texts(db: Path) -> dict[str, str]:
    """Every text column of every chatmem table, read with plain sqlite3, by table name."""
    out: dict[str, str] = {}
    with sqlite3.connect(db) as conn:
        for table, columns in {
            "conversations": "title, settings",
            "messages": "content",
            "summaries": "text, model",
            "events": "kind, data",
        }.items():
            rows = conn.execute(f"SELECT {columns} FROM {table}").fetchall()
            out[f"{table} table"] = json.dumps(rows)
    return out


def leaks(places: dict[str, str], needles: list[str]) -> list[str]:
    return [name for name, text in places.items() if any(n in text for n in needles)]


@pytest.mark.parametrize("credential", ["api key", "URL password"])
def test_echoed_credential_is_nowhere(
    fake: FakeServerProcess, tmp_path: Path, caplog: pytest.LogCaptureFixture, credential: str
) -> None:
    """A server that repeats the key (or the URL password) in its error messages: the
    session's events, every table, both exports, the log and the error itself are clean."""
    caplog.set_level(logging.DEBUG)
    if credential == "api key":
        settings = Settings(api_key=KEY, base_url=fake.url, max_retries=0)
        needles = [KEY]
    else:
        settings = Settings(base_url=with_password(fake.url), max_retries=0)
        needles = [PASSWORD, BASIC]
    db = tmp_path / "leak.db"
    store = Store(f"sqlite:///{db}")
    bot = ChatMemory(
        settings=settings, store=store, background=False, max_tokens=300, keep_recent=2
    )
    echo = {"kind": "400", "echo": True}
    fake.control.fail(echo, {**echo, "only": "summary"})
    with pytest.raises(ModelError) as info:
        bot.ask("Hello there, my name is Sam.")
    for i in range(8):
        bot.ask(f"Topic {i}: gardens, rivers, trains and old maps of the coast.")
    # the server did get the credential and said it back, in a chat and in a summary call
    sent = [r["headers"].get("authorization", "") for r in fake.control.requests()]
    assert all(needles[-1] in header for header in sent)
    assert [r["status"] for r in fake.control.requests()][:1] == [400]
    assert any(e.kind == EventKind.FOLD_FAILED for e in bot.events)
    assert any(e.kind == EventKind.ERROR for e in bot.events)
    cid = bot.conversation_id
    assert cid is not None
    places = {
        "error shown": info.value.user_message,
        "session events": json.dumps([asdict(e) for e in bot.events], default=str),
        "JSON export": json.dumps(store.export_json(cid), default=str),
        "Markdown export": store.export_markdown(cid),
        "log": caplog.text,
    }
    bot.close()
    store.close()
    places.update(db_texts(db))
    places["database files"] = "".join(
        p.read_bytes().decode("latin-1") for p in tmp_path.glob("leak.db*")
    )
    assert leaks(places, needles) == []
    # what is said instead still tells the user what happened
    assert "refused the request (HTTP 400)" in info.value.user_message
    assert "***" in info.value.user_message


def test_journal_scrubs_every_text_it_writes(tmp_path: Path) -> None:
    """Message content, title, settings record, summary, event message and event data:
    each written with the secret in it, none stored with it (read back with sqlite3)."""
    secret = "sk-test-JOURNAL-only-0123456789"  # known to this journal only, not registered
    db = tmp_path / "journal.db"
    store = Store(f"sqlite:///{db}")
    journal = Journal(store, secrets=(secret,))
    journal.create({"system": f"key {secret}", "nested": [{"note": secret}]}, owner=None)
    journal.append("user", f"my key is {secret}")
    journal.rename(f"About {secret}")
    journal.save_settings({"system": f"use {secret}", "max_tokens": 300})
    journal.add_summary(f"- The user's key is {secret}.", 9, 1, model="m", usage=None)
    event = journal.add_event(
        Event(EventKind.ERROR, f"server said {secret}", data={"detail": [f"x {secret}"], "n": 1})
    )
    store.close()
    assert secret not in json.dumps(asdict(event), default=str)
    assert event.data["n"] == 1 and event.data["detail"] == ["x ***"]
    assert leaks(db_texts(db), [secret]) == []
    texts = db_texts(db)
    assert "my key is ***" in texts["messages table"]
    assert "About ***" in texts["conversations table"]
    # without a store nothing is written, and the event handed back is scrubbed all the same
    bare = Journal(None, secrets=(secret,)).add_event(Event(EventKind.ERROR, f"said {secret}"))
    assert bare.message == "said ***"


def test_conversation_text_keeps_urls_that_are_not_credentials(tmp_path: Path) -> None:
    """A user's message keeps a URL with a user name in it (only known secrets go), while
    chatmem's own texts (events) drop any URL user info."""
    store = Store(f"sqlite:///{tmp_path}/urls.db")
    journal = Journal(store)
    journal.create({}, owner=None)
    stored = journal.append("user", "clone ssh://git@example.com/repo.git please")
    event = journal.add_event(Event(EventKind.ERROR, "at http://bob:pw123456@example.com/v1"))
    store.close()
    assert stored is not None and stored.content == "clone ssh://git@example.com/repo.git please"
    assert event.message == "at http://example.com/v1"


def test_log_lines_from_any_chatmem_logger_are_scrubbed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Message, arguments and traceback; from a logger made after the secret was known
    (a filter on the ``chatmem`` logger alone would not see a child logger's records)."""
    secret = "sk-test-LOGGED-0123456789abcdef"
    register(secret)
    caplog.set_level(logging.DEBUG)
    late = logging.getLogger("chatmem.made_later_than_register")
    late.warning(f"in the message {secret}")
    late.warning("in an argument %s", secret)
    try:
        raise RuntimeError(f"in the exception {secret}")
    except RuntimeError:
        late.exception("with a traceback")
    logging.getLogger("chatmem").error("url http://u:%s@host/v1", "pw-in-a-url")
    assert secret not in caplog.text and "pw-in-a-url" not in caplog.text
    assert caplog.text.count("***") == 3
    assert "http://host/v1" in caplog.text
    assert all(secret not in r.getMessage() for r in caplog.records)


def test_secret_filter_leaves_clean_records_alone() -> None:
    record = logging.LogRecord("chatmem.x", logging.INFO, __file__, 1, "%d items", (3,), None)
    assert SecretFilter().filter(record) is True
    assert (record.msg, record.args) == ("%d items", (3,))


def test_redact_scrubs_the_longest_secret_first() -> None:
    """A password that is part of the key must not leave the rest of the key behind."""
    key = "sk-test-abcd1234-LONGER-tail"
    assert redact(f"x {key} y", "abcd1234", key) == "x *** y"


def test_url_secrets_include_the_basic_auth_token() -> None:
    found = url_secrets("http://sam:p%40ss-word@host/v1")
    token = base64.b64encode(b"sam:p@ss-word").decode()
    assert set(found) == {"p%40ss-word", "p@ss-word", token}


# -- a password in OPENAI_BASE_URL and OPENAI_API_KEY ------------------------------------
def test_url_password_with_api_key_is_refused_at_start(tmp_path: Path) -> None:
    env = {"OPENAI_BASE_URL": "http://sam:hunter22@localhost:8000/v1", "OPENAI_API_KEY": KEY}
    with pytest.raises(SettingsError) as info:
        load_settings(env, root=tmp_path)
    message = str(info.value)
    assert "OPENAI_BASE_URL" in message and "OPENAI_API_KEY" in message
    assert "hunter22" not in message and KEY not in message
    assert message.count(". ") == 0 and message.endswith(".")  # one sentence
    # a user name alone is sent as Basic auth too, so it would replace the key just the same
    with pytest.raises(SettingsError, match="OPENAI_API_KEY"):
        load_settings({**env, "OPENAI_BASE_URL": "http://sam@localhost:8000/v1"}, root=tmp_path)
    # the library's own constructors say the same
    with pytest.raises(SettingsError, match="OPENAI_BASE_URL"):
        OpenAIChat("gpt-4o-mini", api_key=KEY, base_url=env["OPENAI_BASE_URL"])
    with pytest.raises(SettingsError, match="OPENAI_BASE_URL"):
        Embedder(access=ServerAccess(api_key=KEY, base_url=env["OPENAI_BASE_URL"]))


def test_url_password_alone_is_sent_as_basic_auth(fake: FakeServerProcess) -> None:
    """The password leaves the URL the client keeps and goes out in one explicit header."""
    model = OpenAIChat("gpt-4o-mini", base_url=with_password(fake.url), max_retries=0)
    assert PASSWORD not in str(model._client.base_url)
    assert model.base_url == fake.url
    assert model.stream([{"role": "user", "content": "hi"}], max_reply_tokens=50).read()
    (request,) = fake.control.requests()
    assert request["headers"]["authorization"] == f"Basic {BASIC}"
    # the embedder builds its client the same way (the fake logs chat requests only)
    embedder = Embedder(access=ServerAccess(base_url=with_password(fake.url), max_retries=0))
    assert PASSWORD not in str(embedder._client.base_url)
    assert embedder._client.default_headers["Authorization"] == f"Basic {BASIC}"
    assert len(embedder.embed(["hi"])[0]) == 256


def test_url_user_name_with_escapes_is_decoded_like_httpx(fake: FakeServerProcess) -> None:
    model = OpenAIChat("gpt-4o-mini", base_url=with_password(fake.url, "a%40b", "p%3Aq"))
    model.stream([{"role": "user", "content": "hi"}], max_reply_tokens=50).read()
    (request,) = fake.control.requests()
    expected = base64.b64encode(b"a@b:p:q").decode()
    assert request["headers"]["authorization"] == f"Basic {expected}"


def test_api_key_alone_is_sent_as_bearer(fake: FakeServerProcess) -> None:
    model = OpenAIChat("gpt-4o-mini", api_key=KEY, base_url=fake.url, max_retries=0)
    model.stream([{"role": "user", "content": "hi"}], max_reply_tokens=50).read()
    (request,) = fake.control.requests()
    assert request["headers"]["authorization"] == f"Bearer {KEY}"
    assert not re.search(r"basic", json.dumps(request["headers"]), re.IGNORECASE)


def test_a_short_password_does_not_blank_out_the_same_word_in_conversation_text() -> None:
    from chatmem.journal import Journal

    journal = Journal(None, secrets=("tangerine", "sk-test-a-long-enough-key-123"))
    said = "I grow tangerine trees; my key is sk-test-a-long-enough-key-123."
    assert journal._text(said) == "I grow tangerine trees; my key is ***."
    assert "tangerine" not in journal._data({"message": "tangerine said no"})["message"]

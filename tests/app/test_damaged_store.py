"""The app on a damaged store: the chat page keeps its input and shows no exception.

Before, a damaged full-text index put "StoreError: ... vtable constructor failed:
messages_fts" (with the SQL and the user's words) on every page and the chat input vanished:
the sidebar gauge builds the next request, which searches the index for recall.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from chatmem import ChatMemory, OpenAIChat, Settings, cli
from chatmem.events import EventKind
from chatmem.recall import RECALL_UNAVAILABLE
from chatmem.store import Store, StoreError
from tests.app.conftest import APP, TIMEOUT, close, db_url, open_app, send, shown_messages
from tests.fakes import FakeServerProcess
from tests.unit.test_store_damage import DAMAGE, damage, failing_rebuild  # noqa: F401

FIRST = "My boat is called Seagull and she is moored at Pier Nine."
LEAKS = ("vtable", "messages_fts", "StoreError", "SELECT", "Traceback", "malformed")


def _conversation(fake: FakeServerProcess, folder: Path) -> str:
    """A stored conversation whose first message is folded away, so a question about it
    needs recall (saved with a small budget, which the app reopens it with)."""
    with Store(db_url(folder)) as store:
        bot = ChatMemory(
            model=OpenAIChat("gpt-4o-mini", api_key="k", base_url=fake.url, max_retries=0),
            settings=Settings(),
            store=store,
            max_tokens=600,
            keep_recent=4,
            background=False,
        )
        bot.ask(FIRST)
        for i in range(16):
            bot.ask(f"Topic {i}: gardens, rivers, trains and old maps.")
        cid = bot.conversation_id
        bot.close()
    assert cid is not None
    return cid


def _page_text(at: AppTest) -> str:
    parts = [
        e.value
        for kind in ("markdown", "caption", "warning", "error", "info")
        for e in at.get(kind)
    ]
    parts += [
        e.value
        for kind in ("markdown", "caption", "warning", "error")
        for e in at.sidebar.get(kind)
    ]
    return "\n".join(str(p) for p in parts)


def _input_ready(at: AppTest) -> bool:
    box = at.chat_input(key="chat_input")
    return not box.proto.disabled


def _recall_off_notices(at: AppTest) -> list[str]:
    return [w.value for w in at.sidebar.warning if "Recall of older messages is off" in w.value]


def _events(folder: Path, cid: str, kind: EventKind) -> list:
    with Store(db_url(folder)) as store:
        return [e for e in store.list_events(cid) if e.kind == kind]


def test_a_damaged_index_is_rebuilt_and_the_chat_goes_on(
    app_env: FakeServerProcess, tmp_path: Path
) -> None:
    cid = _conversation(app_env, tmp_path)
    damage(tmp_path / "chatmem-test.db", DAMAGE["blocks overwritten"][0])
    at = open_app(cid)
    send(at, "Where is the boat Seagull moored?")
    assert not at.exception
    assert _input_ready(at)
    assert shown_messages(at)[-1] == ("assistant", "You said: Where is the boat Seagull moored?")
    assert _recall_off_notices(at) == []
    recalls = _events(tmp_path, cid, EventKind.RECALL)
    assert 1 in recalls[-1].data["seqs"]
    close(at)


def test_an_index_that_cannot_be_rebuilt_turns_recall_off_not_the_chat(
    app_env: FakeServerProcess,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    failing_rebuild: list[int],  # noqa: F811
) -> None:
    cid = _conversation(app_env, tmp_path)
    damage(tmp_path / "chatmem-test.db", DAMAGE["blocks overwritten"][0])
    at = open_app(cid)
    send(at, "Where is the boat Seagull moored?")
    send(at, "Is the boat Seagull still at the pier?")
    at.run()  # one more rerun: the notice is not recorded again
    assert not at.exception
    assert _input_ready(at)
    assert shown_messages(at)[-2:] == [
        ("user", "Is the boat Seagull still at the pier?"),
        ("assistant", "You said: Is the boat Seagull still at the pier?"),
    ]
    text = _page_text(at)
    assert not [leak for leak in LEAKS if leak in text], text
    assert _recall_off_notices(at) == [RECALL_UNAVAILABLE]
    assert [e.message for e in _events(tmp_path, cid, EventKind.RECALL_UNAVAILABLE)] == [
        RECALL_UNAVAILABLE
    ]
    with Store(db_url(tmp_path)) as store:
        stored = [m.content for m in store.messages(cid)][-4:]
    assert stored == [
        "Where is the boat Seagull moored?",
        "You said: Where is the boat Seagull moored?",
        "Is the boat Seagull still at the pier?",
        "You said: Is the boat Seagull still at the pier?",
    ]

    monkeypatch.undo()  # the operator fixes the cause and reindexes
    monkeypatch.setenv("CHATMEM_DATABASE_URL", db_url(tmp_path))
    assert cli.main(["--reindex"]) == 0
    send(at, "Tell me about the boat Seagull again.")
    assert _recall_off_notices(at) == []
    assert 1 in _events(tmp_path, cid, EventKind.RECALL)[-1].data["seqs"]
    close(at)


def test_a_database_path_through_a_file_is_one_sentence_without_the_path(
    app_env: FakeServerProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "notes.txt").write_text("not a folder")
    monkeypatch.setenv("CHATMEM_DATABASE_URL", f"sqlite:///{tmp_path / 'notes.txt' / 'chat.db'}")
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT).run()
    assert not at.exception
    errors = [e.value for e in at.error]
    assert errors and set(errors) == {
        "Chatmem cannot write its database: part of its path is a file, not a folder. "
        "Set CHATMEM_DATABASE_URL to a writable location."
    }
    assert str(tmp_path) not in _page_text(at)


def test_a_store_failure_while_measuring_the_next_request_keeps_the_page(
    app_env: FakeServerProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Any other store failure in the recall search costs the gauge, not the page."""
    cid = _conversation(app_env, tmp_path)
    with Store(db_url(tmp_path)) as store:
        store.append_message(cid, "user", "Where is the boat Seagull moored?")  # awaits a reply

    def locked(self: Store, *args: object, **kwargs: object) -> list:
        raise StoreError("sqlite error: database is locked")

    monkeypatch.setattr(Store, "search_messages", locked)
    at = open_app(cid)
    assert not at.exception
    assert _input_ready(at)
    assert [w.value for w in at.sidebar.warning] == [
        "The next request could not be measured: sqlite error: database is locked"
    ]
    close(at)

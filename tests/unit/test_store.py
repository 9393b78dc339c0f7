"""chatmem.store on SQLite and PostgreSQL (see conftest.py for the ``store_url`` fixture)."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from chatmem import store as store_module
from chatmem.errors import SettingsError
from chatmem.events import Event, EventKind
from chatmem.store import (
    EXPORT_FORMAT,
    MIGRATIONS,
    SCHEMA_VERSION,
    ImportValidationError,
    NotFoundError,
    Store,
    StoreError,
    check_database_url,
    clean_settings,
    resolve_database_url,
)
from chatmem.store import engine as store_engine
from chatmem.store import messages as store_messages
from chatmem.store import schema as store_schema
from tests.unit.conftest import open_stores_at_once

# --------------------------------------------------------------------------------------------
# URLs
# --------------------------------------------------------------------------------------------


def test_plain_path_means_sqlite(tmp_path: Path) -> None:
    url = resolve_database_url(str(tmp_path / "a.db"))
    assert url.drivername == "sqlite+pysqlite"
    assert url.database == str(tmp_path / "a.db")


def test_relative_sqlite_url_is_resolved_against_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert resolve_database_url("sqlite:///sub/x.db").database == str(tmp_path / "sub" / "x.db")
    assert resolve_database_url("x.db").database == str(tmp_path / "x.db")


@pytest.mark.parametrize(
    "raw",
    [
        "postgres://u:pw@db:5432/chat",
        "postgresql://u:pw@db:5432/chat",
        "postgresql+psycopg://u:pw@db:5432/chat",
    ],
)
def test_postgres_urls_use_psycopg3(raw: str) -> None:
    url = resolve_database_url(raw)
    assert url.drivername == "postgresql+psycopg"
    assert (url.host, url.port, url.database, url.password) == ("db", 5432, "chat", "pw")


def test_default_url_creates_the_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with Store() as store:
        assert store.backend == "sqlite"
        store.create_conversation("x")
    assert (tmp_path / ".chatmem" / "chatmem.db").is_file()


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        ("", "it is empty"),
        ("   ", "it is empty"),
        ("postgresql://sam:hunter2@db:port/chat", "the port is not a number"),
        ("postgresql://sam:hunter2@db:99999/chat", "out of range"),
        ("mysql://sam:hunter2@db/chat", "the database 'mysql' is not supported"),
        ("postgresql+psycopg2://sam:hunter2@db/chat", "driver 'psycopg2' is not supported"),
        ("postgres:/sam:hunter2@db/chat", "lacks '://'"),
        ("://sam:hunter2@db", "could not be parsed"),
        ("sqlite:///", "names no database file"),
        ("sqlite://sam:hunter2@host/x.db", "takes no host"),
    ],
)
def test_malformed_url_is_one_clear_sentence_without_the_password(raw: str, problem: str) -> None:
    with pytest.raises(StoreError) as caught:
        Store(raw)
    message = str(caught.value)
    assert problem in message
    assert "hunter2" not in message
    assert message.count(". ") == 0 and message.endswith(".")


@pytest.mark.parametrize(
    ("raw", "kept"),
    [
        ("  chat.db ", "chat.db"),
        ("sqlite:///a.db", "sqlite:///a.db"),
        ("postgresql+psycopg://u:pw@db/chat", "postgresql+psycopg://u:pw@db/chat"),
        ("postgres:///chat?host=/var/run/postgresql", "postgres:///chat?host=/var/run/postgresql"),
    ],
)
def test_check_database_url_keeps_what_the_store_can_open(raw: str, kept: str) -> None:
    assert check_database_url(raw) == kept


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (
            "mysql://sam:hunter2@db/chat",
            "CHATMEM_DATABASE_URL must start with sqlite:/// or postgresql://, not mysql://.",
        ),
        ("postgresql:///chat", "CHATMEM_DATABASE_URL for PostgreSQL needs a host name."),
    ],
)
def test_check_database_url_refuses_with_a_settings_error(raw: str, message: str) -> None:
    with pytest.raises(SettingsError) as caught:
        check_database_url(raw)
    assert str(caught.value) == message


def test_unreachable_postgres_names_the_masked_url() -> None:
    with pytest.raises(StoreError) as caught:
        Store("postgresql://sam:hunter2@127.0.0.1:1/chat?connect_timeout=2")
    message = str(caught.value)
    assert "hunter2" not in message
    assert "sam:***@127.0.0.1:1/chat" in message


def test_in_memory_sqlite_works_across_threads() -> None:
    with Store("sqlite://") as store:
        cid = store.create_conversation().id
        threads = [
            threading.Thread(
                target=lambda: [store.append_message(cid, "user", "x") for _ in range(20)]
            )
            for _ in range(3)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert [m.seq for m in store.messages(cid)] == list(range(1, 61))


# --------------------------------------------------------------------------------------------
# Schema and migrations
# --------------------------------------------------------------------------------------------


def _versions(store: Store) -> list[tuple[int, str]]:
    assert store._engine is not None
    with store._engine.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT version, applied_at FROM schema_version ORDER BY version")
        )
        return [(row.version, row.applied_at) for row in rows]


def test_migrations_from_an_empty_database(store_url: str) -> None:
    with Store(store_url) as store:
        assert store.schema_version == SCHEMA_VERSION == len(MIGRATIONS)
        assert [v for v, _ in _versions(store)] == [m.version for m in MIGRATIONS]
        assert store._engine is not None
        names = set(sa.inspect(store._engine).get_table_names())
    assert set(store_module.TABLE_NAMES) <= names


def test_reopening_a_migrated_database_is_a_no_op(store_url: str) -> None:
    with Store(store_url) as first:
        cid = first.create_conversation("kept").id
        before = _versions(first)
    with Store(store_url) as second:
        assert _versions(second) == before
        assert second.get_conversation(cid) is not None
        assert second.schema_version == SCHEMA_VERSION


def test_an_older_database_gets_only_the_missing_migrations(store_url: str) -> None:
    with Store(store_url) as store:
        assert store._engine is not None
        with store._engine.begin() as conn:
            conn.execute(sa.text("DROP INDEX ix_conversations_owner_updated"))
            conn.execute(sa.text("DELETE FROM schema_version WHERE version >= 2"))
        first_applied = _versions(store)[0]
    with Store(store_url) as store:
        assert store._engine is not None
        assert _versions(store)[0] == first_applied  # version 1 untouched
        assert store.schema_version == SCHEMA_VERSION
        indexes = {ix["name"] for ix in sa.inspect(store._engine).get_indexes("conversations")}
        assert "ix_conversations_owner_updated" in indexes


def test_migrations_are_idempotent(store_url: str) -> None:
    """A half-recorded migration (DDL done, version row missing) re-applies cleanly."""
    with Store(store_url) as store:
        assert store._engine is not None
        with store._engine.begin() as conn:
            conn.execute(sa.text("DELETE FROM schema_version"))
    with Store(store_url) as store:
        assert [v for v, _ in _versions(store)] == [m.version for m in MIGRATIONS]


def test_a_newer_database_is_refused(store_url: str) -> None:
    with Store(store_url) as store:
        assert store._engine is not None
        with store._engine.begin() as conn:
            conn.execute(
                sa.text(
                    "INSERT INTO schema_version (version, description, applied_at) "
                    "VALUES (99, 'future', '2099-01-01')"
                )
            )
    with pytest.raises(StoreError, match="newer than this chatmem supports"):
        Store(store_url)


def test_concurrent_opens_of_a_blank_database(store_url: str) -> None:
    stores, errors = open_stores_at_once(store_url)
    try:
        assert errors == []
        assert [v for v, _ in _versions(stores[0])] == [m.version for m in MIGRATIONS]
    finally:
        for opened in stores:
            opened.close()


def test_query_tables_match_the_migrated_schema(store: Store) -> None:
    assert store._engine is not None
    inspector = sa.inspect(store._engine)
    for table in store_schema._meta.sorted_tables:
        columns = {col["name"] for col in inspector.get_columns(table.name)}
        assert columns == set(table.columns.keys()), table.name


def test_sqlite_connection_settings(tmp_path: Path) -> None:
    with Store(str(tmp_path / "p.db")) as store:
        assert store._engine is not None
        with store._engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            busy = conn.exec_driver_sql("PRAGMA busy_timeout").scalar()
            assert busy == store_engine.SQLITE_BUSY_TIMEOUT_MS


def test_closed_store_raises(store_url: str) -> None:
    store = Store(store_url)
    store.close()
    store.close()  # twice is fine
    with pytest.raises(StoreError, match="closed"):
        store.list_conversations()


# --------------------------------------------------------------------------------------------
# Conversations
# --------------------------------------------------------------------------------------------


def test_backend_name(store: Store, store_url: str) -> None:
    assert store.backend == ("sqlite" if store_url.startswith("sqlite") else "postgresql")


def test_create_get_rename_settings_delete(store: Store) -> None:
    info = store.create_conversation("Trip", settings={"model": "m", "keep_recent": 6}, owner="sam")
    assert len(info.id) == 32 and info.title == "Trip" and info.owner == "sam"
    assert info.created_at == info.updated_at and info.created_at.tzinfo is not None
    assert store.get_conversation(info.id) == info

    renamed = store.rename_conversation(info.id, "  Trip to Rome  ")
    assert renamed.title == "Trip to Rome"
    assert renamed.updated_at >= info.updated_at

    changed = store.update_settings(info.id, {"model": "other", "max_tokens": 500})
    assert changed.settings == {"model": "other", "max_tokens": 500}
    assert store.get_conversation(info.id) == changed

    assert store.delete_conversation(info.id) is True
    assert store.get_conversation(info.id) is None
    assert store.delete_conversation(info.id) is False


def test_defaults_and_missing_conversations(store: Store) -> None:
    info = store.create_conversation()
    assert info.title == "New chat" and info.settings == {} and info.owner is None
    assert store.create_conversation("   ").title == "New chat"
    assert store.get_conversation("nope") is None
    with pytest.raises(NotFoundError):
        store.rename_conversation("nope", "x")
    with pytest.raises(NotFoundError):
        store.update_settings("nope", {})
    with pytest.raises(NotFoundError):
        store.append_message("nope", "user", "x")
    with pytest.raises(NotFoundError):
        store.load("nope")
    with pytest.raises(NotFoundError):
        store.add_event("nope", Event(EventKind.FOLD, "Folded."))
    assert store.messages("nope") == [] and store.count_messages("nope") == 0


def test_list_is_newest_first_and_filters_by_owner(store: Store) -> None:
    a = store.create_conversation("a", owner="sam")
    b = store.create_conversation("b", owner="kim")
    c = store.create_conversation("c", owner="sam")
    assert [x.id for x in store.list_conversations()] == [c.id, b.id, a.id]
    store.append_message(a.id, "user", "bump")
    assert [x.id for x in store.list_conversations()] == [a.id, c.id, b.id]
    assert [x.id for x in store.list_conversations(owner="sam")] == [a.id, c.id]
    assert [x.id for x in store.list_conversations(limit=1)] == [a.id]
    with pytest.raises(StoreError, match="limit"):
        store.list_conversations(limit=0)


def test_search_title_and_content_case_insensitive_with_literal_wildcards(store: Store) -> None:
    rome = store.create_conversation("Trip to ROME")
    sale = store.create_conversation("Shopping")
    store.append_message(sale.id, "user", "Is it 50% off_today?")
    plain = store.create_conversation("Other")
    store.append_message(plain.id, "user", "500 of them, offtoday")

    def found(query: str) -> set[str]:
        return {x.id for x in store.list_conversations(query)}

    assert found("rome") == {rome.id}
    assert found("IS IT") == {sale.id}
    assert found("50%") == {sale.id}  # % is literal, so "500" does not match
    assert found("off_today") == {sale.id}  # _ is literal, so "offtoday"... does not match
    assert found("%") == {sale.id}
    assert found("\\") == set()
    assert found("zebra") == set()
    assert found("") == {rome.id, sale.id, plain.id}


# --------------------------------------------------------------------------------------------
# Messages
# --------------------------------------------------------------------------------------------


def test_append_assigns_contiguous_seqs_and_bumps_updated_at(store: Store) -> None:
    info = store.create_conversation()
    first = store.append_message(info.id, "system", "Be concise.")
    second = store.append_message(
        info.id, "user", "Hi", tokens=5, name="sam", usage={"prompt_tokens": 12}
    )
    third = store.append_message(info.id, "tool", "{}", name="lookup", status="failed")
    assert [first.seq, second.seq, third.seq] == [1, 2, 3]
    assert (second.tokens, second.name, second.usage) == (5, "sam", {"prompt_tokens": 12})
    assert store.messages(info.id) == [first, second, third]
    assert store.count_messages(info.id) == 3
    refreshed = store.get_conversation(info.id)
    assert refreshed is not None and refreshed.updated_at == third.created_at


@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [
        ({"role": "wizard"}, "role: unknown role 'wizard'"),
        ({"content": 42}, "content: expected a string, got an integer"),
        ({"content": "a\x00b"}, "content: contains a NUL character"),
        ({"content": "\ud800"}, "lone surrogate"),
        ({"content": "x" * (store_module.MAX_CONTENT_CHARS + 1)}, "content: too long"),
        ({"tokens": -1}, "tokens: -1 is out of range"),
        ({"tokens": True}, "tokens: expected an integer, got a boolean"),
        ({"status": "done"}, "status: unknown status 'done'"),
        ({"usage": [1]}, "usage: expected an object, got a list"),
        ({"usage": {"x": float("nan")}}, "usage: not representable as JSON"),
    ],
)
def test_append_rejects_bad_values(store: Store, kwargs: dict, problem: str) -> None:
    cid = store.create_conversation().id
    args = {"role": "user", "content": "hello", **kwargs}
    role, content = args.pop("role"), args.pop("content")
    with pytest.raises(StoreError, match=problem.replace("(", r"\(")):
        store.append_message(cid, role, content, **args)
    assert store.count_messages(cid) == 0


def test_update_message_finishes_a_streamed_reply(store: Store) -> None:
    cid = store.create_conversation().id
    store.append_message(cid, "user", "Tell me a story")
    draft = store.append_message(cid, "assistant", "Once", status="incomplete")
    unchanged = store.update_message(draft.id)
    assert unchanged == draft
    done = store.update_message(
        draft.id,
        content="Once upon a time.",
        status="ok",
        usage={"prompt_tokens": 20, "completion_tokens": 6},
        tokens=6,
    )
    assert (done.id, done.seq, done.content, done.status, done.tokens) == (
        draft.id,
        2,
        "Once upon a time.",
        "ok",
        6,
    )
    assert done.usage == {"prompt_tokens": 20, "completion_tokens": 6}
    assert store.messages(cid)[-1] == done
    with pytest.raises(NotFoundError):
        store.update_message(10**9, status="ok")
    with pytest.raises(StoreError, match="status"):
        store.update_message(draft.id, status="half")


def test_paging_messages(store: Store) -> None:
    cid = store.create_conversation().id
    store._bulk_append(cid, [{"role": "user", "content": f"m{i}"} for i in range(1, 51)])

    def seqs(**kwargs: int) -> list[int]:
        return [m.seq for m in store.messages(cid, **kwargs)]

    assert seqs() == list(range(1, 51))
    assert seqs(after_seq=45) == [46, 47, 48, 49, 50]
    assert seqs(before_seq=4) == [1, 2, 3]
    assert seqs(before_seq=30, limit=3) == [27, 28, 29]  # paging backwards: nearest older ones
    assert seqs(after_seq=10, limit=3) == [11, 12, 13]
    assert seqs(after_seq=10, before_seq=30, limit=2) == [11, 12]
    assert seqs(limit=2) == [1, 2]
    assert store.messages(cid, after_seq=10, limit=1)[0].content == "m11"


def test_a_lost_seq_race_is_retried(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    cid = store.create_conversation().id
    store.append_message(cid, "user", "one")
    real = Store._next_seq
    calls: list[int] = []

    def stale_once(conn: sa.Connection, conversation_id: str) -> int:
        calls.append(1)
        return 1 if len(calls) == 1 else real(conn, conversation_id)  # 1 is taken: a lost race

    monkeypatch.setattr(Store, "_next_seq", staticmethod(stale_once))
    monkeypatch.setattr(store_messages.time, "sleep", lambda _s: None)
    message = store.append_message(cid, "user", "two")
    assert message.seq == 2 and len(calls) == 2
    assert [m.content for m in store.messages(cid)] == ["one", "two"]


def test_a_race_lost_every_time_fails_loudly(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    cid = store.create_conversation().id
    store.append_message(cid, "user", "one")
    monkeypatch.setattr(Store, "_next_seq", staticmethod(lambda conn, conversation_id: 1))
    monkeypatch.setattr(store_messages.time, "sleep", lambda _s: None)
    with pytest.raises(StoreError, match="another writer took the next sequence number"):
        store.append_message(cid, "user", "two")
    assert store.count_messages(cid) == 1


def test_two_stores_in_two_threads_append_200_each(store_url: str) -> None:
    stores = [Store(store_url), Store(store_url)]
    cid = stores[0].create_conversation("race").id
    errors: list[BaseException] = []
    barrier = threading.Barrier(2)

    def writer(index: int) -> None:
        barrier.wait()
        try:
            for i in range(200):
                stores[index].append_message(cid, "user", f"w{index}-{i}")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(2)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        messages = stores[1].messages(cid)
        assert [m.seq for m in messages] == list(range(1, 401))
        for index in range(2):
            mine = [m.content for m in messages if m.content.startswith(f"w{index}-")]
            assert mine == [f"w{index}-{i}" for i in range(200)]  # each writer's order kept
    finally:
        for opened in stores:
            opened.close()


def test_one_store_shared_by_four_threads(store: Store) -> None:
    cid = store.create_conversation().id
    errors: list[BaseException] = []

    def writer(index: int) -> None:
        try:
            for i in range(50):
                store.append_message(cid, "assistant", f"{index}:{i}")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert [m.seq for m in store.messages(cid)] == list(range(1, 201))


# --------------------------------------------------------------------------------------------
# Summaries, events, load
# --------------------------------------------------------------------------------------------


def test_summaries_are_versions(store: Store) -> None:
    cid = store.create_conversation().id
    store._bulk_append(cid, [{"role": "user", "content": str(i)} for i in range(10)])
    first = store.add_summary(cid, "Sam likes tea.", 4, 4, model="m", usage={"prompt_tokens": 9})
    second = store.add_summary(cid, "Sam likes tea and Rome.", 6, 8)
    assert store.list_summaries(cid) == [first, second]
    assert (first.model, first.usage, second.model, second.usage) == (
        "m",
        {"prompt_tokens": 9},
        None,
        None,
    )
    with pytest.raises(StoreError, match="covers_seq: 11 points at no message"):
        store.add_summary(cid, "x", 1, 11)
    with pytest.raises(StoreError, match="tokens"):
        store.add_summary(cid, "x", -3, 1)
    assert len(store.list_summaries(cid)) == 2


def test_events(store: Store) -> None:
    cid = store.create_conversation().id
    at = 1_714_564_800.123456
    event = Event(EventKind.FOLD, "Folded 4 messages.", at=at, data={"covers_seq": 4})
    fold = store.add_event(cid, event)
    assert fold == Event(
        EventKind.FOLD, "Folded 4 messages.", at=at, data={"covers_seq": 4}, id=fold.id
    )
    assert isinstance(fold.id, int) and event.id is None
    store.add_event(cid, Event(EventKind.TRIM, "Left out 2 messages."))
    store.add_event(cid, Event(EventKind.FOLD_FAILED, "HTTP 500", data={"error": "server"}))
    events = store.list_events(cid)
    assert events[0] == fold
    assert [e.kind for e in events] == [EventKind.FOLD, EventKind.TRIM, EventKind.FOLD_FAILED]
    assert all(isinstance(e.kind, EventKind) for e in events)
    assert [e.kind for e in store.list_events(cid, limit=2)] == ["trim", "fold_failed"]
    assert (events[1].message, events[1].data) == ("Left out 2 messages.", {})
    assert events[2].data == {"error": "server"}
    assert store.list_events("nope") == []


def test_event_rows_keep_the_stored_layout(store: Store) -> None:
    """kind, data = {"message": ..., **figures} as JSON, created_at = the event's time in UTC."""
    cid = store.create_conversation().id
    store.add_event(cid, Event(EventKind.RECALL, "Recalled 2.", at=0.5, data={"seqs": [3, 4]}))
    store.add_event(cid, Event("from_a_newer_version", "?", at=86_400.0))
    assert store._engine is not None
    with store._engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT kind, data, created_at FROM events ORDER BY id")).all()
    assert [tuple(row) for row in rows] == [
        ("recall", '{"message":"Recalled 2.","seqs":[3,4]}', "1970-01-01T00:00:00.500000+00:00"),
        ("from_a_newer_version", '{"message":"?"}', "1970-01-02T00:00:00.000000+00:00"),
    ]
    assert store.list_events(cid)[1].kind == "from_a_newer_version"  # unknown kinds stay text


@pytest.mark.parametrize(
    ("event", "problem"),
    [
        (Event("", "x"), "kind: empty"),
        (Event("k" * 101, "x"), "kind: too long"),
        (Event("fold", "x", data={"bad": {1, 2}}), "data: not representable as JSON"),
        (Event("fold", "x", data=[1]), "data: expected an object, got a list"),  # type: ignore[arg-type]
        (Event("fold", object()), "data: not representable as JSON"),  # type: ignore[arg-type]
        (Event("fold", "x", at=float("nan")), "at: nan is not a time"),
        (Event("fold", "x", at="today"), "at: expected a Unix time"),  # type: ignore[arg-type]
        ("fold", "event: expected an Event, got str"),
    ],
)
def test_bad_events_are_refused(store: Store, event: object, problem: str, db_counts) -> None:
    cid = store.create_conversation().id
    with pytest.raises(StoreError, match=problem):
        store.add_event(cid, event)  # type: ignore[arg-type]
    assert db_counts(store)["events"] == 0


def test_load_without_a_summary_returns_everything(store: Store) -> None:
    cid = store.create_conversation().id
    store._bulk_append(cid, [{"role": "user", "content": str(i)} for i in range(5)])
    loaded = store.load(cid, keep_tail=3)
    assert loaded.summary is None and loaded.earlier == ()
    assert [m.seq for m in loaded.messages] == [1, 2, 3, 4, 5]
    assert loaded.info == store.get_conversation(cid)


def test_load_after_a_summary_returns_only_the_tail(store: Store) -> None:
    cid = store.create_conversation().id
    store._bulk_append(cid, [{"role": "user", "content": str(i)} for i in range(100)])
    store.add_summary(cid, "old", 3, 50)
    latest = store.add_summary(cid, "newer", 3, 80)
    loaded = store.load(cid)
    assert loaded.summary == latest
    assert [m.seq for m in loaded.messages] == list(range(81, 101))
    assert loaded.earlier == ()

    with_tail = store.load(cid, keep_tail=5)
    assert [m.seq for m in with_tail.earlier] == [76, 77, 78, 79, 80]
    assert [m.seq for m in with_tail.display_messages] == list(range(76, 101))

    store.append_message(cid, "assistant", "new")
    assert store.load(cid).messages[-1].seq == 101
    with pytest.raises(StoreError, match="keep_tail"):
        store.load(cid, keep_tail=-1)


def test_load_reads_by_index_range_on_sqlite(tmp_path: Path) -> None:
    """The tail query is an index range search, never a scan of the whole history."""
    with Store(str(tmp_path / "plan.db")) as store:
        cid = store.create_conversation().id
        store._bulk_append(cid, [{"role": "user", "content": "x"} for _ in range(2000)])
        store.add_summary(cid, "s", 1, 1990)
        statements: list[tuple[str, tuple]] = []
        assert store._engine is not None

        @sa.event.listens_for(store._engine, "before_cursor_execute")
        def capture(conn, cursor, statement, parameters, context, executemany):
            if "FROM messages" in statement:
                statements.append((statement, parameters))

        assert len(store.load(cid).messages) == 10
        sa.event.remove(store._engine, "before_cursor_execute", capture)
        assert statements, "load() ran no message query"
        with store._engine.connect() as conn:
            for statement, parameters in statements:
                plan = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters).all()
                detail = " ".join(str(row[-1]) for row in plan)
                assert "USING INDEX ux_messages_conversation_seq" in detail, detail
                assert "seq>" in detail.replace(" ", ""), detail


def test_load_stays_fast_with_a_long_history(store: Store) -> None:
    cid = store.create_conversation().id
    store._bulk_append(cid, [{"role": "user", "content": "x" * 200} for _ in range(20_000)])
    store.add_summary(cid, "s", 1, 19_990)
    started = time.perf_counter()
    everything = store.messages(cid)
    full = time.perf_counter() - started
    started = time.perf_counter()
    loaded = store.load(cid)
    tail = time.perf_counter() - started
    assert len(everything) == 20_000 and len(loaded.messages) == 10
    assert tail < full / 5, (tail, full)


def test_delete_cascades(store: Store, db_counts) -> None:
    keep = store.create_conversation("keep").id
    store.append_message(keep, "user", "stay")
    gone = store.create_conversation("gone").id
    store._bulk_append(gone, [{"role": "user", "content": "x"} for _ in range(5)])
    store.add_summary(gone, "s", 1, 3)
    store.add_event(gone, Event(EventKind.FOLD, "Folded."))
    assert db_counts(store) == {"conversations": 2, "messages": 6, "summaries": 1, "events": 1}
    assert store.delete_conversation(gone)
    assert db_counts(store) == {"conversations": 1, "messages": 1, "summaries": 0, "events": 0}
    assert store.messages(keep)[0].content == "stay"


# --------------------------------------------------------------------------------------------
# Export and import
# --------------------------------------------------------------------------------------------


def _sample(store: Store) -> str:
    cid = store.create_conversation(
        "Rome 🇮🇹", settings={"model": "gpt-4o-mini", "max_tokens": 3000}, owner="sam"
    ).id
    store.append_message(cid, "system", "Be concise.")
    store.append_message(cid, "user", "Hi, I'm Sam.\nI like *tea*.", tokens=9, name="sam")
    store.append_message(cid, "assistant", "Hello Sam!", usage={"prompt_tokens": 20})
    store.append_message(cid, "tool", '{"ok": true}', name="lookup", status="failed")
    store.append_message(cid, "assistant", "Partial…", status="incomplete")
    store.add_summary(cid, "Sam likes tea.\n\nMore later.", 5, 3, model="m", usage={"x": 1})
    store.add_summary(cid, "Sam likes tea; lookup failed.", 7, 4)
    store.add_event(cid, Event(EventKind.FOLD, "Folded 3 messages.", data={"covers_seq": 3}))
    store.add_event(cid, Event(EventKind.ERROR, "HTTP 500", data={"nested": [1, {"a": None}]}))
    return cid


def _comparable(doc: dict) -> dict:
    doc = json.loads(json.dumps(doc))
    doc.pop("exported_at")
    doc["conversation"].pop("id")
    doc["conversation"].pop("updated_at")
    doc["conversation"].pop("owner")
    return doc


@pytest.mark.parametrize("as_type", ["dict", "str", "bytes"])
def test_export_import_round_trip(store: Store, as_type: str) -> None:
    cid = _sample(store)
    exported = store.export_json(cid)
    assert exported["format"] == EXPORT_FORMAT and exported["version"] == 1
    assert len(exported["messages"]) == 5 and len(exported["summaries"]) == 2
    text = json.dumps(exported, ensure_ascii=False)
    data = {"dict": exported, "str": text, "bytes": text.encode()}[as_type]

    imported = store.import_json(data, owner="kim")
    assert imported.id != cid and imported.owner == "kim"
    assert _comparable(store.export_json(imported.id)) == _comparable(exported)
    loaded = store.load(imported.id)
    assert loaded.summary is not None and loaded.summary.covers_seq == 4
    assert [m.content for m in loaded.messages] == ["Partial…"]


def test_export_markdown(store: Store) -> None:
    text = store.export_markdown(_sample(store))
    assert text.startswith("# Rome 🇮🇹\n")
    assert "**User** (sam):\n\nHi, I'm Sam.\nI like *tea*." in text
    assert "**Assistant**:\n\nHello Sam!" in text
    assert "**Assistant**: _(incomplete)_" in text
    assert text.index("**System**") < text.index("**User**") < text.index("## Summary versions")
    assert "### Version 1: covers messages 1-3" in text
    assert "> Sam likes tea.\n>\n> More later." in text
    assert "### Version 2: covers messages 1-4" in text


def test_export_of_a_missing_conversation(store: Store) -> None:
    with pytest.raises(NotFoundError):
        store.export_json("nope")


def test_import_assigns_a_new_id_each_time(store: Store) -> None:
    exported = store.export_json(_sample(store))
    ids = {store.import_json(exported).id for _ in range(3)}
    assert len(ids) == 3


def test_a_database_failure_during_import_leaves_nothing(store: Store, db_counts) -> None:
    """The events are written last; a trigger makes the database refuse them."""
    exported = store.export_json(_sample(store))
    before = db_counts(store)
    assert store._engine is not None
    with store._engine.begin() as conn:
        if store.backend == "sqlite":
            conn.exec_driver_sql(
                "CREATE TRIGGER refuse_events BEFORE INSERT ON events "
                "BEGIN SELECT RAISE(ABORT, 'disk full (simulated)'); END"
            )
        else:
            conn.exec_driver_sql(
                "CREATE OR REPLACE FUNCTION chatmem_test_refuse() RETURNS trigger AS $$ "
                "BEGIN RAISE EXCEPTION 'disk full (simulated)'; END $$ LANGUAGE plpgsql"
            )
            conn.exec_driver_sql(
                "CREATE TRIGGER refuse_events BEFORE INSERT ON events "
                "FOR EACH ROW EXECUTE FUNCTION chatmem_test_refuse()"
            )
    with pytest.raises(StoreError, match="disk full"):
        store.import_json(exported)
    assert db_counts(store) == before


# --------------------------------------------------------------------------------------------
# Secrets never stored
# --------------------------------------------------------------------------------------------

SECRET = "sk-proj-THIS-MUST-NEVER-BE-STORED"


@pytest.mark.parametrize(
    "key",
    [
        "api_key",
        "OPENAI_API_KEY",
        "apiKey",
        "key",
        "secret",
        "client_secret",
        "password",
        "db_password",
        "passwd",
        "token",
        "access_token",
        "refresh_tokens",
        "hf_token",
        "credentials",
    ],
)
def test_secret_settings_are_dropped(store: Store, key: str) -> None:
    settings = {
        "model": "m",
        key: SECRET,
        "nested": {key: SECRET, "ok": 1},
        "providers": [{"name": "a", key: SECRET}],
    }
    info = store.create_conversation(settings=settings)
    assert info.settings == {"model": "m", "nested": {"ok": 1}, "providers": [{"name": "a"}]}
    updated = store.update_settings(info.id, {key: SECRET})
    assert updated.settings == {}
    doc = store.export_json(info.id)
    doc["conversation"]["settings"] = {key: SECRET, "model": "x"}
    imported = store.import_json(doc)
    assert imported.settings == {"model": "x"}
    assert store._engine is not None
    with store._engine.connect() as conn:
        stored = " ".join(
            row.settings for row in conn.execute(sa.text("SELECT settings FROM conversations"))
        )
    assert SECRET not in stored


def test_token_counts_are_not_secrets(store: Store) -> None:
    settings = {
        "model": "gpt-4o-mini",
        "max_tokens": 3000,
        "summary_max_tokens": 400,
        "keep_recent": 6,
        "temperature": 0.2,
    }
    assert store.create_conversation(settings=settings).settings == settings
    assert clean_settings({"MAX_TOKENS": 1}) == {"MAX_TOKENS": 1}
    assert clean_settings(None) == {}


def test_settings_must_be_json(store: Store) -> None:
    with pytest.raises(StoreError, match="settings"):
        store.create_conversation(settings={"when": object()})
    with pytest.raises(StoreError, match="settings: expected a dict"):
        store.create_conversation(settings=["model"])  # type: ignore[arg-type]


def test_import_validation_error_is_a_store_error() -> None:
    error = ImportValidationError("messages[3].role", "unknown role 'wizard'")
    assert isinstance(error, StoreError)
    assert str(error) == "messages[3].role: unknown role 'wizard'"
    assert (error.where, error.problem) == ("messages[3].role", "unknown role 'wizard'")


def test_opening_waits_for_another_process_creating_the_database(tmp_path) -> None:
    """Switching a new SQLite file to WAL ignores busy_timeout; opening must wait anyway."""
    import sqlite3
    import time

    path = tmp_path / "busy.db"
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")
    holder.execute("CREATE TABLE someone_elses (x)")
    release = threading.Timer(0.5, lambda: holder.execute("COMMIT"))
    release.start()
    started = time.monotonic()
    with Store(f"sqlite:///{path}") as store:
        assert store.schema_version == SCHEMA_VERSION
    assert time.monotonic() - started >= 0.4  # it waited for the lock, then opened
    release.join()
    holder.close()

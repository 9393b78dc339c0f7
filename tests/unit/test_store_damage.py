"""A damaged full-text index, and a database folder that cannot be written.

The index is damaged the way a bad disk or a stray tool would: with plain ``sqlite3`` while
the store is closed, by overwriting or deleting the blocks of the FTS5 table's own tables
(``messages_fts_data``...). SQLite then fails every statement that touches the index with
"vtable constructor failed: messages_fts" or "database disk image is malformed", and, through
the triggers, every write of a message too.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from chatmem import cli
from chatmem.store import (
    IndexRebuild,
    SearchIndexError,
    Store,
    StoreError,
    search,
)
from tests.unit.conftest import reset_postgres

ROOT = Path(__file__).resolve().parents[2]
WORDS = "Sailing to the harbour at dawn"

# name -> (statement run on the closed database, what SQLite then says to a search)
DAMAGE = {
    "blocks overwritten": (
        "UPDATE messages_fts_data SET block = noise(length(block), id)",
        "vtable constructor failed: messages_fts",
    ),
    "blocks deleted": ("DELETE FROM messages_fts_data", "vtable constructor failed: messages_fts"),
    "leaf blocks overwritten": (
        "UPDATE messages_fts_data SET block = noise(length(block), id) WHERE id > 10",
        "database disk image is malformed",
    ),
    "configuration deleted": ("DELETE FROM messages_fts_config", "invalid fts5 file format"),
    # (found by overwriting with random blocks: about 1 in 200 asks SQLite for an absurd size)
    "structure claiming a huge size": (
        "UPDATE messages_fts_data SET block = X'a59812ea7c71df6c4ff6e6bf6f57d2de432e' "
        "WHERE id = 10",
        "out of memory",
    ),
    "a table of the index dropped": ("DROP TABLE messages_fts_idx", "SQL logic error"),
    "the index dropped": ("DROP TABLE messages_fts", "no such table: messages_fts"),
}


def _fill(store: Store, conversations: int = 3, per: int = 40) -> list[str]:
    """Conversations whose message i of each says ``WORDS`` when i % 10 == 0."""
    cids = []
    for c in range(conversations):
        cid = store.create_conversation(f"chat {c}").id
        store._bulk_append(
            cid,
            [
                {
                    "role": "user",
                    "content": (WORDS if i % 10 == 0 else f"Note {i} of chat {c}")
                    + " "
                    + " ".join(f"w{c}x{i}y{j}" for j in range(30)),
                }
                for i in range(per)
            ],
        )
        cids.append(cid)
    return cids


def damage(path: Path, statement: str) -> None:
    """Run ``statement`` on the SQLite file with plain sqlite3 (the store must be closed)."""
    db = sqlite3.connect(path, isolation_level=None)
    # noise(n, id): n bytes seeded by the row id, so a run damages the same way every time
    # (SQLite's randomblob made about 1 run in 200 hit "out of memory" instead)
    db.create_function("noise", 2, lambda n, row: random.Random(row).randbytes(n))
    try:
        db.execute(statement)
    finally:
        db.close()


def raw_search_error(path: Path) -> str:
    """What SQLite says to a search of the index, past the store."""
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("SELECT rowid FROM messages_fts WHERE messages_fts MATCH 'harbour'").fetchall()
    except sqlite3.Error as exc:
        return str(exc)
    except MemoryError:  # SQLITE_NOMEM
        return "out of memory"
    finally:
        db.close()
    return ""


def integrity_check(store: Store) -> None:
    """Raises unless the FTS index agrees with the messages table (rank=1: contents too)."""
    assert store._engine is not None
    with store._engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO messages_fts (messages_fts, rank) VALUES ('integrity-check', 1)"
        )


def damaged_store(tmp_path: Path, statement: str) -> tuple[Path, list[str]]:
    path = tmp_path / "chatmem.db"
    with Store(str(path)) as store:
        cids = _fill(store)
    damage(path, statement)
    return path, cids


@pytest.fixture
def failing_rebuild(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Every rebuild of the index fails (as on a full disk); the list counts the attempts."""
    calls: list[int] = []

    def fail(store: Store, progress: object) -> IndexRebuild:
        calls.append(1)
        raise StoreError("sqlite error: database or disk is full")

    monkeypatch.setattr(search, "rebuild_index", fail)
    return calls


# --------------------------------------------------------------------------------------------
# Found and rebuilt
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", DAMAGE)
def test_a_search_that_finds_the_index_damaged_rebuilds_it(tmp_path: Path, kind: str) -> None:
    statement, said = DAMAGE[kind]
    path, cids = damaged_store(tmp_path, statement)
    assert said in raw_search_error(path)
    with Store(str(path)) as store:
        hits = store.search_messages(cids[1], "harbour")
        assert sorted(hit.seq for hit in hits) == [1, 11, 21, 31]
        integrity_check(store)
        store.append_message(cids[1], "user", "Back at the harbour.")
        assert len(store.search_messages(cids[1], "harbour")) == 5
        integrity_check(store)


@pytest.mark.parametrize(
    "kind", ["blocks overwritten", "a table of the index dropped", "structure claiming a huge size"]
)
def test_a_write_that_finds_the_index_damaged_rebuilds_it(tmp_path: Path, kind: str) -> None:
    path, cids = damaged_store(tmp_path, DAMAGE[kind][0])
    with Store(str(path)) as store:
        added = store.append_message(cids[0], "user", "The harbour master waved.")
        assert added.seq == 41
        changed = store.update_message(added.id, content="The harbour master smiled.")
        assert changed.content == "The harbour master smiled."
        assert store.delete_conversation(cids[2])
        copy = store.import_json(json.dumps(store.export_json(cids[1])))
        assert [hit.seq for hit in store.search_messages(cids[0], "master")] == [41]
        assert len(store.search_messages(copy.id, "harbour")) == 4
        integrity_check(store)


def test_the_error_of_a_damaged_index_says_what_to_do_and_nothing_else(
    tmp_path: Path, failing_rebuild: list[int]
) -> None:
    path, cids = damaged_store(tmp_path, DAMAGE["blocks overwritten"][0])
    with Store(str(path)) as store, pytest.raises(SearchIndexError) as caught:
        store.search_messages(cids[0], "secret harbour plans")
    message = str(caught.value)
    assert "python -m chatmem --reindex" in message
    assert "damaged" in message
    for leak in ("SELECT", "MATCH", "secret", "harbour", str(tmp_path), "vtable"):
        assert leak not in message


# --------------------------------------------------------------------------------------------
# When the rebuild fails: writes go on, searches say so, one attempt per Store
# --------------------------------------------------------------------------------------------


def test_when_the_rebuild_fails_messages_are_still_written(
    tmp_path: Path, failing_rebuild: list[int]
) -> None:
    path, cids = damaged_store(tmp_path, DAMAGE["blocks overwritten"][0])
    with Store(str(path)) as store:
        for i in range(3):
            store.append_message(cids[0], "user", f"Still here {i}.")
            with pytest.raises(SearchIndexError):
                store.search_messages(cids[0], "harbour")
        assert store.delete_conversation(cids[2])
        assert [m.content for m in store.messages(cids[0])][-3:] == [
            f"Still here {i}." for i in range(3)
        ]
        assert len(failing_rebuild) == 1  # attempted once, not on every call


def test_after_a_failed_rebuild_reindex_brings_search_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing_rebuild: list[int]
) -> None:
    path, cids = damaged_store(tmp_path, DAMAGE["blocks overwritten"][0])
    with Store(str(path)) as store:
        with pytest.raises(SearchIndexError):
            store.search_messages(cids[0], "harbour")
        store.append_message(cids[0], "user", "Written while search was off: harbour.")
        monkeypatch.undo()  # the disk has room again
        result = store.rebuild_search_index()
        assert result == IndexRebuild(conversations=3, messages=121)
        assert sorted(h.seq for h in store.search_messages(cids[0], "harbour")) == [
            1,
            11,
            21,
            31,
            41,
        ]
        integrity_check(store)


# --------------------------------------------------------------------------------------------
# Store.rebuild_search_index and python -m chatmem --reindex
# --------------------------------------------------------------------------------------------


def test_rebuild_search_index_reports_progress_and_counts(store: Store) -> None:
    cids = _fill(store, conversations=4, per=10)
    seen: list[tuple[int, int]] = []
    result = store.rebuild_search_index(lambda done, total: seen.append((done, total)))
    assert result == IndexRebuild(conversations=4, messages=40)
    assert seen[-1] == (4, 4)
    if store.backend == "sqlite":
        assert seen == [(1, 4), (2, 4), (3, 4), (4, 4)]
        integrity_check(store)
    else:
        assert seen == [(0, 4), (4, 4)]
    assert [hit.seq for hit in store.search_messages(cids[3], "harbour")] == [1]
    store.append_message(cids[3], "user", "A harbour again.")
    assert sorted(hit.seq for hit in store.search_messages(cids[3], "harbour")) == [1, 11]


@pytest.mark.postgres
def test_postgresql_reindex_recreates_a_dropped_index() -> None:
    with Store(reset_postgres()) as store:
        cids = _fill(store, conversations=1, per=10)
        assert store._engine is not None
        with store._engine.begin() as conn:
            conn.exec_driver_sql("DROP INDEX ix_messages_content_fts_head")
        assert store.rebuild_search_index() == IndexRebuild(conversations=1, messages=10)
        with store._engine.connect() as conn:
            assert conn.scalar(sa.text("SELECT to_regclass('ix_messages_content_fts_head')"))
        assert [hit.seq for hit in store.search_messages(cids[0], "harbour")] == [1]


def test_cli_reindex_prints_progress_and_one_line_result(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path, _ = damaged_store(tmp_path, DAMAGE["blocks overwritten"][0])
    monkeypatch.setenv("CHATMEM_DATABASE_URL", f"sqlite:///{path}")
    monkeypatch.chdir(tmp_path)
    assert cli.main(["--reindex"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "chatmem: rebuilding the search index of every stored conversation..."
    assert out[1:-1] == ["  1/3 conversations", "  2/3 conversations", "  3/3 conversations"]
    assert out[-1] == "chatmem: search index rebuilt: 120 messages in 3 conversations."
    assert raw_search_error(path) == ""
    with Store(str(path)) as store:
        integrity_check(store)


def test_cli_reindex_as_a_command(tmp_path: Path) -> None:
    """``python -m chatmem --reindex`` in its own process, on a damaged database."""
    path, _ = damaged_store(tmp_path, DAMAGE["blocks deleted"][0])
    env = {**os.environ, "CHATMEM_DATABASE_URL": f"sqlite:///{path}", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "chatmem", "--reindex"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == (
        "chatmem: search index rebuilt: 120 messages in 3 conversations."
    )
    assert raw_search_error(path) == ""


def test_cli_reindex_without_a_store_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--reindex", "--no-store"]) == 2
    err = capsys.readouterr().err
    assert "--reindex" in err and "need the store" in err


# --------------------------------------------------------------------------------------------
# A database that cannot be written where it is
# --------------------------------------------------------------------------------------------

WRITABLE = "Set CHATMEM_DATABASE_URL to a writable location."
NO_DAC = ["--bounding-set=-dac_override,-dac_read_search"]
_OPEN_IN_CHILD = """
import sys
from chatmem.store import Store, StoreError
try:
    Store(sys.argv[1]).close()
except StoreError as exc:
    print("StoreError:", exc)
else:
    print("opened")
"""


def _open_without_root_powers(url: str) -> str:
    """Open a Store in a child process that keeps uid 0 but loses the capabilities that let
    root write anywhere (so file permissions apply, as for any other user)."""
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("setpriv (util-linux) is needed to drop root's powers")
    command = [setpriv, *NO_DAC, sys.executable, "-c", _OPEN_IN_CHILD, url]
    if os.geteuid() != 0:
        command = [sys.executable, "-c", _OPEN_IN_CHILD, url]
    done = subprocess.run(
        command,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.mark.parametrize("where", ["the folder", "a new folder in it"])
def test_a_read_only_folder_says_what_to_do_without_the_path(tmp_path: Path, where: str) -> None:
    folder = tmp_path / "readonly"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        target = folder / "chatmem.db" if where == "the folder" else folder / "sub" / "chat.db"
        said = _open_without_root_powers(f"sqlite:///{target}")
    finally:
        folder.chmod(0o755)
    assert said == (
        "StoreError: chatmem cannot write its database: the folder is read-only. " + WRITABLE
    )


def test_a_read_only_database_file_says_so(tmp_path: Path) -> None:
    path = tmp_path / "chatmem.db"
    Store(str(path)).close()
    for name in ("chatmem.db", "chatmem.db-wal", "chatmem.db-shm"):
        if (tmp_path / name).exists():
            (tmp_path / name).chmod(0o444)
    tmp_path.chmod(0o555)
    try:
        said = _open_without_root_powers(str(path))
    finally:
        tmp_path.chmod(0o755)
    assert said.startswith("StoreError: chatmem cannot write its database: the ")
    assert said.endswith("is read-only. " + WRITABLE)
    assert str(tmp_path) not in said


@pytest.mark.parametrize("below", ["chat.db", "sub/chat.db"])
def test_a_path_through_a_file_says_what_to_do_without_the_path(tmp_path: Path, below: str) -> None:
    (tmp_path / "notes.txt").write_text("not a folder")
    with pytest.raises(StoreError) as caught:
        Store(str(tmp_path / "notes.txt" / below))
    assert str(caught.value) == (
        "chatmem cannot write its database: part of its path is a file, not a folder. " + WRITABLE
    )


def test_other_open_errors_name_the_file_but_not_its_folders(tmp_path: Path) -> None:
    path = tmp_path / "not-a-database.db"
    path.write_bytes(b"this is not a SQLite file at all" * 100)
    with pytest.raises(StoreError) as caught:
        Store(str(path))
    message = str(caught.value)
    assert message.startswith("Could not open the SQLite database not-a-database.db: ")
    assert str(tmp_path) not in message

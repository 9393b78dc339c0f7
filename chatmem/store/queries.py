"""Statements the store's parts share, each run on a connection inside a transaction."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import replace
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from chatmem.errors import NotFoundError
from chatmem.store.records import ConversationInfo, conversation_record, loads, parse_time
from chatmem.store.schema import conversations_table, messages_table

IN_CHUNK: Final = 500
"""Values per ``IN (...)`` list when looking messages up by seq."""

_INSERT_CHUNK: Final = 1_000
"""Rows per multi-row INSERT of messages (11 columns: well under SQLite's 32,766 parameters)."""


def get_conversation(conn: Connection, cid: str) -> ConversationInfo | None:
    row = conn.execute(
        sa.select(conversations_table).where(conversations_table.c.id == cid)
    ).first()
    return None if row is None else conversation_record(row)


def require_conversation(conn: Connection, cid: str) -> ConversationInfo:
    """The conversation, or NotFoundError."""
    info = get_conversation(conn, cid)
    if info is None:
        raise NotFoundError(f"no conversation with id {cid!r}")
    return info


def lock_conversation(conn: Connection, cid: str) -> None:
    """Take the conversation's row lock (PostgreSQL; SQLite's BEGIN IMMEDIATE already
    locks the file), or raise NotFoundError."""
    found = conn.execute(
        sa.select(conversations_table.c.id).where(conversations_table.c.id == cid).with_for_update()
    ).first()
    if found is None:
        raise NotFoundError(f"no conversation with id {cid!r}")


def insert_conversation(
    conn: Connection, title: str, settings_text: str, owner: str | None, created_at: str, now: str
) -> ConversationInfo:
    """A new conversation row (a fresh uuid4 hex id), as written."""
    info = ConversationInfo(
        uuid.uuid4().hex, title, parse_time(created_at), parse_time(now), {}, owner
    )
    conn.execute(
        conversations_table.insert().values(
            id=info.id,
            title=title,
            created_at=created_at,
            updated_at=now,
            settings=settings_text,
            owner=owner,
        )
    )
    return replace(info, settings=loads(settings_text))


def touch(conn: Connection, cid: str, now: str, **values: Any) -> None:
    conn.execute(
        conversations_table.update()
        .where(conversations_table.c.id == cid)
        .values(updated_at=now, **values)
    )


def seq_chunks(seqs: list[int]) -> Iterator[list[int]]:
    """``seqs`` in slices short enough for one ``IN (...)`` list each."""
    for first in range(0, len(seqs), IN_CHUNK):
        yield seqs[first : first + IN_CHUNK]


def insert_messages(conn: Connection, rows: list[dict[str, Any]]) -> None:
    """Insert many message rows (all with the same keys) in one go.

    PostgreSQL: executemany. SQLite: multi-row INSERT statements of ``_INSERT_CHUNK`` rows,
    because executemany runs one statement per row, and every statement inside a transaction
    makes FTS5 flush what the insert trigger added into a new index segment: 100,000 rows took
    about 10 times longer. The SQL is written here rather than by SQLAlchemy, which takes
    longer to compile a 1,000-row VALUES list than SQLite takes to run it.
    """
    columns = list(dict.fromkeys(key for row in rows for key in row))
    if any(len(row) != len(columns) for row in rows):  # e.g. only some carry reply_to
        rows = [{column: row.get(column) for column in columns} for row in rows]
    if conn.dialect.name != "sqlite":
        conn.execute(messages_table.insert(), rows)
        return
    unknown = set(columns) - set(messages_table.c.keys())
    assert not unknown, unknown  # the names are ours, never user input
    one_row = "(" + ", ".join("?" * len(columns)) + ")"
    for first in range(0, len(rows), _INSERT_CHUNK):
        chunk = rows[first : first + _INSERT_CHUNK]
        conn.exec_driver_sql(
            f"INSERT INTO messages ({', '.join(columns)}) VALUES "
            + ", ".join([one_row] * len(chunk)),
            tuple(row[column] for row in chunk for column in columns),
        )

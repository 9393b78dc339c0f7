"""Writing messages: append (one at a time, or many at once) and update.

The bodies of ``Store.append_message``, ``Store._bulk_append`` and ``Store.update_message``;
the methods' docstrings describe the behaviour. Each message of a conversation gets the next
``seq``: appends to one conversation are serialised (a row lock on PostgreSQL, the write lock
on SQLite), and a writer that still loses the race to a seq retries with a fresh one, as
does one that timed out waiting for a pooled connection or the lock (``TransientError``).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Final

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from chatmem.errors import NotFoundError, StoreError
from chatmem.store.engine import TRANSIENT_ATTEMPTS, TransientError, _UniqueViolation, retrying
from chatmem.store.queries import insert_messages, lock_conversation, touch
from chatmem.store.records import (
    MAX_CONTENT_CHARS,
    StoredMessage,
    Values,
    check,
    count_problem,
    dumps,
    json_object_problem,
    message_record,
    message_values,
    now,
    status_problem,
    text_problem,
)
from chatmem.store.schema import messages_table

if TYPE_CHECKING:
    from chatmem.store.core import Store

log = logging.getLogger("chatmem.store")

APPEND_ATTEMPTS: Final = 5
"""How many times ``append_message`` re-reads the next seq after losing a race before failing."""


def next_seq(conn: Connection, cid: str) -> int:
    """One more than the conversation's highest seq (1 for none)."""
    m = messages_table
    current = conn.scalar(sa.select(sa.func.max(m.c.seq)).where(m.c.conversation_id == cid))
    return int(current or 0) + 1


def append_message(store: Store, cid: str, row: dict[str, Any]) -> StoredMessage:
    """``row``: the checked values of the new message (``records.message_values``)."""
    last_error: StoreError | None = None
    waits = 0
    attempt = 0
    while attempt < APPEND_ATTEMPTS:
        attempt += 1
        try:
            with store._tx(write=True) as conn:
                lock_conversation(conn, cid)
                seq = store._next_seq(conn, cid)
                created = now()
                values = {**row, "conversation_id": cid, "seq": seq, "created_at": created}
                result = conn.execute(messages_table.insert().values(**values))
                message_id = result.inserted_primary_key[0]
                touch(conn, cid, created)
        except TransientError as exc:
            waits += 1
            if waits >= TRANSIENT_ATTEMPTS:
                raise
            log.warning("append_message: %s (attempt %d of %d)", exc, waits, TRANSIENT_ATTEMPTS)
            time.sleep(random.uniform(0.05, 0.2) * waits)
            attempt -= 1  # a wait that ran out is not a lost race
            continue
        except _UniqueViolation as exc:
            last_error = exc
            log.warning(
                "append_message: seq race on conversation %s (attempt %d of %d)",
                cid,
                attempt,
                APPEND_ATTEMPTS,
            )
            time.sleep(random.uniform(0.002, 0.02) * attempt)
            continue
        return message_record(Values(id=message_id, **values))
    raise StoreError(
        f"could not append to conversation {cid!r}: another writer took the next sequence "
        f"number {APPEND_ATTEMPTS} times in a row"
    ) from last_error


def bulk_append(store: Store, cid: str, items: Iterable[Mapping[str, Any]]) -> int:
    rows = [message_values(**item) for item in items]
    return retrying(lambda: _bulk_insert(store, cid, rows), "bulk append")


def _bulk_insert(store: Store, cid: str, rows: list[dict[str, Any]]) -> int:
    with store._tx(write=True) as conn:
        lock_conversation(conn, cid)
        first = store._next_seq(conn, cid)
        created = now()
        for offset, row in enumerate(rows):
            row.update(conversation_id=cid, seq=first + offset, created_at=created)
        if rows:
            insert_messages(conn, rows)
            touch(conn, cid, created)
    return len(rows)


def update_message(
    store: Store,
    message_id: int,
    *,
    content: str | None,
    status: str | None,
    usage: dict[str, Any] | None,
    tokens: int | None,
) -> StoredMessage:
    values: dict[str, Any] = {}
    if content is not None:
        check(text_problem(content, max_chars=MAX_CONTENT_CHARS), "content")
        values["content"] = content
    if status is not None:
        check(status_problem(status), "status")
        values["status"] = str(status)
    if usage is not None:
        check(json_object_problem(usage), "usage")
        values["usage"] = dumps(usage)
    if tokens is not None:
        check(count_problem(tokens), "tokens")
        values["tokens"] = tokens
    m = messages_table
    with store._tx(write=True) as conn:
        row = conn.execute(sa.select(m).where(m.c.id == message_id).with_for_update()).first()
        if row is None:
            raise NotFoundError(f"no message with id {message_id!r}")
        if values:
            conn.execute(m.update().where(m.c.id == message_id).values(**values))
            touch(conn, row.conversation_id, now())
            row = conn.execute(sa.select(m).where(m.c.id == message_id)).one()
    return message_record(row)

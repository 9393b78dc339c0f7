"""Pins and exclusions of messages: the bodies of ``Store.mark_message`` and ``Store.marks``.

Each change is a new ``message_marks`` row (see schema migration 7): the newest row per seq and
kind is in force (:func:`~chatmem.store.records.marks_in_force`), and a session catching up
reads only the rows after the last id it knows (``Store.changes``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

import sqlalchemy as sa

from chatmem.errors import StoreError
from chatmem.store.engine import retrying
from chatmem.store.queries import lock_conversation, touch
from chatmem.store.records import StoredMark, Values, check_limit, check_seq, mark_record, now
from chatmem.store.schema import marks_table, messages_table

if TYPE_CHECKING:
    from chatmem.store.core import Store

MARK_KINDS: Final = ("pin", "exclude")


def mark_message(store: Store, cid: str, seq: int, kind: str, value: bool) -> StoredMark:
    check_seq(seq)
    if kind not in MARK_KINDS:
        raise StoreError(f"kind: expected 'pin' or 'exclude', got {kind!r}")
    if not isinstance(value, bool):
        raise StoreError(f"value: expected true or false, got {type(value).__name__}")

    def insert() -> StoredMark:
        m = messages_table
        with store._tx(write=True) as conn:
            lock_conversation(conn, cid)
            found = conn.scalar(sa.select(m.c.id).where(m.c.conversation_id == cid, m.c.seq == seq))
            if found is None:
                raise StoreError(f"seq: {seq} points at no message of conversation {cid!r}")
            created = now()
            values = {
                "conversation_id": cid,
                "seq": seq,
                "kind": kind,
                "value": int(value),
                "created_at": created,
            }
            result = conn.execute(marks_table.insert().values(**values))
            touch(conn, cid, created)
            return mark_record(Values(id=result.inserted_primary_key[0], **values))

    return retrying(insert, "mark_message")


def marks_query(cid: str, after_id: int) -> sa.Select:
    k = marks_table
    return sa.select(k).where(k.c.conversation_id == cid, k.c.id > after_id).order_by(k.c.id)


def list_marks(store: Store, cid: str, after_id: int = 0) -> list[StoredMark]:
    check_limit(after_id, "after_id")
    with store._tx(write=False) as conn:
        return [mark_record(row) for row in conn.execute(marks_query(cid, after_id))]

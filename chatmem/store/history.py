"""Summaries, events, catching up, and loading a conversation to resume it.

The bodies of ``Store.add_summary``, ``list_summaries``, ``add_event``, ``list_events``,
``changes`` and ``load``; the methods' docstrings describe the behaviour.

A summary version lands by compare-and-set: inside the write transaction (the conversation's
row lock held) the newest version is read, and a fold built on an older one is refused with
:class:`~chatmem.errors.SummaryConflict`, so two sessions folding at once cannot both extend
the same version and one of them lose the other's messages.

An event is stored as its kind, ``Event.payload()`` (the message and the figures) as the JSON
``data`` column, and its time as ``created_at``; ``list_events`` turns rows back into
:class:`~chatmem.events.Event` objects.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from chatmem.errors import StoreError, SummaryConflict
from chatmem.events import Event
from chatmem.store.engine import retrying
from chatmem.store.marks import marks_query
from chatmem.store.queries import lock_conversation, require_conversation, touch
from chatmem.store.records import (
    MAX_CONTENT_CHARS,
    MAX_KIND_CHARS,
    MAX_NAME_CHARS,
    Changes,
    LoadedConversation,
    StoredMessage,
    StoredSummary,
    Values,
    check,
    check_limit,
    count_problem,
    dumps,
    dumps_or_none,
    event_record,
    format_time,
    json_object_problem,
    mark_record,
    message_record,
    now,
    seq_runs,
    short,
    summary_record,
    text_problem,
)
from chatmem.store.schema import events_table, messages_table, summaries_table

if TYPE_CHECKING:
    from chatmem.store.core import Store


UNCHECKED: Any = object()
"""``extends`` left out: the version lands whatever is newest (imports, tools)."""


def newest_summary_id(conn: Any, cid: str) -> int | None:
    s = summaries_table
    return conn.scalar(
        sa.select(s.c.id).where(s.c.conversation_id == cid).order_by(s.c.id.desc()).limit(1)
    )


def add_summary(
    store: Store,
    cid: str,
    text: str,
    tokens: int,
    covers_seq: int,
    model: str | None,
    usage: dict[str, Any] | None,
    *,
    extends: int | None = UNCHECKED,
    input_seqs: Any = None,
    edited_by: str | None = None,
    restored_from: int | None = None,
) -> StoredSummary:
    check(text_problem(text, max_chars=MAX_CONTENT_CHARS), "text")
    check(count_problem(tokens), "tokens")
    check(count_problem(covers_seq, minimum=1), "covers_seq")
    if model is not None:
        check(text_problem(model, max_chars=MAX_NAME_CHARS), "model")
    if usage is not None:
        check(json_object_problem(usage), "usage")
    if extends is not UNCHECKED and extends is not None:
        check(count_problem(extends, minimum=1), "extends")
    if edited_by is not None:
        check(text_problem(edited_by, max_chars=MAX_NAME_CHARS), "edited_by")
    if restored_from is not None:
        check(count_problem(restored_from, minimum=1), "restored_from")
    runs = None
    if input_seqs is not None:
        seqs = list(input_seqs)
        for seq in seqs:
            check(count_problem(seq, minimum=1), "input_seqs")
        if seqs and max(seqs) > covers_seq:
            raise StoreError(f"input_seqs: {max(seqs)} is beyond covers_seq {covers_seq}")
        runs = seq_runs(seqs)
    row = {
        "conversation_id": cid,
        "text": text,
        "tokens": tokens,
        "covers_seq": covers_seq,
        "model": model,
        "usage": dumps_or_none(usage),
        "input_seqs": None if runs is None else dumps(runs),
        "edited_by": edited_by,
        "restored_from": restored_from,
    }
    return retrying(lambda: _insert_summary(store, row, extends), "add_summary")


def _insert_summary(store: Store, row: dict[str, Any], extends: int | None) -> StoredSummary:
    """Insert the summary ``row`` if ``extends`` is still the newest version (or unchecked),
    as the version that extends the newest."""
    m = messages_table
    cid, covers_seq = row["conversation_id"], row["covers_seq"]
    with store._tx(write=True) as conn:
        lock_conversation(conn, cid)
        newest = newest_summary_id(conn, cid)
        if extends is not UNCHECKED and extends != newest:
            raise SummaryConflict(newest, extends)
        covered = conn.scalar(
            sa.select(m.c.id).where(m.c.conversation_id == cid, m.c.seq == covers_seq)
        )
        if covered is None:
            raise StoreError(
                f"covers_seq: {covers_seq} points at no message of conversation {cid!r}"
            )
        created = now()
        values = row | {"created_at": created, "extends_id": newest}
        result = conn.execute(summaries_table.insert().values(**values))
        summary_id = result.inserted_primary_key[0]
        touch(conn, cid, created)
    return summary_record(Values(id=summary_id, **values))


def list_summaries(store: Store, cid: str) -> list[StoredSummary]:
    s = summaries_table
    stmt = sa.select(s).where(s.c.conversation_id == cid).order_by(s.c.id)
    with store._tx(write=False) as conn:
        return [summary_record(row) for row in conn.execute(stmt)]


def _event_time(at: object) -> str:
    """``Event.at`` (Unix seconds) as a ``created_at`` value, or StoreError."""
    if isinstance(at, bool) or not isinstance(at, int | float):
        raise StoreError(f"at: expected a Unix time in seconds, got {short(at)}")
    try:
        return format_time(datetime.fromtimestamp(at, UTC))
    except (ValueError, OverflowError, OSError):
        raise StoreError(f"at: {short(at)} is not a time") from None


def add_event(store: Store, cid: str, event: Event) -> Event:
    if not isinstance(event, Event):
        raise StoreError(f"event: expected an Event, got {type(event).__name__}")
    check(text_problem(event.kind, max_chars=MAX_KIND_CHARS), "kind")
    if not event.kind:
        raise StoreError("kind: empty")
    check(json_object_problem(event.data), "data")
    payload = event.payload()
    check(json_object_problem(payload), "data")
    values = {
        "conversation_id": cid,
        "kind": str(event.kind),
        "data": dumps(payload),
        "created_at": _event_time(event.at),
    }

    def insert() -> int:
        with store._tx(write=True) as conn:
            lock_conversation(conn, cid)
            return int(conn.execute(events_table.insert().values(**values)).inserted_primary_key[0])

    return dataclasses.replace(event, id=retrying(insert, "add_event"))


def list_events(store: Store, cid: str, limit: int) -> list[Event]:
    check_limit(limit, "limit")
    e = events_table
    stmt = sa.select(e).where(e.c.conversation_id == cid).order_by(e.c.id.desc()).limit(limit)
    with store._tx(write=False) as conn:
        events = [event_record(row) for row in conn.execute(stmt)]
    events.reverse()
    return events


def changes(
    store: Store,
    cid: str,
    after_seq: int,
    summary_id: int | None,
    limit: int | None,
    mark_id: int = 0,
) -> Changes:
    """Three index range reads: messages by (conversation_id, seq), the newest summary and
    the marks after ``mark_id`` by (conversation_id, id); the cost follows the new rows."""
    check_limit(after_seq, "after_seq")
    m, s = messages_table, summaries_table
    stmt = sa.select(m).where(m.c.conversation_id == cid, m.c.seq > after_seq).order_by(m.c.seq)
    if limit is not None:
        stmt = stmt.limit(check_limit(limit, "limit") + 1)
    newer = sa.select(s).where(s.c.conversation_id == cid)
    if summary_id is not None:
        newer = newer.where(s.c.id > summary_id)
    with store._tx(write=False, snapshot=True) as conn:
        rows = [message_record(r) for r in conn.execute(stmt)]
        row = conn.execute(newer.order_by(s.c.id.desc()).limit(1)).first()
        marks = tuple(mark_record(r) for r in conn.execute(marks_query(cid, mark_id)))
    more = limit is not None and len(rows) > limit
    return Changes(
        messages=tuple(rows[:limit] if more else rows),
        summary=None if row is None else summary_record(row),
        more=more,
        marks=marks,
    )


def load(
    store: Store, cid: str, keep_tail: int, *, tail_limit: int | None = None
) -> LoadedConversation:
    """The body of ``Store.load``; with ``tail_limit``, only the newest ``tail_limit`` of the
    unfolded messages are read (a conversation never folded has them all unfolded: resuming
    one of 250,000 messages reads what the memory can use, not the whole history)."""
    check_limit(keep_tail, "keep_tail")
    if tail_limit is not None:
        check_limit(tail_limit, "tail_limit")
    m, s = messages_table, summaries_table
    with store._tx(write=False, snapshot=True) as conn:
        info = require_conversation(conn, cid)
        row = conn.execute(
            sa.select(s).where(s.c.conversation_id == cid).order_by(s.c.id.desc()).limit(1)
        ).first()
        summary = None if row is None else summary_record(row)
        covers = 0 if summary is None else summary.covers_seq
        unfolded = sa.select(m).where(m.c.conversation_id == cid, m.c.seq > covers)
        if tail_limit is None:
            messages = tuple(message_record(r) for r in conn.execute(unfolded.order_by(m.c.seq)))
        else:
            newest = conn.execute(unfolded.order_by(m.c.seq.desc()).limit(tail_limit))
            messages = tuple(reversed([message_record(r) for r in newest]))
        earlier: tuple[StoredMessage, ...] = ()
        if keep_tail and covers:
            before = conn.execute(
                sa.select(m)
                .where(m.c.conversation_id == cid, m.c.seq <= covers)
                .order_by(m.c.seq.desc())
                .limit(keep_tail)
            )
            earlier = tuple(reversed([message_record(r) for r in before]))
    return LoadedConversation(info=info, summary=summary, messages=messages, earlier=earlier)

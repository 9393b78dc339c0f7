"""Export a conversation (JSON document, Markdown transcript) and import one back.

The bodies of ``Store.export_json``, ``Store.export_markdown`` and ``Store.import_json``. An
import is checked in full by :mod:`chatmem.store.validate` before anything is written; a file
is read as a stream, so its memory is bounded by the import limits, not by the file.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Final

import sqlalchemy as sa

from chatmem.store.queries import (
    get_conversation,
    insert_conversation,
    insert_messages,
    require_conversation,
    seq_chunks,
)
from chatmem.store.records import (
    MAX_TITLE_CHARS,
    ConversationInfo,
    check,
    dumps,
    dumps_or_none,
    format_time,
    loads,
    mark_record,
    marks_in_force,
    message_record,
    now,
    parse_time,
    summary_record,
    text_problem,
)
from chatmem.store.schema import (
    embeddings_table,
    events_table,
    marks_table,
    messages_table,
    summaries_table,
)
from chatmem.store.search import insert_embedding_rows
from chatmem.store.stream import (
    ImportData,
    check_import,
    import_rows,
    import_source,
    is_serialized,
)
from chatmem.store.validate import EXPORT_FORMAT, EXPORT_VERSION, MARK_FIELDS, validate_import

if TYPE_CHECKING:
    from chatmem.store.core import Store

_WRITE_BATCH: Final = 5_000  # rows held before they are written (imports)
MARK_NOTES: Final = {"pinned": "pinned: always sent", "excluded": "left out of requests"}


def export_json(store: Store, cid: str) -> dict[str, Any]:
    """The body of ``Store.export_json``."""
    m, s, e, k = messages_table, summaries_table, events_table, marks_table
    with store._tx(write=False, snapshot=True) as conn:
        info = require_conversation(conn, cid)
        messages = [
            message_record(r)
            for r in conn.execute(sa.select(m).where(m.c.conversation_id == cid).order_by(m.c.seq))
        ]
        summaries = [
            summary_record(r)
            for r in conn.execute(sa.select(s).where(s.c.conversation_id == cid).order_by(s.c.id))
        ]
        # Events go out as stored (kind, the data column as is, created_at), not through
        # Event: a file's events keep exactly the data they came with.
        events = conn.execute(sa.select(e).where(e.c.conversation_id == cid).order_by(e.c.id)).all()
        marks = marks_in_force(
            mark_record(r)
            for r in conn.execute(sa.select(k).where(k.c.conversation_id == cid).order_by(k.c.id))
        )
        v = embeddings_table
        vectors = conn.execute(
            sa.select(v.c.seq, v.c.model, v.c.vector)
            .where(v.c.conversation_id == cid)
            .order_by(v.c.model, v.c.seq)
        ).all()
    return {
        "format": EXPORT_FORMAT,
        "version": EXPORT_VERSION,
        "exported_at": now(),
        "conversation": {
            "id": info.id,
            "title": info.title,
            "created_at": format_time(info.created_at),
            "updated_at": format_time(info.updated_at),
            "settings": info.settings,
            "owner": info.owner,
        },
        "messages": [
            {
                "seq": msg.seq,
                "role": msg.role,
                "content": msg.content,
                "name": msg.name,
                "tokens": msg.tokens,
                "status": msg.status,
                "usage": msg.usage,
                "created_at": format_time(msg.created_at),
                "reply_to": msg.reply_to,
            }
            # a person's marks, only where set (files without them stay as they were)
            | {key: True for key, kind in MARK_FIELDS.items() if msg.seq in marks[kind]}
            for msg in messages
        ],
        "summaries": [
            {
                "text": summ.text,
                "tokens": summ.tokens,
                "covers_seq": summ.covers_seq,
                "model": summ.model,
                "usage": summ.usage,
                "created_at": format_time(summ.created_at),
            }
            | ({"edited_by": summ.edited_by} if summ.edited_by else {})
            | ({"restored_from": summ.restored_from} if summ.restored_from else {})
            for summ in summaries
        ],
        "events": [
            {
                "kind": row.kind,
                "data": loads(row.data) or {},
                "created_at": format_time(parse_time(row.created_at)),
            }
            for row in events
        ],
        # float32 little-endian, base64: as stored, and a quarter of the size of numbers
        "embeddings": [
            {"seq": seq, "model": model, "vector": base64.b64encode(bytes(blob)).decode("ascii")}
            for seq, model, blob in vectors
        ],
    }


def paired(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Exported messages in transcript order: each reply right after the question it answers
    (its ``reply_to``), so tabs that interleaved read as whole exchanges; a reply with no link
    (stored before links existed) stays where it is, after the question before it."""
    questions = {m["seq"] for m in messages if m["role"] == "user"}
    answers: dict[int, list[dict[str, Any]]] = {}
    for m in messages:
        if m.get("reply_to") in questions and m["role"] != "user":
            answers.setdefault(m["reply_to"], []).append(m)
    out: list[dict[str, Any]] = []
    for m in messages:
        if m.get("reply_to") in questions and m["role"] != "user":
            continue  # placed with its question
        out.append(m)
        if m["role"] == "user":
            out.extend(answers.get(m["seq"], ()))
    return out


def _human_time(iso: str) -> str:
    return parse_time(iso).strftime("%Y-%m-%d %H:%M UTC")


def export_markdown(store: Store, cid: str) -> str:
    """The body of ``Store.export_markdown``."""
    doc = export_json(store, cid)
    conv = doc["conversation"]
    lines = [
        f"# {conv['title']}",
        "",
        f"_Conversation {conv['id']}, started {_human_time(conv['created_at'])}, "
        f"{len(doc['messages'])} messages._",
        "",
    ]
    for msg in paired(doc["messages"]):
        label = f"**{msg['role'].capitalize()}**"
        if msg["name"]:
            label += f" ({msg['name']})"
        notes = [] if msg["status"] == "ok" else [msg["status"]]
        notes += [MARK_NOTES[key] for key in MARK_FIELDS if msg.get(key)]
        note = f" _({', '.join(notes)})_" if notes else ""
        lines += [f"{label}:{note}", "", msg["content"], ""]
    if doc["summaries"]:
        lines += ["---", "", "## Summary versions", ""]
        for number, summ in enumerate(doc["summaries"], start=1):
            model = f", {summ['model']}" if summ["model"] else ""
            if summ.get("edited_by"):
                model += f", edited by a {summ['edited_by']}"
            if summ.get("restored_from"):
                model += f", restored from version {summ['restored_from']}"
            lines += [
                f"### Version {number}: covers messages 1-{summ['covers_seq']} "
                f"({summ['tokens']} tokens{model}, {_human_time(summ['created_at'])})",
                "",
                *(f"> {line}" if line else ">" for line in summ["text"].splitlines()),
                "",
            ]
    return "\n".join(lines).rstrip() + "\n"


def import_json(
    store: Store, data: ImportData | dict[str, Any], owner: str | None
) -> ConversationInfo:
    """The body of ``Store.import_json``.

    A file (bytes, str or a binary file object) is read as a stream and checked in full first
    (:func:`~chatmem.store.stream.check_import`: refused at the first problem, before any
    transaction); then one transaction writes its rows in batches, as kept by the check or,
    for a large file, read again. A parsed document (a dict) is checked in full, then written
    in one transaction.
    """
    if is_serialized(data):
        with import_source(data) as source:  # type: ignore[arg-type]
            plan = check_import(source)
            _check_owner(owner)
            return _write(store, plan.conversation, import_rows(source, plan), owner)
    valid = validate_import(data)
    _check_owner(owner)
    return _write(store, valid.conversation, valid.rows(), owner)


def _check_owner(owner: str | None) -> None:
    if owner is not None:
        check(text_problem(owner, max_chars=MAX_TITLE_CHARS), "owner")


def _write(
    store: Store,
    conv: dict[str, Any],
    rows: Iterable[tuple[str, dict[str, Any]]],
    owner: str | None,
) -> ConversationInfo:
    """A new conversation with ``rows`` (checked), in one transaction; messages and events
    go in batches of ``_WRITE_BATCH``, summaries one at a time so their ids (the version
    order) follow the file."""
    created = now()
    with store._tx(write=True) as conn:
        info = insert_conversation(
            conn,
            conv["title"],
            dumps(conv["settings"]),
            owner,
            conv["created_at"] or created,
            created,
        )
        cid = info.id
        messages: list[dict[str, Any]] = []
        events: list[dict[str, Any]] = []
        marks: list[dict[str, Any]] = []
        vectors: list[dict[str, Any]] = []
        for kind, row in rows:
            if kind == "message":
                row = dict(row)
                marks.extend(
                    {"conversation_id": cid, "seq": row["seq"], "kind": mark, "value": 1}
                    | {"created_at": created}
                    for mark in row.pop("marks", ())
                )
                messages.append(
                    {
                        **row,
                        "conversation_id": cid,
                        "usage": dumps_or_none(row["usage"]),
                        "created_at": row["created_at"] or created,
                    }
                )
                if len(messages) >= _WRITE_BATCH:
                    insert_messages(conn, messages)
                    messages = []
            elif kind == "summary":
                conn.execute(
                    summaries_table.insert().values(
                        {
                            **row,
                            "conversation_id": cid,
                            "usage": dumps_or_none(row["usage"]),
                            "created_at": row["created_at"] or created,
                        }
                    )
                )
            elif kind == "embedding":
                vectors.append(row)
                if len(vectors) >= _WRITE_BATCH:
                    if messages:  # their ids first
                        insert_messages(conn, messages)
                        messages = []
                    vectors = _write_vectors(store, conn, cid, vectors, created)
            else:
                events.append(
                    {
                        "conversation_id": cid,
                        "kind": row["kind"],
                        "data": dumps(row["data"]),
                        "created_at": row["created_at"] or created,
                    }
                )
                if len(events) >= _WRITE_BATCH:
                    conn.execute(events_table.insert(), events)
                    events = []
        if messages:
            insert_messages(conn, messages)
        if events:
            conn.execute(events_table.insert(), events)
        if marks:
            conn.execute(marks_table.insert(), marks)
        if vectors:
            vectors = _write_vectors(store, conn, cid, vectors, created)
        if vectors:  # the check found every seq in the file: its messages are all written
            raise AssertionError(f"embeddings for seqs with no message: {vectors[0]['seq']}")
        info = get_conversation(conn, cid)
    assert info is not None
    return info


def _write_vectors(
    store: Store, conn: sa.Connection, cid: str, vectors: list[dict[str, Any]], created: str
) -> list[dict[str, Any]]:
    """Insert the embeddings whose messages are written; returns the others (their messages
    come later in the file)."""
    m = messages_table
    wanted = sorted({vec["seq"] for vec in vectors})
    ids: dict[int, int] = {}
    for chunk in seq_chunks(wanted):
        stmt = sa.select(m.c.seq, m.c.id).where(m.c.conversation_id == cid, m.c.seq.in_(chunk))
        ids.update((seq, message_id) for seq, message_id in conn.execute(stmt))
    rows = [
        {**vec, "message_id": ids[vec["seq"]], "conversation_id": cid, "created_at": created}
        for vec in vectors
        if vec["seq"] in ids
    ]
    if rows:
        insert_embedding_rows(conn, store.backend, rows)
    return [vec for vec in vectors if vec["seq"] not in ids]

"""Export a conversation (JSON document, Markdown transcript) and import one back.

The bodies of ``Store.export_json``, ``Store.export_markdown`` and ``Store.import_json``. An
import is checked in full by :mod:`chatmem.store.validate` before anything is written.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from chatmem.store.queries import get_conversation, insert_messages, require_conversation
from chatmem.store.records import (
    MAX_TITLE_CHARS,
    ConversationInfo,
    check,
    dumps,
    dumps_or_none,
    format_time,
    loads,
    message_record,
    now,
    parse_time,
    summary_record,
    text_problem,
)
from chatmem.store.schema import (
    conversations_table,
    events_table,
    messages_table,
    summaries_table,
)
from chatmem.store.validate import EXPORT_FORMAT, EXPORT_VERSION, parse_import, validate_import

if TYPE_CHECKING:
    from chatmem.store.core import Store


def export_json(store: Store, cid: str) -> dict[str, Any]:
    """The body of ``Store.export_json``."""
    m, s, e = messages_table, summaries_table, events_table
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
            }
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
    }


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
    for msg in doc["messages"]:
        label = f"**{msg['role'].capitalize()}**"
        if msg["name"]:
            label += f" ({msg['name']})"
        note = "" if msg["status"] == "ok" else f" _({msg['status']})_"
        lines += [f"{label}:{note}", "", msg["content"], ""]
    if doc["summaries"]:
        lines += ["---", "", "## Summary versions", ""]
        for number, summ in enumerate(doc["summaries"], start=1):
            model = f", {summ['model']}" if summ["model"] else ""
            lines += [
                f"### Version {number}: covers messages 1-{summ['covers_seq']} "
                f"({summ['tokens']} tokens{model}, {_human_time(summ['created_at'])})",
                "",
                *(f"> {line}" if line else ">" for line in summ["text"].splitlines()),
                "",
            ]
    return "\n".join(lines).rstrip() + "\n"


def import_json(
    store: Store, data: bytes | str | dict[str, Any], owner: str | None
) -> ConversationInfo:
    """The body of ``Store.import_json``."""
    valid = validate_import(parse_import(data))
    if owner is not None:
        check(text_problem(owner, max_chars=MAX_TITLE_CHARS), "owner")
    created = now()
    cid = uuid.uuid4().hex
    conv = valid.conversation
    with store._tx(write=True) as conn:
        conn.execute(
            conversations_table.insert().values(
                id=cid,
                title=conv["title"],
                created_at=conv["created_at"] or created,
                updated_at=created,
                settings=dumps(conv["settings"]),
                owner=owner,
            )
        )
        if valid.messages:
            insert_messages(
                conn,
                [
                    {
                        **msg,
                        "conversation_id": cid,
                        "usage": dumps_or_none(msg["usage"]),
                        "created_at": msg["created_at"] or created,
                    }
                    for msg in valid.messages
                ],
            )
        # One row at a time keeps the ids (the version order) in file order.
        for summ in valid.summaries:
            conn.execute(
                summaries_table.insert().values(
                    {
                        **summ,
                        "conversation_id": cid,
                        "usage": dumps_or_none(summ["usage"]),
                        "created_at": summ["created_at"] or created,
                    }
                )
            )
        if valid.events:
            conn.execute(
                events_table.insert(),
                [
                    {
                        "conversation_id": cid,
                        "kind": ev["kind"],
                        "data": dumps(ev["data"]),
                        "created_at": ev["created_at"] or created,
                    }
                    for ev in valid.events
                ],
            )
        info = get_conversation(conn, cid)
    assert info is not None
    return info

"""Finding messages: full-text search (SQL per backend) and the stored embedding vectors.

The bodies of ``Store.search_messages``, ``Store.add_embeddings`` and ``Store.embeddings``;
the methods' docstrings describe the behaviour.
"""

from __future__ import annotations

import logging
import math
import re
import sys
from array import array
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, Final

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect

from chatmem.errors import StoreError
from chatmem.store.queries import require_conversation, seq_chunks
from chatmem.store.records import (
    MAX_CONTENT_CHARS,
    MAX_NAME_CHARS,
    MAX_TITLE_CHARS,
    SearchHit,
    check,
    check_before_seq,
    check_limit,
    check_seq,
    now,
    text_problem,
)
from chatmem.store.schema import embeddings_table, messages_table
from chatmem.text import query_terms

if TYPE_CHECKING:
    from chatmem.store.core import Store

log = logging.getLogger("chatmem.store")

EMBEDDING_MAX_DIMS: Final = 16_384
"""Longest embedding vector ``add_embeddings`` accepts (text-embedding-3-large has 3,072)."""

_WORD_RE = re.compile(r"\w+")

# --------------------------------------------------------------------------------------------
# Full-text search
# --------------------------------------------------------------------------------------------

# Ranked by FTS5 bm25() (lower is better). CROSS JOIN keeps the FTS table as the outer loop:
# messages are only looked up by primary key for the index's matches, never scanned.
_SQLITE_SEARCH = """
                SELECT m.seq, m.role, m.name, m.content,
                       bm25(messages_fts, 0.0, 1.0) AS bm25_rank
                FROM messages_fts CROSS JOIN messages AS m ON m.id = messages_fts.rowid
                WHERE messages_fts MATCH :match
                  AND m.conversation_id = :cid AND m.status = 'ok' {seq_filter}
                ORDER BY bm25_rank, m.seq DESC
                LIMIT :limit"""

# The query text is a bound parameter; ``to_tsvector('english', content)`` must be spelled
# exactly as in the index (ix_messages_content_fts) for it to be used.
_POSTGRES_SEARCH = """
                SELECT m.seq, m.role, m.name, m.content,
                       ts_rank_cd(to_tsvector('english', m.content),
                                  to_tsquery('english', :tsquery), 1) AS pg_rank
                FROM messages AS m
                WHERE to_tsvector('english', m.content) @@ to_tsquery('english', :tsquery)
                  AND m.conversation_id = :cid AND m.status = 'ok' {seq_filter}
                ORDER BY pg_rank DESC, m.seq DESC
                LIMIT :limit"""


def _sqlite_match(cid: str, terms: list[str]) -> str:
    """The FTS5 MATCH expression: any of ``terms`` in content, within the conversation."""
    words = " OR ".join(f'"{term}"' for term in terms)
    match = f"content : ({words})"
    # Narrow the match to the conversation inside the index. Every id the store makes
    # is uuid hex; an id without a single ASCII letter or digit could tokenize to an
    # empty phrase (matching nothing), so it is left to the join filter alone, which
    # is what makes the result correct in every case.
    if re.search(r"[A-Za-z0-9]", cid):
        phrase = '"' + cid.replace('"', '""') + '"'
        match = f"conversation_id : {phrase} AND {match}"
    return match


def search_messages(
    store: Store, cid: str, query: str, *, before_seq: int | None, limit: int
) -> list[SearchHit]:
    """The body of ``Store.search_messages``."""
    check(text_problem(cid, max_chars=MAX_TITLE_CHARS), "cid")
    check(text_problem(query, max_chars=MAX_CONTENT_CHARS), "query")
    check_limit(limit, "limit")
    before_seq = check_before_seq(before_seq)
    # Terms are \w+ runs: no quote, operator or column syntax of either backend can leak in.
    terms = [term for term in query_terms(query) if _WORD_RE.fullmatch(term)]
    if not terms or limit == 0 or (before_seq is not None and before_seq <= 1):
        return []
    params: dict[str, Any] = {"cid": cid, "limit": limit}
    seq_filter = ""
    if before_seq is not None:
        seq_filter = "AND m.seq < :before_seq"
        params["before_seq"] = before_seq
    if store.backend == "sqlite":
        params["match"] = _sqlite_match(cid, terms)
        sql = _SQLITE_SEARCH.format(seq_filter=seq_filter)
    else:
        params["tsquery"] = " | ".join(terms)
        sql = _POSTGRES_SEARCH.format(seq_filter=seq_filter)
    with store._tx(write=False) as conn:
        rows = conn.execute(sa.text(sql), params).all()
    sign = -1.0 if store.backend == "sqlite" else 1.0
    return [
        SearchHit(seq=seq, role=role, name=name, content=content, score=sign * float(rank))
        for seq, role, name, content, rank in rows
    ]


# --------------------------------------------------------------------------------------------
# Embeddings
# --------------------------------------------------------------------------------------------


def _vector_bytes(vector: object, where: str) -> tuple[int, bytes]:
    """(dims, float32 little-endian bytes) of an embedding, or StoreError."""
    try:
        values = vector if isinstance(vector, array) and vector.typecode == "f" else None
        if values is None:
            if isinstance(vector, str | bytes) or not isinstance(vector, Iterable):
                raise TypeError
            values = array("f", vector)  # type: ignore[arg-type]
    except (TypeError, OverflowError):
        raise StoreError(f"{where}: the vector must be a sequence of numbers") from None
    if not 0 < len(values) <= EMBEDDING_MAX_DIMS:
        raise StoreError(
            f"{where}: the vector has {len(values)} numbers (1..{EMBEDDING_MAX_DIMS} allowed)"
        )
    if not all(math.isfinite(v) for v in values):
        raise StoreError(f"{where}: the vector contains NaN or infinity")
    if sys.byteorder == "big":
        values = array("f", values)
        values.byteswap()
    return len(values), values.tobytes()


def add_embeddings(
    store: Store, cid: str, items: Iterable[tuple[int, Sequence[float]]], model: str
) -> None:
    """The body of ``Store.add_embeddings``."""
    check(text_problem(model, max_chars=MAX_NAME_CHARS), "model")
    if not model:
        raise StoreError("model: empty")
    vectors: dict[int, tuple[int, bytes]] = {}
    for i, item in enumerate(items):
        try:
            seq, vector = item
        except (TypeError, ValueError):
            raise StoreError(f"items[{i}]: expected a (seq, vector) pair") from None
        vectors.setdefault(check_seq(seq), _vector_bytes(vector, f"items[{i}]"))
    if not vectors:
        return
    m = messages_table
    created = now()
    with store._tx(write=True) as conn:
        require_conversation(conn, cid)
        ids: dict[int, int] = {}
        wanted = sorted(vectors)
        for chunk in seq_chunks(wanted):
            stmt = sa.select(m.c.seq, m.c.id).where(m.c.conversation_id == cid, m.c.seq.in_(chunk))
            ids.update((seq, message_id) for seq, message_id in conn.execute(stmt))
        missing = [seq for seq in wanted if seq not in ids]
        if missing:
            shown = ", ".join(str(seq) for seq in missing[:5])
            raise StoreError(f"seq: {shown} point at no message of conversation {cid!r}")
        rows = [
            {
                "message_id": ids[seq],
                "model": model,
                "conversation_id": cid,
                "seq": seq,
                "dims": dims,
                "vector": blob,
                "created_at": created,
            }
            for seq, (dims, blob) in sorted(vectors.items())
        ]
        dialect = sqlite_dialect if store.backend == "sqlite" else pg_dialect
        insert = dialect.insert(embeddings_table).on_conflict_do_nothing(
            index_elements=["message_id", "model"]
        )
        conn.execute(insert, rows)


def embeddings(
    store: Store, cid: str, model: str, before_seq: int | None
) -> list[tuple[int, array]]:
    """The body of ``Store.embeddings``."""
    e = embeddings_table
    stmt = sa.select(e.c.seq, e.c.dims, e.c.vector).where(
        e.c.conversation_id == cid, e.c.model == model
    )
    before_seq = check_before_seq(before_seq)
    if before_seq is not None:
        stmt = stmt.where(e.c.seq < before_seq)
    with store._tx(write=False) as conn:
        rows = conn.execute(stmt.order_by(e.c.seq)).all()
    out = []
    for seq, dims, blob in rows:
        vector = array("f")
        vector.frombytes(bytes(blob))
        if sys.byteorder == "big":
            vector.byteswap()
        if len(vector) != dims:
            log.warning("embedding of message %d in %s is damaged: skipped", seq, cid)
            continue
        out.append((seq, vector))
    return out

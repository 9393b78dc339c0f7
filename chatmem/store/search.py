"""Finding messages: full-text search (SQL per backend), rebuilding its index, and the stored
embedding vectors.

The bodies of ``Store.search_messages``, ``Store.rebuild_search_index``,
``Store.add_embeddings`` and ``Store.embeddings``; the methods' docstrings describe the
behaviour.
"""

from __future__ import annotations

import logging
import math
import re
import sys
from array import array
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Final

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.engine import Connection

from chatmem.errors import SearchIndexError, StoreError
from chatmem.store.queries import require_conversation, seq_chunks
from chatmem.store.records import (
    MAX_CONTENT_CHARS,
    MAX_NAME_CHARS,
    MAX_TITLE_CHARS,
    IndexRebuild,
    SearchHit,
    check,
    check_before_seq,
    check_limit,
    check_seq,
    now,
    text_problem,
)
from chatmem.store.schema import (
    PG_SEARCH_INDEX,
    PG_SEARCH_VECTOR,
    SQLITE_SEARCH_TABLE,
    SQLITE_SEARCH_TRIGGERS,
    embeddings_table,
    messages_table,
    sqlite_search_index_ddl,
)
from chatmem.store.validate import EMBEDDING_MAX_DIMS
from chatmem.text import query_terms

if TYPE_CHECKING:
    from chatmem.store.core import Store

log = logging.getLogger("chatmem.store")


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
                WHERE messages_fts MATCH :match AND messages_fts.rowid >= :since_id
                  AND m.conversation_id = :cid AND m.status = 'ok' {seq_filter}
                ORDER BY bm25_rank, m.seq DESC
                LIMIT :limit"""

# How many messages of the conversation hold a term, counted no further than :cap.
_SQLITE_TERM_COUNT = """
                SELECT count(*) FROM (
                    SELECT rowid FROM messages_fts WHERE messages_fts MATCH :match LIMIT :cap
                )"""

# The row id of the conversation's first message among the newest :window before :before
# (or before its end); ids grow with seqs.
_SQLITE_FIRST_ID = """
                SELECT min(id) FROM messages
                WHERE conversation_id = :cid AND seq >= coalesce(
                    :before, (SELECT max(seq) + 1 FROM messages WHERE conversation_id = :cid)
                ) - :window"""

COMMON_TERM: Final = 1_000
"""A query term in more of the conversation's messages than this is common: on SQLite a
search uses the query's rare terms over the whole conversation, and a query of common words
alone searches the newest :data:`RECENT_WINDOW` messages, so its cost does not grow with the
conversation (BM25 weighs a common word near nothing). Checking a term reads at most this
many index entries."""
RECENT_WINDOW: Final = 2_000

# The query text is a bound parameter; the tsvector must be spelled exactly as in the index
# (``schema.PG_SEARCH_VECTOR``, migration 5) for it to be used, and the rank reads the same
# one (the whole text of a long message would not fit a tsvector).
_PG_VECTOR = PG_SEARCH_VECTOR.format(column="m.content")
_POSTGRES_SEARCH = (
    """
                SELECT m.seq, m.role, m.name, m.content,
                       ts_rank_cd(VECTOR, to_tsquery('english', :tsquery), 1) AS pg_rank
                FROM messages AS m
                WHERE VECTOR @@ to_tsquery('english', :tsquery)
                  AND m.conversation_id = :cid AND m.status = 'ok' {seq_filter}
                ORDER BY pg_rank DESC, m.seq DESC
                LIMIT :limit"""
).replace("VECTOR", _PG_VECTOR)


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


def _sqlite_term_count(conn: Connection, cid: str, term: str) -> int:
    """The conversation's messages holding ``term``, counted up to ``COMMON_TERM + 1``."""
    params = {"match": _sqlite_match(cid, [term]), "cap": COMMON_TERM + 1}
    return int(conn.execute(sa.text(_SQLITE_TERM_COUNT), params).scalar() or 0)


def search_messages(
    store: Store, cid: str, query: str, *, before_seq: int | None, limit: int, bounded: bool = False
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
    with store._tx(write=False) as conn:
        if store.backend == "sqlite":
            rare = terms
            if bounded:
                rare = [t for t in terms if _sqlite_term_count(conn, cid, t) <= COMMON_TERM]
            params["match"] = _sqlite_match(cid, rare or terms)
            params["since_id"] = 0
            if not rare:
                window = {"cid": cid, "before": before_seq, "window": RECENT_WINDOW}
                first = conn.execute(sa.text(_SQLITE_FIRST_ID), window).scalar()
                params["since_id"] = first if first is not None else sys.maxsize
            sql = _SQLITE_SEARCH.format(seq_filter=seq_filter)
        else:
            params["tsquery"] = " | ".join(terms)
            sql = _POSTGRES_SEARCH.format(seq_filter=seq_filter)
        rows = conn.execute(sa.text(sql), params).all()
    sign = -1.0 if store.backend == "sqlite" else 1.0
    return [
        SearchHit(seq=seq, role=role, name=name, content=content, score=sign * float(rank))
        for seq, role, name, content, rank in rows
    ]


# --------------------------------------------------------------------------------------------
# Rebuilding the index
# --------------------------------------------------------------------------------------------

Progress = Callable[[int, int], object]
"""``progress(done, total)``: conversations indexed so far, of how many."""

_BLANK_FTS = "chatmem_fts_blank"  # a temporary FTS5 table: what an empty index holds
_FTS_SHADOWS = ("data", "idx", "docsize", "config", "content")  # FTS5's own tables
_FTS_NEEDED = ("data", "idx", "docsize", "config")  # those of an external-content table
_SQLITE_FILL = """
    INSERT INTO messages_fts (rowid, conversation_id, content)
        SELECT id, conversation_id, content FROM messages
        WHERE conversation_id = :cid ORDER BY id"""


def rebuild_index(store: Store, progress: Progress | None) -> IndexRebuild:
    """The body of ``Store.rebuild_search_index``."""
    if store.backend == "sqlite":
        return _rebuild_sqlite(store, progress)
    return _rebuild_postgres(store, progress)


def detach_index(store: Store) -> None:
    """Take a damaged index out of the write path, so messages can still be written.

    SQLite: drop the triggers that keep the FTS5 table in sync (and the table, if it can be
    dropped); searches then fail with ``SearchIndexError`` until a rebuild. PostgreSQL: drop
    the GIN index; searches then read the conversation's rows without it.
    """
    with store._tx(write=True) as conn:
        if store.backend == "sqlite":
            for trigger in SQLITE_SEARCH_TRIGGERS:
                conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {trigger}")
            _try(conn, f"DROP TABLE IF EXISTS {SQLITE_SEARCH_TABLE}")
        else:
            conn.exec_driver_sql(f"DROP INDEX IF EXISTS {PG_SEARCH_INDEX}")


def index_parts_missing(store: Store) -> bool:
    """SQLite: whether the FTS5 table or one of its own tables is gone. FTS5 then fails with
    a bare "SQL logic error" that does not name the index."""
    if store.backend != "sqlite":
        return False
    with store._tx(write=False) as conn:
        names = _index_tables(conn)
    needed = {SQLITE_SEARCH_TABLE, *(f"{SQLITE_SEARCH_TABLE}_{s}" for s in _FTS_NEEDED)}
    return not needed <= names


def _index_tables(conn: Connection) -> set[str]:
    """The names of the FTS5 table and of its own tables that the schema lists."""
    return set(
        conn.scalars(
            sa.text("SELECT name FROM sqlite_schema WHERE name = :table OR name GLOB :shadows"),
            {"table": SQLITE_SEARCH_TABLE, "shadows": f"{SQLITE_SEARCH_TABLE}_*"},
        )
    )


def _try(conn: Connection, statement: str) -> bool:
    """Run ``statement`` in a savepoint; False (and nothing changed) if the driver refused."""
    try:
        with conn.begin_nested():
            conn.exec_driver_sql(statement)
    except (sa_exc.DBAPIError, MemoryError):  # SQLite: "out of memory" from a damaged record
        return False
    return True


def _rebuild_sqlite(store: Store, progress: Progress | None) -> IndexRebuild:
    """Make the FTS5 table and its triggers anew, then index every message, conversation by
    conversation, in one write transaction (a failure leaves the database as it was)."""
    m = messages_table
    with store._tx(write=True) as conn:
        _reset_sqlite_index(conn)
        by_conversation = sa.select(m.c.conversation_id).distinct().order_by(m.c.conversation_id)
        cids = list(conn.scalars(by_conversation))
        for done, cid in enumerate(cids, start=1):
            conn.execute(sa.text(_SQLITE_FILL), {"cid": cid})
            if progress is not None:
                progress(done, len(cids))
        messages = int(conn.scalar(sa.select(sa.func.count()).select_from(m)) or 0)
    return IndexRebuild(conversations=len(cids), messages=messages)


def _reset_sqlite_index(conn: Connection) -> None:
    """Leave an empty, working FTS5 table and its triggers, whatever state the old one is in.

    A table FTS5 can still open is dropped (with its own tables). One it cannot open (its
    structure record or configuration damaged, one of its tables gone) cannot be dropped
    either: its own tables are then given the contents of a new, empty FTS5 table (and
    created if missing), which FTS5 opens as an empty index.
    """
    names = set(
        conn.scalars(
            sa.text("SELECT name FROM sqlite_schema WHERE name = :table OR name GLOB :shadows"),
            {"table": SQLITE_SEARCH_TABLE, "shadows": f"{SQLITE_SEARCH_TABLE}_*"},
        )
    )
    for trigger in SQLITE_SEARCH_TRIGGERS:
        conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {trigger}")
    if SQLITE_SEARCH_TABLE in names:
        if not _try(conn, f"DROP TABLE {SQLITE_SEARCH_TABLE}"):
            _blank_shadow_tables(conn, names)
    else:  # its own tables left behind without it would block CREATE VIRTUAL TABLE
        for suffix in _FTS_SHADOWS:
            conn.exec_driver_sql(f"DROP TABLE IF EXISTS {SQLITE_SEARCH_TABLE}_{suffix}")
    for statement in sqlite_search_index_ddl():
        conn.exec_driver_sql(statement)


def _blank_shadow_tables(conn: Connection, names: set[str]) -> None:
    create = sqlite_search_index_ddl()[0]
    head = f"CREATE VIRTUAL TABLE IF NOT EXISTS {SQLITE_SEARCH_TABLE} USING"
    assert head in create, create
    conn.exec_driver_sql(f"DROP TABLE IF EXISTS temp.{_BLANK_FTS}")
    conn.exec_driver_sql(create.replace(head, f"CREATE VIRTUAL TABLE temp.{_BLANK_FTS} USING"))
    for suffix in _FTS_SHADOWS:
        blank, ours = f"{_BLANK_FTS}_{suffix}", f"{SQLITE_SEARCH_TABLE}_{suffix}"
        ddl = conn.scalar(
            sa.text("SELECT sql FROM temp.sqlite_schema WHERE name = :name"), {"name": blank}
        )
        if ddl is None:
            continue  # a table this kind of FTS5 index does not have
        if ours not in names:
            conn.exec_driver_sql(ddl.replace(f"'{blank}'", f"main.'{ours}'"))
        conn.exec_driver_sql(f"DELETE FROM main.{ours}")
        conn.exec_driver_sql(f"INSERT INTO main.{ours} SELECT * FROM temp.{blank}")
    conn.exec_driver_sql(f"DROP TABLE temp.{_BLANK_FTS}")


def _rebuild_postgres(store: Store, progress: Progress | None) -> IndexRebuild:
    """REINDEX the GIN index (created first if it was dropped)."""
    m = messages_table
    with store._tx(write=True) as conn:
        cids = int(conn.scalar(sa.select(sa.func.count(sa.distinct(m.c.conversation_id)))) or 0)
        messages = int(conn.scalar(sa.select(sa.func.count()).select_from(m)) or 0)
        if progress is not None:
            progress(0, cids)
        exists = conn.scalar(sa.text("SELECT to_regclass(:name)"), {"name": PG_SEARCH_INDEX})
        if exists is None:
            vector = PG_SEARCH_VECTOR.format(column="content")
            conn.exec_driver_sql(f"CREATE INDEX {PG_SEARCH_INDEX} ON messages USING gin ({vector})")
        else:
            conn.exec_driver_sql(f"REINDEX INDEX {PG_SEARCH_INDEX}")
        if progress is not None:
            progress(cids, cids)
    return IndexRebuild(conversations=cids, messages=messages)


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
        insert_embedding_rows(conn, store.backend, rows)


def insert_embedding_rows(conn: Connection, backend: str, rows: list[dict[str, Any]]) -> None:
    """Insert embedding rows (message_id, model, conversation_id, seq, dims, vector,
    created_at); one already stored for the same message and model is kept."""
    dialect = sqlite_dialect if backend == "sqlite" else pg_dialect
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


def index_broken(store: Store) -> bool:
    """Whether a part of the full-text index is missing (False when that cannot be told)."""
    try:
        return index_parts_missing(store)
    except StoreError:
        return False


def repair_index(store: Store, damage: SearchIndexError) -> bool:
    """Rebuild a damaged index: True once it works again. Attempted once per Store; if it
    fails, the index is detached (``search.detach_index``) so writes go on."""
    with store._repair_lock:
        if store._repair_failed:
            return False
        cause = damage.__cause__
        detail = getattr(cause, "orig", None) or cause or damage
        if isinstance(detail, MemoryError):
            detail = "out of memory"
        log.warning("the full-text search index is damaged (%s); rebuilding it", detail)
        try:
            result = rebuild_index(store, None)
        except (StoreError, MemoryError) as exc:
            store._repair_failed = True
            log.error(
                "could not rebuild the full-text search index (%s): search is off until "
                "`python -m chatmem --reindex` succeeds",
                exc,
            )
            try:
                detach_index(store)
            except (StoreError, MemoryError) as detach_error:
                log.error("could not detach the damaged search index: %s", detach_error)
            return False
        log.warning(
            "rebuilt the full-text search index: %d messages in %d conversations",
            result.messages,
            result.conversations,
        )
        return True

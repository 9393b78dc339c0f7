"""The tables, and the numbered migrations that create them.

Layout of the data:

- ``conversations``: one row per chat (uuid4 hex id, title, settings as JSON, owner).
- ``messages``: numbered per conversation by ``seq`` (1, 2, 3...; unique per conversation).
- ``summaries``: rolling summary versions; ``covers_seq`` is the seq of the last message folded
  into it, so resuming reads only the messages after it (an indexed range query).
- ``events``: what the memory did (fold, trim, error...), for the inspector.
- ``schema_version``: one row per applied migration (see ``MIGRATIONS``).
- Full-text index of message content for ``search_messages`` (migration 3): on SQLite the FTS5
  table ``messages_fts``, kept in sync by triggers on ``messages``; on PostgreSQL a GIN index,
  since migration 5 on ``to_tsvector('english', left(content, PG_INDEXED_CHARS))`` (the head
  of a message that fits PostgreSQL's 1 MB tsvector limit; migration 3 indexed all of it).
- Migration 6: ``messages.reply_to`` (a reply's question: the seq of the user message it
  answers), and per summary version ``extends_id`` (the version it was folded on top of) and
  ``input_seqs`` (the seqs it read, as JSON ``[[first, last], ...]`` runs), so a fold commits by
  compare-and-set and its coverage can be checked.
- Migration 7 (people's corrections): per summary version ``edited_by`` (``person`` for a
  version a person wrote) and ``restored_from`` (the number of the version it copies), and the
  ``message_marks`` table: pins and exclusions, one row per change (the newest per seq and
  kind is in force), so other sessions catch up on them by id like on summary versions.
- ``embeddings`` (migration 4): one vector per message and embedding model, for hybrid recall
  (``add_embeddings``, ``embeddings``): float32 little-endian bytes, the same on both backends.

Each migration is a plain function ``(conn, backend)``, listed in order in ``MIGRATIONS``; a
migration's DDL is frozen once released (a new change is a new migration), and every step is
idempotent (IF NOT EXISTS...), so a half-recorded one re-applies cleanly.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection

from chatmem.errors import StoreError
from chatmem.store.records import now

log = logging.getLogger("chatmem.store")

_PG_MIGRATION_LOCK: Final = 0x63686D656D  # "chmem": pg_advisory_xact_lock key for migrations
_PG_PROGRAM_LIMIT_EXCEEDED: Final = "54000"  # e.g. "string is too long for tsvector"

# --------------------------------------------------------------------------------------------
# Query-side table descriptions
# --------------------------------------------------------------------------------------------

# The DDL lives in the migrations (frozen per version); these only tell SQLAlchemy Core the
# names, types and keys used in statements (nullability is the DDL's). A test checks that
# they name the same columns.
_meta = sa.MetaData()


_TYPES: Final = {
    "text": sa.Text,
    "int": sa.Integer,
    "bigint": sa.BigInteger,
    "bytes": sa.LargeBinary,
}


def _table(name: str, columns: str) -> sa.Table:
    """A table for statements, its columns named in order as ``name[:type][key]``.

    The type is TEXT unless written (``:int``, ``:bigint``, ``:bytes``); the key mark is
    ``*`` for a primary-key column, ``+`` for a serial one (numbered by the database).
    """
    made = []
    for item in columns.split():
        key = item[-1] if item[-1] in "*+" else ""
        column, _, kind = item.rstrip("*+").partition(":")
        made.append(
            sa.Column(
                column, _TYPES[kind or "text"], primary_key=bool(key), autoincrement=key == "+"
            )
        )
    return sa.Table(name, _meta, *made)


def _conversation_rows(name: str, columns: str) -> sa.Table:
    """A table of rows that belong to a conversation: a serial ``id``, the
    ``conversation_id``, ``columns``, and a ``created_at`` time."""
    return _table(name, f"id:bigint+ conversation_id {columns} created_at")


conversations_table = _table("conversations", "id* title created_at updated_at settings owner")
messages_table = _conversation_rows(
    "messages", "seq:int role content name tokens:int status usage reply_to:int"
)
summaries_table = _conversation_rows(
    "summaries",
    "text tokens:int covers_seq:int model usage extends_id:bigint input_seqs "
    "edited_by restored_from:int",
)
marks_table = _conversation_rows("message_marks", "seq:int kind value:int")
events_table = _conversation_rows("events", "kind data")
embeddings_table = _table(
    "embeddings",
    "message_id:bigint* model* conversation_id seq:int dims:int vector:bytes created_at",
)
schema_version_table = _table("schema_version", "version:int* description applied_at")
TABLE_NAMES: Final = (
    "message_marks",
    "embeddings",
    "events",
    "summaries",
    "messages",
    "conversations",
    "schema_version",
)
"""Every table the store owns, children first (the order to drop them in)."""

_SCHEMA_VERSION_DDL = """
CREATE TABLE IF NOT EXISTS schema_version (
    version INTEGER PRIMARY KEY,
    description TEXT NOT NULL,
    applied_at TEXT NOT NULL
)"""

_SERIAL_PK = {
    "sqlite": "INTEGER PRIMARY KEY AUTOINCREMENT",
    "postgresql": "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY",
}
_BLOB = {"sqlite": "BLOB", "postgresql": "BYTEA"}


def _run(conn: Connection, statements: tuple[str, ...], **names: str) -> None:
    """Execute DDL statements in order, filling in ``{name}`` placeholders."""
    for statement in statements:
        conn.exec_driver_sql(statement.format(**names))


# --------------------------------------------------------------------------------------------
# Migrations
# --------------------------------------------------------------------------------------------

_V1_DDL = (
    """
    CREATE TABLE IF NOT EXISTS conversations (
        id TEXT PRIMARY KEY,
        title TEXT NOT NULL,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        settings TEXT NOT NULL DEFAULT '{{}}',
        owner TEXT
    )""",
    """
    CREATE TABLE IF NOT EXISTS messages (
        id {serial_pk},
        conversation_id TEXT NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
        seq INTEGER NOT NULL CHECK (seq > 0),
        role TEXT NOT NULL CHECK (role IN ('system', 'user', 'assistant', 'tool')),
        content TEXT NOT NULL,
        name TEXT,
        tokens INTEGER CHECK (tokens >= 0),
        status TEXT NOT NULL DEFAULT 'ok' CHECK (status IN ('ok', 'failed', 'incomplete')),
        usage TEXT,
        created_at TEXT NOT NULL
    )""",
    # The unique index is also the index for every range read by (conversation_id, seq).
    """
    CREATE UNIQUE INDEX IF NOT EXISTS ux_messages_conversation_seq
        ON messages (conversation_id, seq)""",
    """
    CREATE TABLE IF NOT EXISTS summaries (
        id {serial_pk},
        conversation_id TEXT NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
        text TEXT NOT NULL,
        tokens INTEGER NOT NULL CHECK (tokens >= 0),
        covers_seq INTEGER NOT NULL,
        model TEXT,
        usage TEXT,
        created_at TEXT NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS ix_summaries_conversation ON summaries (conversation_id, id)",
    """
    CREATE TABLE IF NOT EXISTS events (
        id {serial_pk},
        conversation_id TEXT NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
        kind TEXT NOT NULL,
        data TEXT NOT NULL DEFAULT '{{}}',
        created_at TEXT NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS ix_events_conversation ON events (conversation_id, id)",
)


def _v1_tables(conn: Connection, backend: str) -> None:
    _run(conn, _V1_DDL, serial_pk=_SERIAL_PK[backend])


_V2_DDL = (
    "CREATE INDEX IF NOT EXISTS ix_conversations_updated ON conversations (updated_at)",
    """
    CREATE INDEX IF NOT EXISTS ix_conversations_owner_updated
        ON conversations (owner, updated_at)""",
)


def _v2_owner_index(conn: Connection, backend: str) -> None:
    _run(conn, _V2_DDL)


# Version 3: full-text search over message content (``Store.search_messages``).
#
# SQLite: an FTS5 table with EXTERNAL content (content='messages', content_rowid='id'): the
# text is stored once, in messages, and the FTS table holds only the index, so the database
# does not double in size. Besides ``content`` it indexes ``conversation_id`` (one token: the
# uuid hex), so a search is "this conversation AND any of the words", answered inside the
# index: the cost follows the matches in that conversation, not the matches in every
# conversation of a shared database. seq and status stay in messages and are checked on the
# join by primary key. bm25() gets a weight of 0 for the conversation_id column.
#
# An external-content index must be told the exact old values of a row it drops, so it is
# kept in sync by triggers rather than by the Python write paths: every way a row changes
# (append_message, _bulk_append, import_json, update_message, the ON DELETE CASCADE from
# conversations, even a hand-written SQL statement) goes through them. The status is not
# indexed (search filters it on the join), so only content or conversation_id changes
# re-index a row. The backfill is FTS5's 'rebuild', which re-reads messages from scratch:
# running it again (a half-recorded migration) cannot index a row twice.
_V3_SQLITE_DDL = (
    """
    CREATE VIRTUAL TABLE IF NOT EXISTS messages_fts USING fts5(
        conversation_id, content,
        content='messages', content_rowid='id', tokenize='porter unicode61'
    )""",
    """
    CREATE TRIGGER IF NOT EXISTS messages_fts_insert AFTER INSERT ON messages BEGIN
        INSERT INTO messages_fts (rowid, conversation_id, content)
            VALUES (new.id, new.conversation_id, new.content);
    END""",
    """
    CREATE TRIGGER IF NOT EXISTS messages_fts_delete AFTER DELETE ON messages BEGIN
        INSERT INTO messages_fts (messages_fts, rowid, conversation_id, content)
            VALUES ('delete', old.id, old.conversation_id, old.content);
    END""",
    """
    CREATE TRIGGER IF NOT EXISTS messages_fts_update
    AFTER UPDATE OF conversation_id, content ON messages BEGIN
        INSERT INTO messages_fts (messages_fts, rowid, conversation_id, content)
            VALUES ('delete', old.id, old.conversation_id, old.content);
        INSERT INTO messages_fts (rowid, conversation_id, content)
            VALUES (new.id, new.conversation_id, new.content);
    END""",
    "INSERT INTO messages_fts (messages_fts) VALUES ('rebuild')",
)
# PostgreSQL: an expression index (no new column, so the table layout stays the same on both
# backends). Creating it indexes the existing rows; the search repeats the exact expression
# so the planner can use it. The build blocks writes to messages while it runs (once).
# ANALYZE gathers the statistics of the new expression at once, so an upgraded database's
# planner can tell selective searches from common words before autovacuum gets to it.
_V3_POSTGRES_DDL = (
    """
    CREATE INDEX IF NOT EXISTS ix_messages_content_fts
        ON messages USING gin (to_tsvector('english', content))""",
    "ANALYZE messages",
)


SQLITE_SEARCH_TABLE: Final = "messages_fts"
SQLITE_SEARCH_TRIGGERS: Final = (
    "messages_fts_insert",
    "messages_fts_delete",
    "messages_fts_update",
)


def sqlite_search_index_ddl() -> tuple[str, ...]:
    """Migration 3's FTS5 table and triggers, without its backfill: what a rebuild of the
    index (``search.rebuild_index``) creates again before filling it."""
    return _V3_SQLITE_DDL[:-1]


def _v3_search_index(conn: Connection, backend: str) -> None:
    # No placeholders: the FTS5 statements are run as written.
    if backend == "sqlite":
        for statement in _V3_SQLITE_DDL:
            conn.exec_driver_sql(statement)
        return
    # A database still at version 2 may hold a message too long for a whole-text tsvector
    # (nothing indexed it then): this index cannot be built over it. Migration 5, applied
    # right after, replaces it with one that fits, so the upgrade leaves it out, not fails.
    create, analyze = _V3_POSTGRES_DDL
    try:
        with conn.begin_nested():
            conn.exec_driver_sql(create)
    except sa_exc.DBAPIError as exc:
        if getattr(exc.orig, "sqlstate", None) != _PG_PROGRAM_LIMIT_EXCEEDED:
            raise
        log.warning("schema version 3: a message is too long for this index; version 5 has one")
    conn.exec_driver_sql(analyze)


# Version 4: message embeddings for hybrid recall (``add_embeddings``, ``embeddings``).
#
# One row per (message, embedding model): a conversation keeps working if the model setting
# changes, and only the vectors of the current model are read. The vector is float32
# little-endian bytes (``array('f')``) in a BLOB/BYTEA: portable, and the cosine search runs in
# Python over one conversation's rows (read by the (conversation_id, model, seq) index).
# conversation_id and seq are copies of the message's, so that read needs no join; the
# message's ON DELETE CASCADE removes its vectors (and the conversation's, with it).
_V4_DDL = (
    """
    CREATE TABLE IF NOT EXISTS embeddings (
        message_id BIGINT NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
        model TEXT NOT NULL,
        conversation_id TEXT NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
        seq INTEGER NOT NULL,
        dims INTEGER NOT NULL CHECK (dims > 0),
        vector {blob} NOT NULL,
        created_at TEXT NOT NULL,
        PRIMARY KEY (message_id, model)
    )""",
    """
    CREATE INDEX IF NOT EXISTS ix_embeddings_conversation_model_seq
        ON embeddings (conversation_id, model, seq)""",
)


def _v4_embeddings(conn: Connection, backend: str) -> None:
    _run(conn, _V4_DDL, blob=_BLOB[backend])


# Version 5: PostgreSQL indexes the head of each message (SQLite: nothing to do).
#
# A tsvector holds at most 1 MB (MAXSTRPOS) of lexemes with their positions, so
# ``to_tsvector('english', content)`` raised "string is too long for tsvector" for a long
# message of distinct words (1 M characters, which SQLite and the importer accept) and the
# index refused the row. The tsvector takes at most about 8 bytes per character of text (a
# hyphenated word of 4-byte characters is indexed whole and in parts; each lexeme costs its
# bytes, 2-byte alignment, a position count and a position), so the first 100,000 characters
# always fit (<= 800 kB); the rest of a longer message is stored and shown, not searched.
# The search repeats this exact expression (``PG_SEARCH_VECTOR``) so the planner uses the index.
PG_INDEXED_CHARS: Final = 100_000
"""Characters at the start of a message that PostgreSQL's full-text index covers."""
PG_SEARCH_INDEX: Final = "ix_messages_content_fts_head"
PG_SEARCH_VECTOR: Final = f"to_tsvector('english', left({{column}}, {PG_INDEXED_CHARS}))"
"""The indexed expression; ``{column}`` is the content column as the statement names it."""

_V5_POSTGRES_DDL = (
    f"""
    CREATE INDEX IF NOT EXISTS {PG_SEARCH_INDEX}
        ON messages USING gin ({PG_SEARCH_VECTOR.format(column="content")})""",
    "DROP INDEX IF EXISTS ix_messages_content_fts",
    "ANALYZE messages",
)


def _v5_bounded_search_index(conn: Connection, backend: str) -> None:
    if backend == "postgresql":
        for statement in _V5_POSTGRES_DDL:
            conn.exec_driver_sql(statement)


# Version 6: replies know their question, summary versions know what they extend and read.
#
# ``messages.reply_to`` is the seq of the user message a reply answers (NULL for a user
# message, and for replies stored before version 6: they pair with the question before them).
# ``summaries.extends_id`` is the id of the version a fold was built on (NULL for the first);
# ``input_seqs`` lists the seqs of the messages the fold read, as JSON runs. No foreign keys:
# both point inside the same conversation, whose deletion cascades to every row anyway.
_V6_DDL = (
    "ALTER TABLE messages ADD COLUMN reply_to INTEGER",
    "ALTER TABLE summaries ADD COLUMN extends_id BIGINT",
    "ALTER TABLE summaries ADD COLUMN input_seqs TEXT",
)


def _v6_links(conn: Connection, backend: str) -> None:
    for table, column, statement in zip(
        ("messages", "summaries", "summaries"),
        ("reply_to", "extends_id", "input_seqs"),
        _V6_DDL,
        strict=True,
    ):
        if column not in {c["name"] for c in sa.inspect(conn).get_columns(table)}:
            conn.exec_driver_sql(statement)


# Version 7: people's corrections of the memory.
#
# ``summaries.edited_by`` is ``person`` for a version a person wrote (NULL: a fold wrote it);
# ``summaries.restored_from`` is the number (1, 2, ...) of the earlier version it copies.
# ``message_marks`` records each pin or exclusion and its undoing as a new row (``value`` 1 or
# 0): the newest row per (seq, kind) is in force, and the serial id lets another session read
# only the marks made since it last looked (``Store.changes``).
_V7_MARKS_DDL = (
    """
    CREATE TABLE IF NOT EXISTS message_marks (
        id {serial_pk},
        conversation_id TEXT NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
        seq INTEGER NOT NULL CHECK (seq > 0),
        kind TEXT NOT NULL CHECK (kind IN ('pin', 'exclude')),
        value INTEGER NOT NULL CHECK (value IN (0, 1)),
        created_at TEXT NOT NULL
    )""",
    """
    CREATE INDEX IF NOT EXISTS ix_message_marks_conversation
        ON message_marks (conversation_id, id)""",
)
_V7_SUMMARY_COLUMNS = (
    ("edited_by", "ALTER TABLE summaries ADD COLUMN edited_by TEXT"),
    ("restored_from", "ALTER TABLE summaries ADD COLUMN restored_from INTEGER"),
)


def _v7_corrections(conn: Connection, backend: str) -> None:
    present = {c["name"] for c in sa.inspect(conn).get_columns("summaries")}
    for column, statement in _V7_SUMMARY_COLUMNS:
        if column not in present:
            conn.exec_driver_sql(statement)
    _run(conn, _V7_MARKS_DDL, serial_pk=_SERIAL_PK[backend])


@dataclass(frozen=True)
class Migration:
    """One schema step. ``apply(conn, backend)`` must be idempotent (IF NOT EXISTS...)."""

    version: int
    description: str
    apply: Callable[[Connection, str], None]


# In order; the version and description are what ``schema_version`` records.
MIGRATIONS: Final[tuple[Migration, ...]] = (
    Migration(1, "conversations, messages, summaries, events", _v1_tables),
    Migration(2, "index conversations by owner and recency", _v2_owner_index),
    Migration(3, "full-text index of message content", _v3_search_index),
    Migration(4, "message embeddings for hybrid recall", _v4_embeddings),
    Migration(5, "full-text index of the first 100,000 characters", _v5_bounded_search_index),
    Migration(6, "reply links, summary lineage and inputs", _v6_links),
    Migration(7, "summary edits and restores, message pins and exclusions", _v7_corrections),
)
SCHEMA_VERSION: Final = MIGRATIONS[-1].version


def check_not_newer(version: int | None) -> None:
    if version is not None and version > SCHEMA_VERSION:
        raise StoreError(
            f"the database schema is version {version}, newer than this chatmem "
            f"supports ({SCHEMA_VERSION}); upgrade chatmem"
        )


def max_version(conn: Connection) -> int:
    """The highest version recorded in ``schema_version`` (0 if none)."""
    return int(conn.scalar(sa.select(sa.func.max(schema_version_table.c.version))) or 0)


def apply_migrations(conn: Connection, backend: str, target: int, shown_url: str) -> None:
    """Inside a write transaction: apply the migrations still missing up to ``target``.

    PostgreSQL first takes an advisory lock (SQLite's BEGIN IMMEDIATE already holds the write
    lock); the version is then re-read, so only what is still missing is applied.
    """
    if backend == "postgresql":
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_MIGRATION_LOCK})
    conn.exec_driver_sql(_SCHEMA_VERSION_DDL)
    current = max_version(conn)
    check_not_newer(current)
    for migration in MIGRATIONS:
        if current < migration.version <= target:
            log.info("migrating %s to schema version %d", shown_url, migration.version)
            migration.apply(conn, backend)
            conn.execute(
                schema_version_table.insert().values(
                    version=migration.version,
                    description=migration.description,
                    applied_at=now(),
                )
            )

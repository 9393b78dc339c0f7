"""Durable conversations: SQLite by default, PostgreSQL by URL.

One code path (SQLAlchemy Core, no ORM) serves both backends::

    from chatmem.store import Store

    with Store() as store:                       # sqlite:///.chatmem/chatmem.db
        conv = store.create_conversation("Trip planning", settings={"model": "gpt-4o-mini"})
        store.append_message(conv.id, "user", "Hi, my name is Sam.")
        loaded = store.load(conv.id)             # latest summary + only the unfolded tail

    Store("postgresql://user:pw@db:5432/chatmem")  # several app replicas share one database

Layout of the data:

- ``conversations``: one row per chat (uuid4 hex id, title, settings as JSON, owner).
- ``messages``: numbered per conversation by ``seq`` (1, 2, 3...; unique per conversation).
- ``summaries``: rolling summary versions; ``covers_seq`` is the seq of the last message folded
  into it, so resuming reads only the messages after it (an indexed range query).
- ``events``: what the memory did (fold, trim, error...), for the inspector.
- ``schema_version``: one row per applied migration (see ``MIGRATIONS``).
- Full-text index of message content for ``search_messages`` (migration 3): on SQLite the FTS5
  table ``messages_fts``, kept in sync by triggers on ``messages``; on PostgreSQL a GIN index
  on ``to_tsvector('english', content)``.
- ``embeddings`` (migration 4): one vector per message and embedding model, for hybrid recall
  (``add_embeddings``, ``embeddings``): float32 little-endian bytes, the same on both backends.

Timestamps are stored as ISO 8601 text in UTC with microseconds
(``2024-05-01T12:00:00.000000+00:00``): fixed width, so text order is time order, and identical
on both backends. JSON columns are stored as text.

Reading methods that return a collection (``messages``, ``list_summaries``, ``list_events``,
``count_messages``) return an empty result for an unknown conversation id; methods that need the
conversation (``load``, ``export_*``, ``append_message``, ``rename_conversation``...) raise
``NotFoundError``. Every error this module raises is a ``StoreError``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import random
import re
import sqlite3
import sys
import threading
import time
import uuid
from array import array
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Literal

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.pool import StaticPool

from chatmem.recall import query_terms

__all__ = [
    "DEFAULT_URL",
    "EMBEDDING_MAX_DIMS",
    "EXPORT_FORMAT",
    "EXPORT_VERSION",
    "MAX_CONTENT_CHARS",
    "MAX_IMPORT_BYTES",
    "MAX_IMPORT_EVENTS",
    "MAX_IMPORT_MESSAGES",
    "MAX_IMPORT_SUMMARIES",
    "MIGRATIONS",
    "ROLES",
    "SCHEMA_VERSION",
    "STATUSES",
    "TOKEN_COUNT_SETTINGS",
    "ConversationInfo",
    "ImportValidationError",
    "LoadedConversation",
    "NotFoundError",
    "SearchHit",
    "Store",
    "StoreError",
    "StoredEvent",
    "StoredMessage",
    "StoredSummary",
    "clean_settings",
    "mask_url",
    "resolve_database_url",
]

log = logging.getLogger("chatmem.store")

# --------------------------------------------------------------------------------------------
# Constants
# --------------------------------------------------------------------------------------------

DEFAULT_URL: Final = "sqlite:///.chatmem/chatmem.db"
"""Used when no URL is given; the path is relative to the current directory at open time."""

ROLES: Final = ("system", "user", "assistant", "tool")
STATUSES: Final = ("ok", "failed", "incomplete")
Role = Literal["system", "user", "assistant", "tool"]
Status = Literal["ok", "failed", "incomplete"]

EXPORT_FORMAT: Final = "chatmem.conversation"
EXPORT_VERSION: Final = 1

MAX_CONTENT_CHARS: Final = 1_000_000
"""Longest message (and summary) text accepted, by ``append_message`` and by imports alike."""
MAX_TITLE_CHARS: Final = 1_000
MAX_NAME_CHARS: Final = 256
MAX_KIND_CHARS: Final = 100
MAX_IMPORT_MESSAGES: Final = 250_000
MAX_IMPORT_SUMMARIES: Final = 10_000
MAX_IMPORT_EVENTS: Final = 100_000
MAX_IMPORT_BYTES: Final = 512 * 1024 * 1024
_MAX_INT: Final = 2**31 - 1  # seq and token columns are 32-bit INTEGER on PostgreSQL
EMBEDDING_MAX_DIMS: Final = 16_384
"""Longest embedding vector ``add_embeddings`` accepts (text-embedding-3-large has 3,072)."""
_IN_CHUNK: Final = 500
"""Values per ``IN (...)`` list when looking messages up by seq."""

TOKEN_COUNT_SETTINGS: Final = frozenset({"max_tokens", "summary_max_tokens"})
"""Setting names that contain "token" but are token counts, so they are kept."""
_SECRET_MARKERS: Final = ("key", "secret", "password", "passwd", "token", "credential")

SQLITE_BUSY_TIMEOUT_MS: Final = 30_000
PG_CONNECT_TIMEOUT_S: Final = 10
APPEND_ATTEMPTS: Final = 5
"""How many times ``append_message`` re-reads the next seq after losing a race before failing."""

_INSERT_CHUNK: Final = 1_000
"""Rows per multi-row INSERT of messages (10 columns: well under SQLite's 32,766 parameters)."""

_PG_MIGRATION_LOCK: Final = 0x63686D656D  # "chmem": pg_advisory_xact_lock key for migrations


# --------------------------------------------------------------------------------------------
# Errors and records
# --------------------------------------------------------------------------------------------


class StoreError(Exception):
    """Any failure of the store: bad URL, unreachable database, bad argument, lost race..."""


class NotFoundError(StoreError, LookupError):
    """The conversation (or message) does not exist."""


class ImportValidationError(StoreError):
    """An import file was rejected; nothing was written.

    ``where`` locates the problem (``"messages[3].role"``; empty for the file as a whole) and
    ``problem`` says what is wrong; ``str(error)`` is ``"where: problem"``.
    """

    def __init__(self, where: str, problem: str) -> None:
        self.where = where
        self.problem = problem
        super().__init__(f"{where}: {problem}" if where else problem)


class _UniqueViolation(StoreError):
    """Internal: a UNIQUE constraint rejected a write (two writers took the same seq)."""


@dataclass(frozen=True, slots=True)
class ConversationInfo:
    id: str
    title: str
    created_at: datetime
    updated_at: datetime
    settings: dict[str, Any]
    owner: str | None


@dataclass(frozen=True, slots=True)
class StoredMessage:
    id: int
    conversation_id: str
    seq: int
    role: str
    content: str
    name: str | None
    tokens: int | None
    status: str
    usage: dict[str, Any] | None
    created_at: datetime

    def as_chat(self) -> dict[str, str]:
        """The message in the OpenAI chat format (``role``, ``content``, and ``name`` if set)."""
        out = {"role": self.role, "content": self.content}
        if self.name is not None:
            out["name"] = self.name
        return out


@dataclass(frozen=True, slots=True)
class StoredSummary:
    id: int
    conversation_id: str
    text: str
    tokens: int
    covers_seq: int
    model: str | None
    usage: dict[str, Any] | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class StoredEvent:
    id: int
    conversation_id: str
    kind: str
    data: dict[str, Any]
    created_at: datetime


@dataclass(frozen=True, slots=True)
class SearchHit:
    """One message found by ``Store.search_messages``; higher ``score`` = more relevant."""

    seq: int
    role: str
    name: str | None
    content: str
    score: float


@dataclass(frozen=True, slots=True)
class LoadedConversation:
    """What a session needs to resume, read without touching the folded history.

    ``messages`` are the messages not yet folded into ``summary`` (seq > ``summary.covers_seq``;
    all of them when there is no summary). ``earlier`` holds up to ``keep_tail`` messages just
    before that point, for display only: they are already inside the summary.
    """

    info: ConversationInfo
    summary: StoredSummary | None
    messages: tuple[StoredMessage, ...]
    earlier: tuple[StoredMessage, ...] = ()

    @property
    def display_messages(self) -> tuple[StoredMessage, ...]:
        """``earlier`` followed by ``messages``: what a transcript view shows."""
        return self.earlier + self.messages


# --------------------------------------------------------------------------------------------
# URLs
# --------------------------------------------------------------------------------------------

_URL_HELP = (
    "expected a file path, sqlite:///path/to/file.db or postgresql://user:password@host:port/dbname"
)
_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*):")
# Optional "scheme://", then the user info up to the LAST "@" (greedy: masks too much rather
# than too little when an "@" in the password was not escaped).
_USERINFO_RE = re.compile(r"^(\s*[A-Za-z][\w+.\-]*:/+)?(.*)@")
_WORD_RE = re.compile(r"\w+")


def mask_url(url: str | URL) -> str:
    """The URL as text with any password replaced by ``***`` (safe to log or display)."""
    if isinstance(url, URL):
        return url.render_as_string(hide_password=True)
    found = _USERINFO_RE.match(url)
    if found is None or ":" not in found.group(2):
        return url
    userinfo = found.group(2)
    masked = userinfo[: userinfo.index(":") + 1] + "***"
    return (found.group(1) or "") + masked + url[found.end(2) :]


def _bad_url(url: str, problem: str) -> StoreError:
    return StoreError(f"Invalid database URL {mask_url(url)!r}: {problem}.")


def resolve_database_url(url: str | None = None) -> URL:
    """Turn what a user typed into the SQLAlchemy URL the store connects to.

    ``None`` means ``DEFAULT_URL``; a plain path means a SQLite file; ``postgres://`` and
    ``postgresql://`` mean PostgreSQL through psycopg 3 (``postgresql+psycopg://``). Relative
    SQLite paths are made absolute against the current directory. Raises ``StoreError`` with a
    one-sentence message (password masked) for anything else.
    """
    if url is None:
        url = DEFAULT_URL
    if not isinstance(url, str):
        raise StoreError(f"Invalid database URL: expected a string, got {type(url).__name__}.")
    raw = url.strip()
    if not raw:
        raise StoreError(f"Invalid database URL: it is empty ({_URL_HELP}).")

    if "://" not in raw:
        scheme = _SCHEME_RE.match(raw)
        if scheme and len(scheme.group(1)) > 1:  # "C:\\..." is a Windows path, not a scheme
            raise _bad_url(raw, f"it looks like a URL but lacks '://' ({_URL_HELP})")
        path = Path(raw).expanduser()
        return URL.create("sqlite+pysqlite", database=str(path.resolve()))

    try:
        parsed = make_url(raw)
    except ValueError:  # raised by the port parser ("invalid literal for int()")
        raise _bad_url(raw, "the port is not a number") from None
    except sa_exc.ArgumentError:
        raise _bad_url(raw, f"it could not be parsed ({_URL_HELP})") from None

    backend, _, driver = parsed.drivername.partition("+")
    backend = backend.lower()
    if backend == "sqlite":
        if driver not in ("", "pysqlite"):
            raise _bad_url(raw, f"the SQLite driver {driver!r} is not supported (use sqlite:///)")
        if parsed.host or parsed.port or parsed.username:
            raise _bad_url(
                raw,
                "a SQLite URL takes no host (use sqlite:///relative.db or sqlite:////absolute.db)",
            )
        database = parsed.database
        if database is None or database == ":memory:":
            return URL.create("sqlite+pysqlite", database=":memory:", query=parsed.query)
        if database == "":
            raise _bad_url(raw, "it names no database file (use sqlite:///path/to/file.db)")
        path = Path(database).expanduser()
        return URL.create("sqlite+pysqlite", database=str(path.resolve()), query=parsed.query)
    if backend in ("postgresql", "postgres"):
        if driver not in ("", "psycopg"):
            raise _bad_url(
                raw,
                f"the PostgreSQL driver {driver!r} is not supported "
                "(use postgresql://, which means psycopg 3)",
            )
        if parsed.port is not None and not 0 < parsed.port < 65536:
            raise _bad_url(raw, f"the port {parsed.port} is out of range (1-65535)")
        return parsed.set(drivername="postgresql+psycopg")
    raise _bad_url(raw, f"the database {backend!r} is not supported (use sqlite or postgresql)")


# --------------------------------------------------------------------------------------------
# Schema and migrations
# --------------------------------------------------------------------------------------------

# Query-side table descriptions. The DDL lives in MIGRATIONS (frozen per version); these only
# tell SQLAlchemy Core the names and types used in statements. A test checks they agree.
_meta = sa.MetaData()
conversations_table = sa.Table(
    "conversations",
    _meta,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("title", sa.Text, nullable=False),
    sa.Column("created_at", sa.Text, nullable=False),
    sa.Column("updated_at", sa.Text, nullable=False),
    sa.Column("settings", sa.Text, nullable=False),
    sa.Column("owner", sa.Text),
)
messages_table = sa.Table(
    "messages",
    _meta,
    sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=True),
    sa.Column("conversation_id", sa.Text, nullable=False),
    sa.Column("seq", sa.Integer, nullable=False),
    sa.Column("role", sa.Text, nullable=False),
    sa.Column("content", sa.Text, nullable=False),
    sa.Column("name", sa.Text),
    sa.Column("tokens", sa.Integer),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("usage", sa.Text),
    sa.Column("created_at", sa.Text, nullable=False),
)
summaries_table = sa.Table(
    "summaries",
    _meta,
    sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=True),
    sa.Column("conversation_id", sa.Text, nullable=False),
    sa.Column("text", sa.Text, nullable=False),
    sa.Column("tokens", sa.Integer, nullable=False),
    sa.Column("covers_seq", sa.Integer, nullable=False),
    sa.Column("model", sa.Text),
    sa.Column("usage", sa.Text),
    sa.Column("created_at", sa.Text, nullable=False),
)
events_table = sa.Table(
    "events",
    _meta,
    sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=True),
    sa.Column("conversation_id", sa.Text, nullable=False),
    sa.Column("kind", sa.Text, nullable=False),
    sa.Column("data", sa.Text, nullable=False),
    sa.Column("created_at", sa.Text, nullable=False),
)
embeddings_table = sa.Table(
    "embeddings",
    _meta,
    sa.Column("message_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("model", sa.Text, primary_key=True),
    sa.Column("conversation_id", sa.Text, nullable=False),
    sa.Column("seq", sa.Integer, nullable=False),
    sa.Column("dims", sa.Integer, nullable=False),
    sa.Column("vector", sa.LargeBinary, nullable=False),
    sa.Column("created_at", sa.Text, nullable=False),
)
schema_version_table = sa.Table(
    "schema_version",
    _meta,
    sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("description", sa.Text, nullable=False),
    sa.Column("applied_at", sa.Text, nullable=False),
)
TABLE_NAMES: Final = (
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

_V2_DDL = (
    "CREATE INDEX IF NOT EXISTS ix_conversations_updated ON conversations (updated_at)",
    """
    CREATE INDEX IF NOT EXISTS ix_conversations_owner_updated
        ON conversations (owner, updated_at)""",
)


@dataclass(frozen=True)
class Migration:
    """One schema step. ``apply(conn, backend)`` must be idempotent (IF NOT EXISTS...)."""

    version: int
    description: str
    apply: Callable[[Connection, str], None]


def _ddl_migration(statements: tuple[str, ...]) -> Callable[[Connection, str], None]:
    def apply(conn: Connection, backend: str) -> None:
        for statement in statements:
            conn.exec_driver_sql(statement.format(serial_pk=_SERIAL_PK[backend]))

    return apply


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


def _v3_search_index(conn: Connection, backend: str) -> None:
    for statement in _V3_SQLITE_DDL if backend == "sqlite" else _V3_POSTGRES_DDL:
        conn.exec_driver_sql(statement)


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
_BLOB = {"sqlite": "BLOB", "postgresql": "BYTEA"}


def _v4_embeddings(conn: Connection, backend: str) -> None:
    for statement in _V4_DDL:
        conn.exec_driver_sql(statement.format(blob=_BLOB[backend]))


MIGRATIONS: Final[tuple[Migration, ...]] = (
    Migration(1, "conversations, messages, summaries, events", _ddl_migration(_V1_DDL)),
    Migration(2, "index conversations by owner and recency", _ddl_migration(_V2_DDL)),
    Migration(3, "full-text index of message content", _v3_search_index),
    Migration(4, "message embeddings for hybrid recall", _v4_embeddings),
)
SCHEMA_VERSION: Final = MIGRATIONS[-1].version

# --------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------


def _now() -> str:
    return _format_time(datetime.now(UTC))


def _format_time(moment: datetime) -> str:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def _parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text)


def _dumps(value: Any) -> str:
    # ensure_ascii keeps the text plain ASCII, so no value can upset a database encoding.
    return json.dumps(value, separators=(",", ":"), allow_nan=False, sort_keys=False)


def _loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def _is_secret_name(name: str) -> bool:
    lowered = name.lower()
    if lowered in TOKEN_COUNT_SETTINGS:
        return False
    return any(marker in lowered for marker in _SECRET_MARKERS)


def clean_settings(settings: Mapping[str, Any] | None) -> dict[str, Any]:
    """A copy of ``settings`` without anything that could be a secret.

    Drops, at any depth (nested dicts and lists too), every key whose name contains "key",
    "secret", "password", "passwd", "token" or "credential", case-insensitively, except the
    token counts in ``TOKEN_COUNT_SETTINGS`` (``max_tokens``, ``summary_max_tokens``).
    Dropped names are logged, never their values.
    """
    if settings is None:
        return {}
    if not isinstance(settings, Mapping):
        raise StoreError(f"settings: expected a dict, got {type(settings).__name__}")

    def clean(value: Any, where: str) -> Any:
        if isinstance(value, Mapping):
            out: dict[str, Any] = {}
            for key, item in value.items():
                name = str(key)
                path = f"{where}.{name}" if where else name
                if _is_secret_name(name):
                    log.warning("settings: dropped %r: secrets are never stored", path)
                    continue
                out[name] = clean(item, path)
            return out
        if isinstance(value, list | tuple):
            return [clean(item, f"{where}[{i}]") for i, item in enumerate(value)]
        return value

    return clean(settings, "")


def _text_problem(value: object, *, max_chars: int) -> str | None:
    """Why ``value`` can't be stored as text on both backends, or None if it can."""
    if not isinstance(value, str):
        return f"expected a string, got {_type_name(value)}"
    if len(value) > max_chars:
        return f"too long ({len(value):,} characters; the limit is {max_chars:,})"
    if "\x00" in value:
        return "contains a NUL character (PostgreSQL cannot store it)"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "is not valid Unicode (it contains a lone surrogate)"
    return None


def _count_problem(value: object, *, minimum: int = 0) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return f"expected an integer, got {_type_name(value)}"
    if not minimum <= value <= _MAX_INT:
        return f"{value} is out of range ({minimum}..{_MAX_INT})"
    return None


def _json_object_problem(value: object) -> str | None:
    """Why ``value`` is not a JSON-serialisable dict, or None."""
    if not isinstance(value, dict):
        return f"expected an object, got {_type_name(value)}"
    try:
        _dumps(value)
    except (TypeError, ValueError, RecursionError) as exc:
        return f"not representable as JSON ({exc})"
    return None


def _type_name(value: object) -> str:
    names = {
        type(None): "null",
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "an object",
    }
    return names.get(type(value), type(value).__name__)


def _short(value: object, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _check(problem: str | None, field: str) -> None:
    if problem is not None:
        raise StoreError(f"{field}: {problem}")


def _check_seq(seq: object, *, minimum: int = 1) -> int:
    problem = _count_problem(seq, minimum=minimum)
    if problem:
        raise StoreError(f"seq: {problem}")
    assert isinstance(seq, int)
    return seq


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


def _check_role(role: object) -> str:
    if role not in ROLES:
        raise StoreError(f"role: unknown role {_short(role)} (expected {_or_list(ROLES)})")
    return str(role)


def _check_status(status: object) -> str:
    if status not in STATUSES:
        raise StoreError(f"status: unknown status {_short(status)} (expected {_or_list(STATUSES)})")
    return str(status)


def _or_list(items: Iterable[str]) -> str:
    items = list(items)
    return ", ".join(items[:-1]) + " or " + items[-1]


def _clean_title(title: object) -> str:
    _check(_text_problem(title, max_chars=MAX_TITLE_CHARS), "title")
    assert isinstance(title, str)
    return title.strip() or "New chat"


def _driver_message(exc: sa_exc.SQLAlchemyError) -> str:
    original = getattr(exc, "orig", None) or exc
    message = " ".join(str(original).split())
    return message if len(message) <= 300 else message[:297] + "..."


def _is_unique_violation(exc: sa_exc.IntegrityError) -> bool:
    original = exc.orig
    if getattr(original, "sqlstate", None) == "23505":  # psycopg: unique_violation
        return True
    name = getattr(original, "sqlite_errorname", "")
    return name in ("SQLITE_CONSTRAINT_UNIQUE", "SQLITE_CONSTRAINT_PRIMARYKEY") or (
        "UNIQUE constraint failed" in str(original)
    )


# --------------------------------------------------------------------------------------------
# Row conversion
# --------------------------------------------------------------------------------------------


def _conversation(row: Any) -> ConversationInfo:
    return ConversationInfo(
        id=row.id,
        title=row.title,
        created_at=_parse_time(row.created_at),
        updated_at=_parse_time(row.updated_at),
        settings=_loads(row.settings) or {},
        owner=row.owner,
    )


def _message(row: Any) -> StoredMessage:
    return StoredMessage(
        id=row.id,
        conversation_id=row.conversation_id,
        seq=row.seq,
        role=row.role,
        content=row.content,
        name=row.name,
        tokens=row.tokens,
        status=row.status,
        usage=_loads(row.usage),
        created_at=_parse_time(row.created_at),
    )


def _summary(row: Any) -> StoredSummary:
    return StoredSummary(
        id=row.id,
        conversation_id=row.conversation_id,
        text=row.text,
        tokens=row.tokens,
        covers_seq=row.covers_seq,
        model=row.model,
        usage=_loads(row.usage),
        created_at=_parse_time(row.created_at),
    )


def _event(row: Any) -> StoredEvent:
    return StoredEvent(
        id=row.id,
        conversation_id=row.conversation_id,
        kind=row.kind,
        data=_loads(row.data) or {},
        created_at=_parse_time(row.created_at),
    )


# --------------------------------------------------------------------------------------------
# Import validation
# --------------------------------------------------------------------------------------------


@dataclass
class _ValidImport:
    conversation: dict[str, Any]
    messages: list[dict[str, Any]]
    summaries: list[dict[str, Any]]
    events: list[dict[str, Any]]


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r} in an object")
        out[key] = value
    return out


def _parse_import(data: object) -> object:
    """bytes/str -> parsed JSON; anything else is passed through to the validator."""
    if isinstance(data, bytes | bytearray | memoryview):
        raw = bytes(data)
        if len(raw) > MAX_IMPORT_BYTES:
            raise ImportValidationError(
                "", f"file too large ({len(raw):,} bytes; the limit is {MAX_IMPORT_BYTES:,})"
            )
        try:
            data = raw.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            bad = raw[exc.start : exc.start + 1].hex()
            raise ImportValidationError(
                "", f"not valid UTF-8 (byte 0x{bad} at offset {exc.start})"
            ) from None
    if isinstance(data, str):
        if len(data) > MAX_IMPORT_BYTES:
            raise ImportValidationError(
                "", f"file too large ({len(data):,} characters; the limit is {MAX_IMPORT_BYTES:,})"
            )
        try:
            return json.loads(
                data, parse_constant=_reject_constant, object_pairs_hook=_no_duplicate_keys
            )
        except json.JSONDecodeError as exc:
            raise ImportValidationError(
                "", f"not JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})"
            ) from None
        except ValueError as exc:  # NaN/Infinity, duplicate keys
            raise ImportValidationError("", f"not valid JSON ({exc})") from None
        except RecursionError:
            raise ImportValidationError("", "not valid JSON (nested too deeply)") from None
    return data


class _Validator:
    """Checks an export document field by field; the first problem raises."""

    def fail(self, where: str, problem: str) -> None:
        raise ImportValidationError(where, problem)

    def obj(
        self, value: object, where: str, required: tuple[str, ...], optional: tuple[str, ...]
    ) -> dict[str, Any]:
        if not isinstance(value, dict):
            self.fail(where or "top level", f"expected an object, got {_type_name(value)}")
        assert isinstance(value, dict)
        for key in value:
            if not isinstance(key, str):
                self.fail(where or "top level", f"field names must be strings, got {_short(key)}")
            if key not in required and key not in optional:
                self.fail(_join(where, key), "unknown field")
        for key in required:
            if key not in value:
                self.fail(_join(where, key), "missing required field")
        return value

    def text(self, value: object, where: str, *, max_chars: int, optional: bool = False) -> Any:
        if optional and value is None:
            return None
        problem = _text_problem(value, max_chars=max_chars)
        if problem:
            self.fail(where, problem)
        return value

    def count(
        self, value: object, where: str, *, minimum: int = 0, optional: bool = False
    ) -> int | None:
        if optional and value is None:
            return None
        problem = _count_problem(value, minimum=minimum)
        if problem:
            self.fail(where, problem)
        assert isinstance(value, int)
        return value

    def json_object(self, value: object, where: str, *, optional: bool = True) -> Any:
        if optional and value is None:
            return None
        problem = _json_object_problem(value)
        if problem:
            self.fail(where, problem)
        return value

    def time(self, value: object, where: str) -> str | None:
        if value is None:
            return None
        if not isinstance(value, str):
            self.fail(where, f"expected an ISO 8601 timestamp string, got {_type_name(value)}")
        assert isinstance(value, str)
        try:
            return _format_time(datetime.fromisoformat(value))
        except (ValueError, OverflowError):
            self.fail(where, f"not an ISO 8601 timestamp: {_short(value)}")
        raise AssertionError  # unreachable

    def items(self, value: object, where: str, limit: int) -> list[Any]:
        if not isinstance(value, list):
            self.fail(where, f"expected a list, got {_type_name(value)}")
        assert isinstance(value, list)
        if len(value) > limit:
            self.fail(where, f"too many entries ({len(value):,}; the limit is {limit:,})")
        return value

    def document(self, doc: object) -> _ValidImport:
        if not isinstance(doc, dict):
            self.fail("", f"expected a JSON object at the top level, got {_type_name(doc)}")
        assert isinstance(doc, dict)
        if "format" not in doc:
            self.fail("format", "missing: this is not a chatmem conversation export")
        if doc["format"] != EXPORT_FORMAT:
            self.fail("format", f"expected {EXPORT_FORMAT!r}, got {_short(doc['format'])}")
        if "version" not in doc:
            self.fail("version", "missing required field")
        version = doc["version"]
        if isinstance(version, bool) or not isinstance(version, int):
            self.fail("version", f"expected an integer, got {_type_name(version)}")
        if version != EXPORT_VERSION:
            self.fail(
                "version",
                f"unsupported version {version} (this chatmem reads version {EXPORT_VERSION})",
            )
        self.obj(
            doc,
            "",
            required=("format", "version", "conversation", "messages"),
            optional=("summaries", "events", "exported_at"),
        )
        self.time(doc.get("exported_at"), "exported_at")

        conv = self.obj(
            doc["conversation"],
            "conversation",
            required=("title",),
            optional=("id", "created_at", "updated_at", "settings", "owner"),
        )
        self.text(conv.get("id"), "conversation.id", max_chars=MAX_TITLE_CHARS, optional=True)
        self.text(conv["title"], "conversation.title", max_chars=MAX_TITLE_CHARS)
        self.text(conv.get("owner"), "conversation.owner", max_chars=MAX_TITLE_CHARS, optional=True)
        settings = self.json_object(conv.get("settings"), "conversation.settings") or {}
        created = self.time(conv.get("created_at"), "conversation.created_at")
        self.time(conv.get("updated_at"), "conversation.updated_at")

        messages: list[dict[str, Any]] = []
        seqs: dict[int, int] = {}
        for i, item in enumerate(self.items(doc["messages"], "messages", MAX_IMPORT_MESSAGES)):
            at = f"messages[{i}]"
            msg = self.obj(
                item,
                at,
                required=("seq", "role", "content"),
                optional=("name", "tokens", "status", "usage", "created_at"),
            )
            seq = self.count(msg["seq"], f"{at}.seq", minimum=1)
            assert seq is not None
            if seq in seqs:
                self.fail(f"{at}.seq", f"duplicate seq {seq} (also used by messages[{seqs[seq]}])")
            seqs[seq] = i
            role = msg["role"]
            if role not in ROLES:
                self.fail(f"{at}.role", f"unknown role {_short(role)} (expected {_or_list(ROLES)})")
            status = msg.get("status", "ok")
            if status not in STATUSES:
                self.fail(
                    f"{at}.status",
                    f"unknown status {_short(status)} (expected {_or_list(STATUSES)})",
                )
            messages.append(
                {
                    "seq": seq,
                    "role": role,
                    "content": self.text(
                        msg["content"], f"{at}.content", max_chars=MAX_CONTENT_CHARS
                    ),
                    "name": self.text(
                        msg.get("name"), f"{at}.name", max_chars=MAX_NAME_CHARS, optional=True
                    ),
                    "tokens": self.count(msg.get("tokens"), f"{at}.tokens", optional=True),
                    "status": status,
                    "usage": self.json_object(msg.get("usage"), f"{at}.usage"),
                    "created_at": self.time(msg.get("created_at"), f"{at}.created_at"),
                }
            )

        summaries: list[dict[str, Any]] = []
        raw_summaries = doc.get("summaries", [])
        for i, item in enumerate(self.items(raw_summaries, "summaries", MAX_IMPORT_SUMMARIES)):
            at = f"summaries[{i}]"
            summ = self.obj(
                item,
                at,
                required=("text", "tokens", "covers_seq"),
                optional=("model", "usage", "created_at"),
            )
            covers = self.count(summ["covers_seq"], f"{at}.covers_seq", minimum=1)
            if covers not in seqs:
                span = f"message seqs are {min(seqs)}..{max(seqs)}" if seqs else "there are none"
                self.fail(f"{at}.covers_seq", f"{covers} points at no message ({span})")
            summaries.append(
                {
                    "text": self.text(summ["text"], f"{at}.text", max_chars=MAX_CONTENT_CHARS),
                    "tokens": self.count(summ["tokens"], f"{at}.tokens"),
                    "covers_seq": covers,
                    "model": self.text(
                        summ.get("model"), f"{at}.model", max_chars=MAX_NAME_CHARS, optional=True
                    ),
                    "usage": self.json_object(summ.get("usage"), f"{at}.usage"),
                    "created_at": self.time(summ.get("created_at"), f"{at}.created_at"),
                }
            )

        events: list[dict[str, Any]] = []
        for i, item in enumerate(self.items(doc.get("events", []), "events", MAX_IMPORT_EVENTS)):
            at = f"events[{i}]"
            ev = self.obj(item, at, required=("kind",), optional=("data", "created_at"))
            kind = self.text(ev["kind"], f"{at}.kind", max_chars=MAX_KIND_CHARS)
            if not kind:
                self.fail(f"{at}.kind", "empty")
            events.append(
                {
                    "kind": kind,
                    "data": self.json_object(ev.get("data"), f"{at}.data") or {},
                    "created_at": self.time(ev.get("created_at"), f"{at}.created_at"),
                }
            )

        return _ValidImport(
            conversation={
                "title": conv["title"].strip() or "New chat",
                "settings": clean_settings(settings),
                "created_at": created,
            },
            messages=messages,
            summaries=summaries,
            events=events,
        )


def _join(where: str, key: str) -> str:
    if not key.isidentifier():  # show odd field names quoted, control characters escaped
        return f"{where}[{_short(key)}]"
    return f"{where}.{key}" if where else key


# --------------------------------------------------------------------------------------------
# The store
# --------------------------------------------------------------------------------------------


def _enable_wal(cursor: Any) -> None:
    """Switch a SQLite database to WAL mode, waiting out other openers.

    Changing the journal mode needs an exclusive lock and, unlike other statements, does not
    wait for ``busy_timeout``: while another process creates the same new database it fails
    at once with "database is locked". So retry, with backoff, up to that same timeout.
    """
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    delay = 0.01
    while True:
        try:
            cursor.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() + delay > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.5)


class Store:
    """Conversations, messages, summaries and events in SQLite or PostgreSQL.

    Safe to share between threads (a pooled engine; every operation checks out its own
    connection) and between processes or app replicas (each write is one transaction; appends
    serialise per conversation). The schema is created or upgraded on open.
    """

    def __init__(self, url: str | None = None) -> None:
        self._url = resolve_database_url(url)
        self.backend: Literal["sqlite", "postgresql"] = (
            "sqlite" if self._url.get_backend_name() == "sqlite" else "postgresql"
        )
        self._memory = self.backend == "sqlite" and self._url.database == ":memory:"
        # One shared connection (in-memory SQLite) must not be used by two threads at once.
        self._lock: contextlib.AbstractContextManager[Any] = (
            threading.RLock() if self._memory else contextlib.nullcontext()
        )
        self._engine: Engine | None = self._create_engine()
        try:
            self._migrate()
        except StoreError as exc:
            self.close()
            raise StoreError(
                f"Could not open the {self.backend} database at {self.url}: {exc}"
            ) from exc.__cause__

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The database URL with the password masked."""
        return mask_url(self._url)

    def __repr__(self) -> str:
        return f"Store({self.url!r})"

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Release every pooled connection. Further calls raise ``StoreError``."""
        engine, self._engine = self._engine, None
        if engine is not None:
            engine.dispose()

    def _create_engine(self) -> Engine:
        if self.backend == "postgresql":
            connect_args: dict[str, Any] = {}
            if "connect_timeout" not in self._url.query:
                connect_args["connect_timeout"] = PG_CONNECT_TIMEOUT_S
            return sa.create_engine(self._url, pool_pre_ping=True, connect_args=connect_args)

        if self._memory:
            engine = sa.create_engine(
                self._url, poolclass=StaticPool, connect_args={"check_same_thread": False}
            )
        else:
            assert self._url.database is not None
            Path(self._url.database).parent.mkdir(parents=True, exist_ok=True)
            engine = sa.create_engine(
                self._url,
                connect_args={
                    "check_same_thread": False,
                    "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000,
                },
            )

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            # We emit BEGIN ourselves (below): the sqlite3 module's legacy transaction handling
            # would otherwise leave SELECTs and DDL outside the transaction.
            dbapi_conn.isolation_level = None
            cursor = dbapi_conn.cursor()
            try:
                cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
                cursor.execute("PRAGMA foreign_keys = ON")
                _enable_wal(cursor)
            finally:
                cursor.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Connection) -> None:
            # Writers take the write lock up front (BEGIN IMMEDIATE), so two writers queue on
            # busy_timeout instead of failing when a read lock cannot be upgraded.
            mode = conn.get_execution_options().get("chatmem_begin", "DEFERRED")
            conn.exec_driver_sql(f"BEGIN {mode}")

        return engine

    @contextlib.contextmanager
    def _tx(self, *, write: bool, snapshot: bool = False) -> Iterator[Connection]:
        """One transaction: commit on success, roll back on any error.

        ``write`` takes SQLite's write lock at BEGIN; ``snapshot`` makes a multi-query read
        consistent on PostgreSQL (SQLite reads are always a snapshot).
        """
        engine = self._engine
        if engine is None:
            raise StoreError("The store is closed.")
        with self._lock:
            try:
                with engine.connect() as conn:
                    if write and self.backend == "sqlite":
                        conn.execution_options(chatmem_begin="IMMEDIATE")
                    elif snapshot and self.backend == "postgresql":
                        conn.execution_options(isolation_level="REPEATABLE READ")
                    with conn.begin():
                        yield conn
            except sa_exc.IntegrityError as exc:
                if _is_unique_violation(exc):
                    raise _UniqueViolation(_driver_message(exc)) from exc
                raise StoreError(
                    f"the database rejected the write: {_driver_message(exc)}"
                ) from exc
            except sa_exc.SQLAlchemyError as exc:
                raise StoreError(f"{self.backend} error: {_driver_message(exc)}") from exc

    # -- migrations --------------------------------------------------------------------------

    @property
    def schema_version(self) -> int:
        """The schema version recorded in the database (``SCHEMA_VERSION`` once open)."""
        with self._tx(write=False) as conn:
            return int(conn.scalar(sa.select(sa.func.max(schema_version_table.c.version))) or 0)

    def _recorded_version(self) -> int | None:
        """The version without taking any lock; None if the database is blank."""
        engine = self._engine
        assert engine is not None
        try:
            with self._lock, engine.connect() as conn:
                try:
                    with conn.begin():
                        return int(
                            conn.scalar(sa.select(sa.func.max(schema_version_table.c.version))) or 0
                        )
                except (sa_exc.OperationalError, sa_exc.ProgrammingError) as exc:
                    if "schema_version" in str(exc.orig):  # no such table yet
                        return None
                    raise
        except sa_exc.SQLAlchemyError as exc:
            raise StoreError(_driver_message(exc)) from exc

    def _migrate(self, target: int = SCHEMA_VERSION) -> None:
        """Apply the missing migrations up to ``target``, in order, in one transaction.

        Cheap when the schema is current (one read). Otherwise it takes a lock first
        (SQLite: BEGIN IMMEDIATE; PostgreSQL: an advisory lock), re-reads the version and
        applies only what is still missing, so processes opening a blank database at the same
        moment don't trip over each other.
        """
        current = self._recorded_version()
        _check_not_newer(current)
        if current is not None and current >= target:
            return
        with self._tx(write=True) as conn:
            if self.backend == "postgresql":
                conn.execute(
                    sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_MIGRATION_LOCK}
                )
            conn.exec_driver_sql(_SCHEMA_VERSION_DDL)
            current = int(conn.scalar(sa.select(sa.func.max(schema_version_table.c.version))) or 0)
            _check_not_newer(current)
            for migration in MIGRATIONS:
                if current < migration.version <= target:
                    log.info("migrating %s to schema version %d", self.url, migration.version)
                    migration.apply(conn, self.backend)
                    conn.execute(
                        schema_version_table.insert().values(
                            version=migration.version,
                            description=migration.description,
                            applied_at=_now(),
                        )
                    )

    # -- conversations -----------------------------------------------------------------------

    def create_conversation(
        self,
        title: str = "New chat",
        settings: dict[str, Any] | None = None,
        owner: str | None = None,
    ) -> ConversationInfo:
        title = _clean_title(title)
        clean = clean_settings(settings)
        settings_json = self._settings_json(clean)
        if owner is not None:
            _check(_text_problem(owner, max_chars=MAX_TITLE_CHARS), "owner")
        now = _now()
        cid = uuid.uuid4().hex
        with self._tx(write=True) as conn:
            conn.execute(
                conversations_table.insert().values(
                    id=cid,
                    title=title,
                    created_at=now,
                    updated_at=now,
                    settings=settings_json,
                    owner=owner,
                )
            )
        moment = _parse_time(now)
        return ConversationInfo(cid, title, moment, moment, _loads(settings_json), owner)

    @staticmethod
    def _settings_json(settings: dict[str, Any]) -> str:
        try:
            return _dumps(settings)
        except (TypeError, ValueError, RecursionError) as exc:
            raise StoreError(f"settings: not representable as JSON ({exc})") from None

    def get_conversation(self, cid: str) -> ConversationInfo | None:
        with self._tx(write=False) as conn:
            return self._get_conversation(conn, cid)

    @staticmethod
    def _get_conversation(conn: Connection, cid: str) -> ConversationInfo | None:
        row = conn.execute(
            sa.select(conversations_table).where(conversations_table.c.id == cid)
        ).first()
        return None if row is None else _conversation(row)

    @staticmethod
    def _lock_conversation(conn: Connection, cid: str) -> None:
        """Take the conversation's row lock (PostgreSQL; SQLite's BEGIN IMMEDIATE already
        locks the file), or raise NotFoundError."""
        found = conn.execute(
            sa.select(conversations_table.c.id)
            .where(conversations_table.c.id == cid)
            .with_for_update()
        ).first()
        if found is None:
            raise NotFoundError(f"no conversation with id {cid!r}")

    @staticmethod
    def _touch(conn: Connection, cid: str, now: str, **values: Any) -> None:
        conn.execute(
            conversations_table.update()
            .where(conversations_table.c.id == cid)
            .values(updated_at=now, **values)
        )

    def list_conversations(
        self, query: str | None = None, owner: str | None = None, limit: int = 100
    ) -> list[ConversationInfo]:
        """Newest (``updated_at``) first. ``query`` matches the title or any message content,
        case-insensitively, as a plain substring (``%`` and ``_`` are literal). ``owner=None``
        lists every owner's conversations."""
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise StoreError(f"limit: expected a positive integer, got {_short(limit)}")
        c = conversations_table
        stmt = sa.select(c)
        if owner is not None:
            stmt = stmt.where(c.c.owner == owner)
        if query:
            _check(_text_problem(query, max_chars=MAX_TITLE_CHARS), "query")
            pattern = "%" + re.sub(r"([\\%_])", r"\\\1", query) + "%"
            m = messages_table
            in_messages = sa.exists().where(
                m.c.conversation_id == c.c.id, m.c.content.ilike(pattern, escape="\\")
            )
            stmt = stmt.where(sa.or_(c.c.title.ilike(pattern, escape="\\"), in_messages))
        stmt = stmt.order_by(c.c.updated_at.desc(), c.c.id.desc()).limit(limit)
        with self._tx(write=False) as conn:
            return [_conversation(row) for row in conn.execute(stmt)]

    def rename_conversation(self, cid: str, title: str) -> ConversationInfo:
        title = _clean_title(title)
        with self._tx(write=True) as conn:
            self._lock_conversation(conn, cid)
            self._touch(conn, cid, _now(), title=title)
            info = self._get_conversation(conn, cid)
        assert info is not None
        return info

    def update_settings(self, cid: str, settings: dict[str, Any]) -> ConversationInfo:
        """Replace the conversation's settings (secrets dropped, see ``clean_settings``)."""
        settings_json = self._settings_json(clean_settings(settings))
        with self._tx(write=True) as conn:
            self._lock_conversation(conn, cid)
            self._touch(conn, cid, _now(), settings=settings_json)
            info = self._get_conversation(conn, cid)
        assert info is not None
        return info

    def delete_conversation(self, cid: str) -> bool:
        """Delete the conversation and (cascading) all its messages, summaries and events.
        Returns False if there was no such conversation."""
        with self._tx(write=True) as conn:
            result = conn.execute(
                conversations_table.delete().where(conversations_table.c.id == cid)
            )
            return result.rowcount > 0

    # -- messages ----------------------------------------------------------------------------

    def append_message(
        self,
        cid: str,
        role: Role,
        content: str,
        *,
        tokens: int | None = None,
        name: str | None = None,
        status: Status = "ok",
        usage: dict[str, Any] | None = None,
    ) -> StoredMessage:
        """Append a message as ``seq = max(seq) + 1``, in one transaction.

        Appends to one conversation are serialised (a row lock on PostgreSQL, the write lock on
        SQLite); should two writers still pick the same seq, the loser retries with a fresh
        seq, up to ``APPEND_ATTEMPTS`` times, then raises ``StoreError``.
        """
        row = self._message_values(
            role, content, tokens=tokens, name=name, status=status, usage=usage
        )
        last_error: _UniqueViolation | None = None
        for attempt in range(1, APPEND_ATTEMPTS + 1):
            try:
                with self._tx(write=True) as conn:
                    self._lock_conversation(conn, cid)
                    seq = self._next_seq(conn, cid)
                    now = _now()
                    values = {**row, "conversation_id": cid, "seq": seq, "created_at": now}
                    result = conn.execute(messages_table.insert().values(**values))
                    message_id = result.inserted_primary_key[0]
                    self._touch(conn, cid, now)
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
            return _message(_Values(id=message_id, **values))
        raise StoreError(
            f"could not append to conversation {cid!r}: another writer took the next sequence "
            f"number {APPEND_ATTEMPTS} times in a row"
        ) from last_error

    @staticmethod
    def _next_seq(conn: Connection, cid: str) -> int:
        m = messages_table
        current = conn.scalar(sa.select(sa.func.max(m.c.seq)).where(m.c.conversation_id == cid))
        return int(current or 0) + 1

    @staticmethod
    def _message_values(
        role: object,
        content: object,
        *,
        tokens: object = None,
        name: object = None,
        status: object = "ok",
        usage: object = None,
    ) -> dict[str, Any]:
        _check_role(role)
        _check(_text_problem(content, max_chars=MAX_CONTENT_CHARS), "content")
        if tokens is not None:
            _check(_count_problem(tokens), "tokens")
        if name is not None:
            _check(_text_problem(name, max_chars=MAX_NAME_CHARS), "name")
        _check_status(status)
        if usage is not None:
            _check(_json_object_problem(usage), "usage")
        return {
            "role": role,
            "content": content,
            "name": name,
            "tokens": tokens,
            "status": status,
            "usage": None if usage is None else _dumps(usage),
        }

    def _bulk_append(self, cid: str, items: Iterable[Mapping[str, Any]]) -> int:
        """Internal: append many messages in ONE transaction, in multi-row INSERTs.

        For benchmarks and test fixtures that need large histories fast. Each item is a mapping
        with the keyword arguments of ``append_message`` (``role``, ``content``, optionally
        ``tokens``, ``name``, ``status``, ``usage``); every item is validated the same way and
        goes through the same tables and constraints. Seqs continue from the current maximum.
        Returns how many messages were written.
        """
        rows = [self._message_values(**item) for item in items]
        with self._tx(write=True) as conn:
            self._lock_conversation(conn, cid)
            first = self._next_seq(conn, cid)
            now = _now()
            for offset, row in enumerate(rows):
                row.update(conversation_id=cid, seq=first + offset, created_at=now)
            if rows:
                _insert_messages(conn, rows)
                self._touch(conn, cid, now)
        return len(rows)

    def update_message(
        self,
        message_id: int,
        *,
        content: str | None = None,
        status: Status | None = None,
        usage: dict[str, Any] | None = None,
        tokens: int | None = None,
    ) -> StoredMessage:
        """Change a stored message, e.g. finish a streamed reply written as 'incomplete'.
        Fields left as None are unchanged."""
        values: dict[str, Any] = {}
        if content is not None:
            _check(_text_problem(content, max_chars=MAX_CONTENT_CHARS), "content")
            values["content"] = content
        if status is not None:
            values["status"] = _check_status(status)
        if usage is not None:
            _check(_json_object_problem(usage), "usage")
            values["usage"] = _dumps(usage)
        if tokens is not None:
            _check(_count_problem(tokens), "tokens")
            values["tokens"] = tokens
        m = messages_table
        with self._tx(write=True) as conn:
            row = conn.execute(sa.select(m).where(m.c.id == message_id).with_for_update()).first()
            if row is None:
                raise NotFoundError(f"no message with id {message_id!r}")
            if values:
                conn.execute(m.update().where(m.c.id == message_id).values(**values))
                self._touch(conn, row.conversation_id, _now())
                row = conn.execute(sa.select(m).where(m.c.id == message_id)).one()
        return _message(row)

    def messages(
        self,
        cid: str,
        *,
        after_seq: int | None = None,
        before_seq: int | None = None,
        limit: int | None = None,
    ) -> list[StoredMessage]:
        """Messages with ``after_seq < seq < before_seq``, oldest first.

        With ``limit``: if ``before_seq`` is given (and ``after_seq`` is not), the ``limit``
        messages nearest below it (paging backwards through older history); otherwise the
        ``limit`` oldest after ``after_seq`` (paging forwards).
        """
        m = messages_table
        stmt = sa.select(m).where(m.c.conversation_id == cid)
        if after_seq is not None:
            stmt = stmt.where(m.c.seq > after_seq)
        if before_seq is not None:
            stmt = stmt.where(m.c.seq < before_seq)
        backwards = limit is not None and before_seq is not None and after_seq is None
        stmt = stmt.order_by(m.c.seq.desc() if backwards else m.c.seq)
        if limit is not None:
            if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
                raise StoreError(f"limit: expected a non-negative integer, got {_short(limit)}")
            stmt = stmt.limit(limit)
        with self._tx(write=False) as conn:
            rows = [_message(row) for row in conn.execute(stmt)]
        if backwards:
            rows.reverse()
        return rows

    def count_messages(self, cid: str) -> int:
        m = messages_table
        with self._tx(write=False) as conn:
            stmt = sa.select(sa.func.count()).select_from(m).where(m.c.conversation_id == cid)
            return int(conn.scalar(stmt) or 0)

    def search_messages(
        self, cid: str, query: str, *, before_seq: int | None = None, limit: int = 20
    ) -> list[SearchHit]:
        """The conversation's messages (status 'ok', ``seq < before_seq``) that contain ANY of
        the content words of ``query`` (``chatmem.recall.query_terms``; stems match, so
        "boats" finds "boat"), most relevant first, at most ``limit``.

        SQLite ranks by FTS5 BM25 (score = -bm25: rarer words and more of them score higher);
        PostgreSQL by ``ts_rank_cd`` over the English configuration, normalised by the log of
        the message length (more matching words score higher; it has no notion of rarity).
        Scores are only comparable within one backend. An empty or all-stopword query returns
        [] without touching the database; an unknown conversation returns [].
        """
        _check(_text_problem(cid, max_chars=MAX_TITLE_CHARS), "cid")
        _check(_text_problem(query, max_chars=MAX_CONTENT_CHARS), "query")
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
            raise StoreError(f"limit: expected a non-negative integer, got {_short(limit)}")
        if before_seq is not None:
            if isinstance(before_seq, bool) or not isinstance(before_seq, int):
                raise StoreError(f"before_seq: expected an integer, got {_short(before_seq)}")
            if before_seq > _MAX_INT:  # above every seq (and beyond a 32-bit parameter)
                before_seq = None
        # Terms are \w+ runs: no quote, operator or column syntax of either backend can leak in.
        terms = [term for term in query_terms(query) if _WORD_RE.fullmatch(term)]
        if not terms or limit == 0 or (before_seq is not None and before_seq <= 1):
            return []
        params: dict[str, Any] = {"cid": cid, "limit": limit}
        seq_filter = ""
        if before_seq is not None:
            seq_filter = "AND m.seq < :before_seq"
            params["before_seq"] = before_seq
        if self.backend == "sqlite":
            words = " OR ".join(f'"{term}"' for term in terms)
            match = f"content : ({words})"
            # Narrow the match to the conversation inside the index. Every id the store makes
            # is uuid hex; an id without a single ASCII letter or digit could tokenize to an
            # empty phrase (matching nothing), so it is left to the join filter alone, which
            # is what makes the result correct in every case.
            if re.search(r"[A-Za-z0-9]", cid):
                phrase = '"' + cid.replace('"', '""') + '"'
                match = f"conversation_id : {phrase} AND {match}"
            params["match"] = match
            # CROSS JOIN keeps the FTS table as the outer loop: messages are only looked up
            # by primary key for the index's matches, never scanned.
            sql = f"""
                SELECT m.seq, m.role, m.name, m.content,
                       bm25(messages_fts, 0.0, 1.0) AS bm25_rank
                FROM messages_fts CROSS JOIN messages AS m ON m.id = messages_fts.rowid
                WHERE messages_fts MATCH :match
                  AND m.conversation_id = :cid AND m.status = 'ok' {seq_filter}
                ORDER BY bm25_rank, m.seq DESC
                LIMIT :limit"""
        else:
            # The query text is a bound parameter; ``to_tsvector('english', content)`` must be
            # spelled exactly as in the index (ix_messages_content_fts) for it to be used.
            params["tsquery"] = " | ".join(terms)
            sql = f"""
                SELECT m.seq, m.role, m.name, m.content,
                       ts_rank_cd(to_tsvector('english', m.content),
                                  to_tsquery('english', :tsquery), 1) AS pg_rank
                FROM messages AS m
                WHERE to_tsvector('english', m.content) @@ to_tsquery('english', :tsquery)
                  AND m.conversation_id = :cid AND m.status = 'ok' {seq_filter}
                ORDER BY pg_rank DESC, m.seq DESC
                LIMIT :limit"""
        with self._tx(write=False) as conn:
            rows = conn.execute(sa.text(sql), params).all()
        sign = -1.0 if self.backend == "sqlite" else 1.0
        return [
            SearchHit(seq=seq, role=role, name=name, content=content, score=sign * float(rank))
            for seq, role, name, content, rank in rows
        ]

    def messages_at(self, cid: str, seqs: Iterable[int]) -> list[StoredMessage]:
        """The conversation's messages with these seqs (those that exist), oldest first."""
        wanted = sorted({_check_seq(seq) for seq in seqs})
        m = messages_table
        rows: list[StoredMessage] = []
        with self._tx(write=False) as conn:
            for first in range(0, len(wanted), _IN_CHUNK):
                chunk = wanted[first : first + _IN_CHUNK]
                stmt = sa.select(m).where(m.c.conversation_id == cid, m.c.seq.in_(chunk))
                rows.extend(_message(row) for row in conn.execute(stmt))
        rows.sort(key=lambda msg: msg.seq)
        return rows

    # -- embeddings --------------------------------------------------------------------------

    def add_embeddings(
        self, cid: str, items: Iterable[tuple[int, Sequence[float]]], model: str
    ) -> None:
        """Store one embedding vector per message seq, for the embedding ``model``.

        Vectors are kept as float32; a message that already has a vector for ``model`` keeps
        it (two replicas embedding the same message is not an error). Every seq must be a
        message of the conversation, else ``StoreError`` and nothing is written.
        """
        _check(_text_problem(model, max_chars=MAX_NAME_CHARS), "model")
        if not model:
            raise StoreError("model: empty")
        vectors: dict[int, tuple[int, bytes]] = {}
        for i, item in enumerate(items):
            try:
                seq, vector = item
            except (TypeError, ValueError):
                raise StoreError(f"items[{i}]: expected a (seq, vector) pair") from None
            vectors.setdefault(_check_seq(seq), _vector_bytes(vector, f"items[{i}]"))
        if not vectors:
            return
        m = messages_table
        now = _now()
        with self._tx(write=True) as conn:
            if self._get_conversation(conn, cid) is None:
                raise NotFoundError(f"no conversation with id {cid!r}")
            ids: dict[int, int] = {}
            wanted = sorted(vectors)
            for first in range(0, len(wanted), _IN_CHUNK):
                chunk = wanted[first : first + _IN_CHUNK]
                stmt = sa.select(m.c.seq, m.c.id).where(
                    m.c.conversation_id == cid, m.c.seq.in_(chunk)
                )
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
                    "created_at": now,
                }
                for seq, (dims, blob) in sorted(vectors.items())
            ]
            dialect = sqlite_dialect if self.backend == "sqlite" else pg_dialect
            insert = dialect.insert(embeddings_table).on_conflict_do_nothing(
                index_elements=["message_id", "model"]
            )
            conn.execute(insert, rows)

    def embeddings(
        self, cid: str, model: str, before_seq: int | None = None
    ) -> list[tuple[int, array]]:
        """The conversation's vectors for ``model`` (``seq < before_seq``), as (seq, float32
        array) pairs in seq order; [] for an unknown conversation."""
        e = embeddings_table
        stmt = sa.select(e.c.seq, e.c.dims, e.c.vector).where(
            e.c.conversation_id == cid, e.c.model == model
        )
        if before_seq is not None:
            if isinstance(before_seq, bool) or not isinstance(before_seq, int):
                raise StoreError(f"before_seq: expected an integer, got {_short(before_seq)}")
            if before_seq <= _MAX_INT:  # above every seq (and beyond a 32-bit parameter)
                stmt = stmt.where(e.c.seq < before_seq)
        with self._tx(write=False) as conn:
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

    # -- summaries and events ----------------------------------------------------------------

    def add_summary(
        self,
        cid: str,
        text: str,
        tokens: int,
        covers_seq: int,
        model: str | None = None,
        usage: dict[str, Any] | None = None,
    ) -> StoredSummary:
        """Store a new summary version covering messages up to ``covers_seq`` (which must be
        the seq of a stored message of this conversation)."""
        _check(_text_problem(text, max_chars=MAX_CONTENT_CHARS), "text")
        _check(_count_problem(tokens), "tokens")
        _check(_count_problem(covers_seq, minimum=1), "covers_seq")
        if model is not None:
            _check(_text_problem(model, max_chars=MAX_NAME_CHARS), "model")
        if usage is not None:
            _check(_json_object_problem(usage), "usage")
        m = messages_table
        with self._tx(write=True) as conn:
            self._lock_conversation(conn, cid)
            covered = conn.scalar(
                sa.select(m.c.id).where(m.c.conversation_id == cid, m.c.seq == covers_seq)
            )
            if covered is None:
                raise StoreError(
                    f"covers_seq: {covers_seq} points at no message of conversation {cid!r}"
                )
            now = _now()
            values = {
                "conversation_id": cid,
                "text": text,
                "tokens": tokens,
                "covers_seq": covers_seq,
                "model": model,
                "usage": None if usage is None else _dumps(usage),
                "created_at": now,
            }
            result = conn.execute(summaries_table.insert().values(**values))
            summary_id = result.inserted_primary_key[0]
            self._touch(conn, cid, now)
        return _summary(_Values(id=summary_id, **values))

    def list_summaries(self, cid: str) -> list[StoredSummary]:
        """Every summary version of the conversation, oldest first."""
        s = summaries_table
        stmt = sa.select(s).where(s.c.conversation_id == cid).order_by(s.c.id)
        with self._tx(write=False) as conn:
            return [_summary(row) for row in conn.execute(stmt)]

    def add_event(self, cid: str, kind: str, data: dict[str, Any] | None = None) -> StoredEvent:
        _check(_text_problem(kind, max_chars=MAX_KIND_CHARS), "kind")
        if not kind:
            raise StoreError("kind: empty")
        payload = {} if data is None else data
        _check(_json_object_problem(payload), "data")
        now = _now()
        values = {"conversation_id": cid, "kind": kind, "data": _dumps(payload), "created_at": now}
        with self._tx(write=True) as conn:
            self._lock_conversation(conn, cid)
            result = conn.execute(events_table.insert().values(**values))
            event_id = result.inserted_primary_key[0]
        return _event(_Values(id=event_id, **values))

    def list_events(self, cid: str, limit: int = 200) -> list[StoredEvent]:
        """The ``limit`` most recent events, oldest first."""
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
            raise StoreError(f"limit: expected a non-negative integer, got {_short(limit)}")
        e = events_table
        stmt = sa.select(e).where(e.c.conversation_id == cid).order_by(e.c.id.desc()).limit(limit)
        with self._tx(write=False) as conn:
            events = [_event(row) for row in conn.execute(stmt)]
        events.reverse()
        return events

    # -- resuming ----------------------------------------------------------------------------

    def load(self, cid: str, *, keep_tail: int = 0) -> LoadedConversation:
        """The conversation, its latest summary and only the messages after it.

        Reads by index range, never the whole history: the cost depends on the unfolded tail
        (plus ``keep_tail`` earlier messages for display), not on the conversation's length.
        """
        if isinstance(keep_tail, bool) or not isinstance(keep_tail, int) or keep_tail < 0:
            raise StoreError(f"keep_tail: expected a non-negative integer, got {_short(keep_tail)}")
        m, s = messages_table, summaries_table
        with self._tx(write=False, snapshot=True) as conn:
            info = self._get_conversation(conn, cid)
            if info is None:
                raise NotFoundError(f"no conversation with id {cid!r}")
            row = conn.execute(
                sa.select(s).where(s.c.conversation_id == cid).order_by(s.c.id.desc()).limit(1)
            ).first()
            summary = None if row is None else _summary(row)
            covers = 0 if summary is None else summary.covers_seq
            tail = conn.execute(
                sa.select(m).where(m.c.conversation_id == cid, m.c.seq > covers).order_by(m.c.seq)
            )
            messages = tuple(_message(r) for r in tail)
            earlier: tuple[StoredMessage, ...] = ()
            if keep_tail and covers:
                before = conn.execute(
                    sa.select(m)
                    .where(m.c.conversation_id == cid, m.c.seq <= covers)
                    .order_by(m.c.seq.desc())
                    .limit(keep_tail)
                )
                earlier = tuple(reversed([_message(r) for r in before]))
        return LoadedConversation(info=info, summary=summary, messages=messages, earlier=earlier)

    # -- export and import -------------------------------------------------------------------

    def export_json(self, cid: str) -> dict[str, Any]:
        """The whole conversation as a JSON-ready dict (see ``import_json``)."""
        m, s, e = messages_table, summaries_table, events_table
        with self._tx(write=False, snapshot=True) as conn:
            info = self._get_conversation(conn, cid)
            if info is None:
                raise NotFoundError(f"no conversation with id {cid!r}")
            messages = [
                _message(r)
                for r in conn.execute(
                    sa.select(m).where(m.c.conversation_id == cid).order_by(m.c.seq)
                )
            ]
            summaries = [
                _summary(r)
                for r in conn.execute(
                    sa.select(s).where(s.c.conversation_id == cid).order_by(s.c.id)
                )
            ]
            events = [
                _event(r)
                for r in conn.execute(
                    sa.select(e).where(e.c.conversation_id == cid).order_by(e.c.id)
                )
            ]
        return {
            "format": EXPORT_FORMAT,
            "version": EXPORT_VERSION,
            "exported_at": _now(),
            "conversation": {
                "id": info.id,
                "title": info.title,
                "created_at": _format_time(info.created_at),
                "updated_at": _format_time(info.updated_at),
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
                    "created_at": _format_time(msg.created_at),
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
                    "created_at": _format_time(summ.created_at),
                }
                for summ in summaries
            ],
            "events": [
                {"kind": ev.kind, "data": ev.data, "created_at": _format_time(ev.created_at)}
                for ev in events
            ],
        }

    def export_markdown(self, cid: str) -> str:
        """A readable transcript: title, the messages, then every summary version."""
        doc = self.export_json(cid)
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
        self, data: bytes | str | dict[str, Any], owner: str | None = None
    ) -> ConversationInfo:
        """Import an ``export_json`` document as a NEW conversation (new id), owned by
        ``owner`` (the file's owner field is ignored).

        The whole document is validated before anything is written; the first problem raises
        ``ImportValidationError`` naming where it is. Then everything is written in one
        transaction, so a failure leaves the database unchanged.
        """
        valid = _Validator().document(_parse_import(data))
        if owner is not None:
            _check(_text_problem(owner, max_chars=MAX_TITLE_CHARS), "owner")
        now = _now()
        cid = uuid.uuid4().hex
        conv = valid.conversation
        with self._tx(write=True) as conn:
            conn.execute(
                conversations_table.insert().values(
                    id=cid,
                    title=conv["title"],
                    created_at=conv["created_at"] or now,
                    updated_at=now,
                    settings=_dumps(conv["settings"]),
                    owner=owner,
                )
            )
            if valid.messages:
                _insert_messages(
                    conn,
                    [
                        {
                            **msg,
                            "conversation_id": cid,
                            "usage": None if msg["usage"] is None else _dumps(msg["usage"]),
                            "created_at": msg["created_at"] or now,
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
                            "usage": None if summ["usage"] is None else _dumps(summ["usage"]),
                            "created_at": summ["created_at"] or now,
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
                            "data": _dumps(ev["data"]),
                            "created_at": ev["created_at"] or now,
                        }
                        for ev in valid.events
                    ],
                )
            info = self._get_conversation(conn, cid)
        assert info is not None
        return info


def _insert_messages(conn: Connection, rows: list[dict[str, Any]]) -> None:
    """Insert many message rows (all with the same keys) in one go.

    PostgreSQL: executemany. SQLite: multi-row INSERT statements of ``_INSERT_CHUNK`` rows,
    because executemany runs one statement per row, and every statement inside a transaction
    makes FTS5 flush what the insert trigger added into a new index segment: 100,000 rows took
    about 10 times longer. The SQL is written here rather than by SQLAlchemy, which takes
    longer to compile a 1,000-row VALUES list than SQLite takes to run it.
    """
    if conn.dialect.name != "sqlite":
        conn.execute(messages_table.insert(), rows)
        return
    columns = list(rows[0])
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


def _check_not_newer(version: int | None) -> None:
    if version is not None and version > SCHEMA_VERSION:
        raise StoreError(
            f"the database schema is version {version}, newer than this chatmem "
            f"supports ({SCHEMA_VERSION}); upgrade chatmem"
        )


class _Values:
    """Attribute access over a dict, so freshly written rows convert like fetched ones."""

    def __init__(self, **values: Any) -> None:
        self.__dict__.update(values)


def _human_time(iso: str) -> str:
    return _parse_time(iso).strftime("%Y-%m-%d %H:%M UTC")

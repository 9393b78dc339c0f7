"""Durable conversations: SQLite by default, PostgreSQL by URL.

One code path (SQLAlchemy Core, no ORM) serves both backends::

    from chatmem.store import Store

    with Store() as store:                       # sqlite:///.chatmem/chatmem.db
        conv = store.create_conversation("Trip planning", settings={"model": "gpt-4o-mini"})
        store.append_message(conv.id, "user", "Hi, my name is Sam.")
        loaded = store.load(conv.id)             # latest summary + only the unfolded tail

    Store("postgresql://user:pw@db:5432/chatmem")  # several app replicas share one database

The modules, lowest first (each imports only those above it, plus ``chatmem.errors``,
``chatmem.events``, ``chatmem.text`` and ``chatmem.redact``):

- ``urls``: database URLs (``resolve_database_url``, ``check_database_url``, ``DEFAULT_URL``).
- ``records``: the frozen records handed out, row converters, field checks, time and JSON.
- ``schema``: the tables and the numbered migrations (the layout of the data is described
  there).
- ``queries``, ``engine``: statements the parts share; engine, WAL, locking, transactions.
- ``messages``, ``history``, ``marks``, ``search``, ``validate``, ``transfer``: the bodies of
  the ``Store`` methods that write messages; summaries, events and resuming; pins and
  exclusions; full-text search and embeddings; import checking; export and import.
- ``core``: the ``Store`` class itself.

Reading methods that return a collection (``messages``, ``list_summaries``, ``list_events``,
``count_messages``) return an empty result for an unknown conversation id; methods that need the
conversation (``load``, ``export_*``, ``append_message``, ``rename_conversation``...) raise
``NotFoundError``. Every error the store raises is a ``StoreError``; a damaged full-text index
that could not be rebuilt is a ``SearchIndexError`` (see ``Store.rebuild_search_index``).
"""

from __future__ import annotations

from chatmem.errors import (
    ImportValidationError,
    LocationError,
    NotFoundError,
    SearchIndexError,
    StoreError,
    SummaryConflict,
)
from chatmem.redact import mask_url
from chatmem.store.core import Store
from chatmem.store.engine import REINDEX_HINT
from chatmem.store.records import (
    MAX_CONTENT_CHARS,
    ROLES,
    STATUSES,
    TOKEN_COUNT_SETTINGS,
    Changes,
    ConversationInfo,
    IndexRebuild,
    LoadedConversation,
    SearchHit,
    StoredMark,
    StoredMessage,
    StoredSummary,
    clean_settings,
    marks_in_force,
)
from chatmem.store.schema import MIGRATIONS, PG_INDEXED_CHARS, SCHEMA_VERSION, TABLE_NAMES
from chatmem.store.search import EMBEDDING_MAX_DIMS
from chatmem.store.urls import DEFAULT_URL, check_database_url, resolve_database_url
from chatmem.store.validate import (
    EXPORT_FORMAT,
    EXPORT_VERSION,
    MAX_IMPORT_BYTES,
    MAX_IMPORT_EVENTS,
    MAX_IMPORT_MESSAGES,
    MAX_IMPORT_SUMMARIES,
)

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
    "PG_INDEXED_CHARS",
    "REINDEX_HINT",
    "ROLES",
    "SCHEMA_VERSION",
    "STATUSES",
    "TABLE_NAMES",
    "TOKEN_COUNT_SETTINGS",
    "Changes",
    "ConversationInfo",
    "ImportValidationError",
    "IndexRebuild",
    "LoadedConversation",
    "LocationError",
    "NotFoundError",
    "SearchHit",
    "SearchIndexError",
    "Store",
    "StoreError",
    "StoredMark",
    "StoredMessage",
    "StoredSummary",
    "SummaryConflict",
    "check_database_url",
    "clean_settings",
    "marks_in_force",
    "mask_url",
    "resolve_database_url",
]

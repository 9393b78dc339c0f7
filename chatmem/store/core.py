"""The ``Store``: opening (engine, migrations), conversations, and reading messages.

The other methods keep their bodies in ``messages.py`` (writing messages), ``history.py``
(summaries, events, resuming), ``search.py`` (full-text search, embeddings) and
``transfer.py`` (export, import), and delegate to them: every public method is on ``Store``.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
from array import array
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager as ContextManager
from pathlib import Path
from typing import Any, Literal, TypeVar

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection, Engine

from chatmem.errors import LocationError, SearchIndexError, StoreError
from chatmem.events import Event
from chatmem.redact import mask_url
from chatmem.store import history, marks, search, transfer
from chatmem.store import messages as message_writes
from chatmem.store.engine import (
    create_engine,
    recorded_version,
    transaction,
)
from chatmem.store.queries import (
    get_conversation,
    insert_conversation,
    lock_conversation,
    seq_chunks,
    touch,
)
from chatmem.store.records import (
    MAX_TITLE_CHARS,
    Changes,
    ConversationInfo,
    IndexRebuild,
    LoadedConversation,
    Role,
    SearchHit,
    Status,
    StoredMark,
    StoredMessage,
    StoredSummary,
    check,
    check_limit,
    check_seq,
    clean_settings,
    clean_title,
    conversation_record,
    message_record,
    message_values,
    now,
    settings_json,
    short,
    text_problem,
)
from chatmem.store.schema import (
    SCHEMA_VERSION,
    apply_migrations,
    check_not_newer,
    conversations_table,
    max_version,
    messages_table,
)
from chatmem.store.urls import resolve_database_url

log = logging.getLogger("chatmem.store")
T = TypeVar("T")


class Store:
    """Conversations, messages, summaries and events in SQLite or PostgreSQL.

    Safe to share between threads (a pooled engine; every operation checks out its own
    connection) and between processes or app replicas (each write is one transaction; appends
    serialise per conversation). The schema is created or upgraded on open.

    A damaged full-text index does not stop it: the first search or message write that finds
    the damage rebuilds the index (once per ``Store``; ``rebuild_search_index``). If that
    fails, messages are still written (the index is taken out of their way) and searches
    raise ``SearchIndexError`` until a rebuild succeeds.
    """

    def __init__(self, url: str | None = None) -> None:
        self._url = resolve_database_url(url)
        self.backend: Literal["sqlite", "postgresql"] = (
            "sqlite" if self._url.get_backend_name() == "sqlite" else "postgresql"
        )
        self._memory = self.backend == "sqlite" and self._url.database == ":memory:"
        # One shared connection (in-memory SQLite) must not be used by two threads at once.
        self._lock: ContextManager[Any] = (
            threading.RLock() if self._memory else contextlib.nullcontext()
        )
        self._repair_lock = threading.Lock()
        self._repair_failed = False  # the automatic rebuild of the search index failed
        self._engine: Engine | None = None
        try:
            self._engine = create_engine(self._url)
            self._migrate()
        except LocationError:
            self.close()
            raise  # one sentence already, without the path
        except StoreError as exc:
            self.close()
            raise StoreError(f"Could not open the {self._shown_name}: {exc}") from exc.__cause__

    @property
    def _shown_name(self) -> str:
        """The database in words for errors: a SQLite file by its name only (never the
        server's folders), PostgreSQL by its URL with the password masked."""
        if self.backend == "postgresql":
            return f"postgresql database at {self.url}"
        if self._memory:
            return "in-memory SQLite database"
        return f"SQLite database {Path(self._url.database or '').name}"

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

    def _tx(self, *, write: bool, snapshot: bool = False) -> ContextManager[Connection]:
        """One transaction (see ``engine.transaction``); StoreError once closed."""
        return transaction(self._engine, self._lock, write=write, snapshot=snapshot)

    # -- migrations --------------------------------------------------------------------------

    @property
    def schema_version(self) -> int:
        """The schema version recorded in the database (``SCHEMA_VERSION`` once open)."""
        with self._tx(write=False) as conn:
            return max_version(conn)

    def _migrate(self, target: int = SCHEMA_VERSION) -> None:
        """Apply the missing migrations up to ``target``, in order, in one transaction.

        Cheap when the schema is current (one read). Otherwise it takes a lock first
        (SQLite: BEGIN IMMEDIATE; PostgreSQL: an advisory lock), re-reads the version and
        applies only what is still missing, so processes opening a blank database at the same
        moment don't trip over each other.
        """
        assert self._engine is not None
        current = recorded_version(self._engine, self._lock)
        check_not_newer(current)
        if current is not None and current >= target:
            return
        with self._tx(write=True) as conn:
            apply_migrations(conn, self.backend, target, self.url)

    # -- conversations -----------------------------------------------------------------------

    def create_conversation(
        self,
        title: str = "New chat",
        settings: dict[str, Any] | None = None,
        owner: str | None = None,
    ) -> ConversationInfo:
        title = clean_title(title)
        clean = clean_settings(settings)
        settings_text = settings_json(clean)
        if owner is not None:
            check(text_problem(owner, max_chars=MAX_TITLE_CHARS), "owner")
        created = now()
        with self._tx(write=True) as conn:
            return insert_conversation(conn, title, settings_text, owner, created, created)

    def get_conversation(self, cid: str) -> ConversationInfo | None:
        with self._tx(write=False) as conn:
            return get_conversation(conn, cid)

    def list_conversations(
        self, query: str | None = None, owner: str | None = None, limit: int = 100
    ) -> list[ConversationInfo]:
        """Newest (``updated_at``) first. ``query`` matches the title or any message content,
        case-insensitively, as a plain substring (``%`` and ``_`` are literal). ``owner=None``
        lists every owner's conversations."""
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise StoreError(f"limit: expected a positive integer, got {short(limit)}")
        c = conversations_table
        stmt = sa.select(c)
        if owner is not None:
            stmt = stmt.where(c.c.owner == owner)
        if query:
            check(text_problem(query, max_chars=MAX_TITLE_CHARS), "query")
            pattern = "%" + re.sub(r"([\\%_])", r"\\\1", query) + "%"
            m = messages_table
            in_messages = sa.exists().where(
                m.c.conversation_id == c.c.id, m.c.content.ilike(pattern, escape="\\")
            )
            stmt = stmt.where(sa.or_(c.c.title.ilike(pattern, escape="\\"), in_messages))
        stmt = stmt.order_by(c.c.updated_at.desc(), c.c.id.desc()).limit(limit)
        with self._tx(write=False) as conn:
            return [conversation_record(row) for row in conn.execute(stmt)]

    def _change_conversation(self, cid: str, **values: Any) -> ConversationInfo:
        """Set columns of the conversation (bumping ``updated_at``) and return it."""
        with self._tx(write=True) as conn:
            lock_conversation(conn, cid)
            touch(conn, cid, now(), **values)
            info = get_conversation(conn, cid)
        assert info is not None
        return info

    def rename_conversation(self, cid: str, title: str) -> ConversationInfo:
        return self._change_conversation(cid, title=clean_title(title))

    def update_settings(self, cid: str, settings: dict[str, Any]) -> ConversationInfo:
        """Replace the conversation's settings (secrets dropped, see ``clean_settings``)."""
        return self._change_conversation(cid, settings=settings_json(clean_settings(settings)))

    def delete_conversation(self, cid: str) -> bool:
        """Delete the conversation and (cascading) all its messages, summaries and events.
        Returns False if there was no such conversation."""

        def delete() -> bool:
            with self._tx(write=True) as conn:
                result = conn.execute(
                    conversations_table.delete().where(conversations_table.c.id == cid)
                )
                return result.rowcount > 0

        return self._indexed(delete)

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
        reply_to: int | None = None,
    ) -> StoredMessage:
        """Append a message as ``seq = max(seq) + 1``, in one transaction.

        ``reply_to``: for a reply, the seq of the user message it answers (replies pair with
        their question by it, however the tabs of a conversation interleave).

        Appends to one conversation are serialised (a row lock on PostgreSQL, the write lock on
        SQLite); should two writers still pick the same seq, the loser retries with a fresh
        seq, up to ``messages.APPEND_ATTEMPTS`` times, then raises ``StoreError``. A wait for
        a pooled connection or the lock that runs out is retried too.
        """
        row = message_values(
            role, content, tokens=tokens, name=name, status=status, usage=usage, reply_to=reply_to
        )
        return self._indexed(lambda: message_writes.append_message(self, cid, dict(row)))

    @staticmethod
    def _next_seq(conn: Connection, cid: str) -> int:
        """The seq for the next message (tests replace it to lose a race on purpose)."""
        return message_writes.next_seq(conn, cid)

    def _bulk_append(self, cid: str, items: Iterable[Mapping[str, Any]]) -> int:
        """Internal: append many messages in ONE transaction, in multi-row INSERTs.

        For benchmarks and test fixtures that need large histories fast. Each item is a mapping
        with the keyword arguments of ``append_message`` (``role``, ``content``, optionally
        ``tokens``, ``name``, ``status``, ``usage``); every item is validated the same way and
        goes through the same tables and constraints. Seqs continue from the current maximum.
        Returns how many messages were written.
        """
        listed = list(items)
        return self._indexed(lambda: message_writes.bulk_append(self, cid, listed))

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
        return self._indexed(
            lambda: message_writes.update_message(
                self, message_id, content=content, status=status, usage=usage, tokens=tokens
            )
        )

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
            stmt = stmt.limit(check_limit(limit, "limit"))
        with self._tx(write=False) as conn:
            rows = [message_record(row) for row in conn.execute(stmt)]
        if backwards:
            rows.reverse()
        return rows

    def count_messages(self, cid: str) -> int:
        m = messages_table
        with self._tx(write=False) as conn:
            stmt = sa.select(sa.func.count()).select_from(m).where(m.c.conversation_id == cid)
            return int(conn.scalar(stmt) or 0)

    def search_messages(
        self,
        cid: str,
        query: str,
        *,
        before_seq: int | None = None,
        limit: int = 20,
        bounded: bool = False,
    ) -> list[SearchHit]:
        """The conversation's messages (status 'ok', ``seq < before_seq``) that contain ANY of
        the content words of ``query`` (``chatmem.text.query_terms``; stems match, so
        "boats" finds "boat"), most relevant first, at most ``limit``.

        SQLite ranks by FTS5 BM25 (score = -bm25: rarer words and more of them score higher);
        PostgreSQL by ``ts_rank_cd`` over the English configuration, normalised by the log of
        the message length (more matching words score higher; it has no notion of rarity).
        Scores are only comparable within one backend. An empty or all-stopword query returns
        [] without touching the database; an unknown conversation returns [].

        ``bounded`` (recall, on SQLite): the work does not grow with the conversation; terms in
        more than ``search.COMMON_TERM`` of its messages are left out, and a query of such
        terms alone searches its newest ``search.RECENT_WINDOW`` messages.
        """
        return self._indexed(
            lambda: search.search_messages(
                self, cid, query, before_seq=before_seq, limit=limit, bounded=bounded
            ),
            write=False,
        )

    # -- the full-text index -----------------------------------------------------------------

    def rebuild_search_index(
        self, progress: Callable[[int, int], object] | None = None
    ) -> IndexRebuild:
        """Build the full-text index of message content again, from the messages.

        SQLite: the FTS5 table and its triggers are made anew (whatever state the old ones are
        in) and every message is indexed, conversation by conversation, calling
        ``progress(done, total)`` after each; PostgreSQL: ``REINDEX`` of the GIN index
        (created if it is missing), with ``progress(0, total)`` and ``progress(total, total)``.
        One write transaction: other writers wait, and a failure changes nothing. Raises
        ``StoreError``; returns how many messages and conversations were indexed.
        """
        result = search.rebuild_index(self, progress)
        self._repair_failed = False
        return result

    def _indexed(self, operation: Callable[[], T], *, write: bool = True, retry: bool = True) -> T:
        """Run ``operation`` (it reads or writes the full-text index); if it finds the index
        damaged, rebuild it and run it again (unless ``retry`` is False). When the rebuild
        fails, a write still runs (the index is taken out of its way), a search raises
        ``SearchIndexError``."""
        try:
            return operation()
        except SearchIndexError as exc:
            damage = exc
        except StoreError as exc:
            # A driver error that does not name the index (FTS5 says "SQL logic error" when
            # one of its tables is gone): the index is to blame if a part of it is missing.
            if not isinstance(exc.__cause__, sa_exc.DBAPIError) or not search.index_broken(self):
                raise
            damage = SearchIndexError()
            damage.__cause__ = exc.__cause__
        except MemoryError as exc:
            # SQLite says "out of memory" (Python: MemoryError) when a damaged FTS5 record
            # asks for an absurd allocation; only the index holds such records.
            if self.backend != "sqlite":
                raise
            damage = SearchIndexError()
            damage.__cause__ = exc
        repaired = search.repair_index(self, damage)
        if retry and (repaired or write):
            return operation()
        raise damage

    def messages_at(self, cid: str, seqs: Iterable[int]) -> list[StoredMessage]:
        """The conversation's messages with these seqs (those that exist), oldest first."""
        wanted = sorted({check_seq(seq) for seq in seqs})
        m = messages_table
        rows: list[StoredMessage] = []
        with self._tx(write=False) as conn:
            for chunk in seq_chunks(wanted):
                stmt = sa.select(m).where(m.c.conversation_id == cid, m.c.seq.in_(chunk))
                rows.extend(message_record(row) for row in conn.execute(stmt))
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
        search.add_embeddings(self, cid, items, model)

    def embeddings(
        self, cid: str, model: str, before_seq: int | None = None
    ) -> list[tuple[int, array]]:
        """The conversation's vectors for ``model`` (``seq < before_seq``), as (seq, float32
        array) pairs in seq order; [] for an unknown conversation."""
        return search.embeddings(self, cid, model, before_seq)

    # -- summaries, events, resuming (bodies in history.py) ------------------------------------

    def add_summary(
        self,
        cid: str,
        text: str,
        tokens: int,
        covers_seq: int,
        model: str | None = None,
        usage: dict[str, Any] | None = None,
        *,
        extends: Any = history.UNCHECKED,
        input_seqs: Iterable[int] | None = None,
        edited_by: str | None = None,
        restored_from: int | None = None,
    ) -> StoredSummary:
        """Store a new summary version covering messages up to ``covers_seq`` (which must be
        the seq of a stored message of this conversation).

        With ``extends`` (the id of the version the fold was built on, None for the first), it
        lands only if that is still the newest version, else ``SummaryConflict`` (nothing
        written): compare-and-set. ``input_seqs`` records exactly which messages it read;
        ``edited_by`` ("person") and ``restored_from`` (a version number) mark a correction.
        """
        return history.add_summary(
            self,
            cid,
            text,
            tokens,
            covers_seq,
            model,
            usage,
            extends=extends,
            input_seqs=input_seqs,
            edited_by=edited_by,
            restored_from=restored_from,
        )

    def changes(
        self,
        cid: str,
        after_seq: int,
        summary_id: int | None = None,
        limit: int | None = None,
        mark_id: int = 0,
    ) -> Changes:
        """What was written since a session last looked: the messages with ``seq >
        after_seq`` (at most ``limit``, oldest first), the newest summary version if its id
        is above ``summary_id``, and the marks after ``mark_id``. Reads by index range."""
        return history.changes(self, cid, after_seq, summary_id, limit, mark_id)

    def mark_message(self, cid: str, seq: int, kind: str, value: bool) -> StoredMark:
        """Pin (``kind`` "pin") or exclude ("exclude") message ``seq``, or undo it (False)."""
        return marks.mark_message(self, cid, seq, kind, value)

    def marks(self, cid: str, after_id: int = 0) -> list[StoredMark]:
        """Every pin and exclusion (and undoing) after mark ``after_id``, oldest first."""
        return marks.list_marks(self, cid, after_id)

    def list_summaries(self, cid: str) -> list[StoredSummary]:
        """Every summary version of the conversation, oldest first."""
        return history.list_summaries(self, cid)

    def add_event(self, cid: str, event: Event) -> Event:
        """Store ``event`` (its kind; its message and figures as the JSON ``data``; its time,
        in UTC, as ``created_at``) and return it with its row ``id``."""
        return history.add_event(self, cid, event)

    def list_events(self, cid: str, limit: int = 200) -> list[Event]:
        """The ``limit`` most recent events, oldest first."""
        return history.list_events(self, cid, limit)

    def load(self, cid: str, *, keep_tail: int = 0) -> LoadedConversation:
        """The conversation, its latest summary and only the messages after it.

        Reads by index range, never the whole history: the cost depends on the unfolded tail
        (plus ``keep_tail`` earlier messages for display), not on the conversation's length.
        """
        return history.load(self, cid, keep_tail)

    # -- export and import -------------------------------------------------------------------

    def export_json(self, cid: str) -> dict[str, Any]:
        """The whole conversation as a JSON-ready dict (see ``import_json``)."""
        return transfer.export_json(self, cid)

    def export_markdown(self, cid: str) -> str:
        """A readable transcript: title, the messages, then every summary version."""
        return transfer.export_markdown(self, cid)

    def import_json(
        self, data: bytes | str | dict[str, Any], owner: str | None = None
    ) -> ConversationInfo:
        """Import an ``export_json`` document as a NEW conversation (new id), owned by
        ``owner`` (the file's owner field is ignored).

        The whole document is validated before anything is written; the first problem raises
        ``ImportValidationError`` naming where it is. Then everything is written in one
        transaction, so a failure leaves the database unchanged.
        """
        stream: Any = data if hasattr(data, "read") else None
        start = stream.tell() if stream is not None and _seekable(stream) else None

        def write() -> ConversationInfo:
            if start is not None:
                stream.seek(start)
            return transfer.import_json(self, data, owner)

        # A file that cannot be rewound is read once: after a repair it is not read again.
        return self._indexed(write, retry=stream is None or start is not None)


def _seekable(stream: Any) -> bool:
    try:
        return bool(stream.seekable())
    except (AttributeError, OSError, ValueError):
        return False

"""Connections: the SQLAlchemy engine per backend, SQLite's WAL and locking, transactions.

Every store operation runs in one :func:`transaction`; driver errors come out of it as
``StoreError`` with the driver's message (never the URL's password, never a file path):
a damaged full-text index as :class:`SearchIndexError`, a SQLite file that cannot be written
(read-only folder or file, a path through a file) as one sentence saying what to do.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import random
import re
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Final, TypeVar

import sqlalchemy as sa
from sqlalchemy import event as sa_event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL, Connection, Engine
from sqlalchemy.pool import StaticPool

from chatmem.errors import LocationError, SearchIndexError, StoreError
from chatmem.store.schema import max_version

log = logging.getLogger("chatmem.store")
T = TypeVar("T")

SQLITE_BUSY_TIMEOUT_MS: Final = 30_000
PG_CONNECT_TIMEOUT_S: Final = 10
# The app runs a script thread per browser session plus a fold worker (and an embedder) per
# chat, and a write holds its connection while it queues on the conversation's row lock: the
# pool must let that many wait on the lock rather than on the pool (SQLAlchemy's default of
# 5 + 10 lost appends at 16 writer threads). 40 per process stays under PostgreSQL's default
# 100 connections with two replicas. A SQLite file gets the same pool (its writers wait on
# the file lock, each holding a connection).
PG_POOL_SIZE: Final = 10
PG_MAX_OVERFLOW: Final = 30
PG_POOL_TIMEOUT_S: Final = 60
# PostgreSQL states worth another try: serialization failure, deadlock, lock not available.
_PG_TRANSIENT = ("40001", "40P01", "55P03")
TRANSIENT_ATTEMPTS: Final = 5
"""How many times a write that met a transient error (pool or lock timeout) is tried."""


class _UniqueViolation(StoreError):
    """Internal: a UNIQUE constraint rejected a write (two writers took the same seq)."""


class TransientError(StoreError):
    """A write that timed out waiting for a pooled connection or a lock: worth retrying."""


def is_transient(exc: BaseException) -> bool:
    """Whether a driver error is a wait that ran out (pool, lock) rather than a refusal."""
    if isinstance(exc, sa_exc.TimeoutError):  # QueuePool limit ... reached, timed out
        return True
    original = getattr(exc, "orig", None) or exc
    if getattr(original, "sqlstate", None) in _PG_TRANSIENT:
        return True
    if isinstance(original, sqlite3.OperationalError):
        text = str(original).lower()
        return "database is locked" in text or "database is busy" in text
    return False


def retrying(operation: Callable[[], T], what: str) -> T:
    """Run ``operation``; on a :class:`TransientError`, wait a little longer each time and
    run it again, up to ``TRANSIENT_ATTEMPTS`` times in all (then the error stands)."""
    for attempt in range(1, TRANSIENT_ATTEMPTS + 1):
        try:
            return operation()
        except TransientError as exc:
            if attempt == TRANSIENT_ATTEMPTS:
                raise
            log.warning("%s: %s (attempt %d of %d)", what, exc, attempt, TRANSIENT_ATTEMPTS)
            time.sleep(random.uniform(0.05, 0.2) * attempt)
    raise AssertionError("unreachable")


REINDEX_HINT: Final = "run `python -m chatmem --reindex` to rebuild it"
# SQLite names the FTS5 table (or says "fts5") in the errors of a damaged or missing index;
# SQLITE_CORRUPT_VTAB is corruption inside a virtual table, and messages_fts is the only one.
_SQLITE_INDEX_ERROR = re.compile(r"messages_fts|fts5", re.IGNORECASE)
# PostgreSQL: data_corrupted, index_corrupted (naming the full-text index).
_PG_CORRUPTION = ("XX001", "XX002")
_PG_INDEX_NAME = "ix_messages_content_fts"
# What SQLite says when it cannot create, open or write the file.
_SQLITE_ACCESS_ERRORS = (
    "unable to open database file",
    "attempt to write a readonly database",
    "readonly database",
    "disk i/o error",
)


def _driver_message(exc: sa_exc.SQLAlchemyError) -> str:
    original = getattr(exc, "orig", None) or exc
    message = " ".join(str(original).split())
    return message if len(message) <= 300 else message[:297] + "..."


def is_search_index_damage(exc: BaseException) -> bool:
    """Whether a driver error says the full-text index is damaged or missing."""
    original = getattr(exc, "orig", None) or exc
    if isinstance(original, sqlite3.Error):
        name = getattr(original, "sqlite_errorname", "")
        return name == "SQLITE_CORRUPT_VTAB" or bool(_SQLITE_INDEX_ERROR.search(str(original)))
    sqlstate = getattr(original, "sqlstate", None)
    return sqlstate in _PG_CORRUPTION and _PG_INDEX_NAME in str(original)


def sqlite_location_problem(database: str) -> str | None:
    """Why the SQLite file ``database`` cannot be created or written, in words (no path),
    or None if its folder and file look writable."""
    path = Path(database)
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent  # the nearest folder that exists (the rest is to be created)
    if not folder.is_dir():
        return "part of its path is a file, not a folder"
    if path.exists() and not os.access(path, os.R_OK | os.W_OK):
        return "the database file is read-only"
    if not os.access(folder, os.W_OK | os.X_OK):
        return "the folder is read-only"
    return None


def _location_error(problem: str) -> LocationError:
    return LocationError(
        f"chatmem cannot write its database: {problem}. "
        "Set CHATMEM_DATABASE_URL to a writable location."
    )


def _sqlite_access_error(engine: Engine, exc: sa_exc.SQLAlchemyError) -> LocationError | None:
    """A :class:`LocationError` for a SQLite file that cannot be opened or written."""
    database = engine.url.database
    if engine.dialect.name != "sqlite" or not database or database == ":memory:":
        return None
    message = str(getattr(exc, "orig", None) or exc).lower()
    if not any(text in message for text in _SQLITE_ACCESS_ERRORS):
        return None
    problem = sqlite_location_problem(database)
    if problem is None and "unable to open" in message:
        problem = "the database file could not be opened"
    return _location_error(problem) if problem else None


def _is_unique_violation(exc: sa_exc.IntegrityError) -> bool:
    original = exc.orig
    if getattr(original, "sqlstate", None) == "23505":  # psycopg: unique_violation
        return True
    name = getattr(original, "sqlite_errorname", "")
    return name in ("SQLITE_CONSTRAINT_UNIQUE", "SQLITE_CONSTRAINT_PRIMARYKEY") or (
        "UNIQUE constraint failed" in str(original)
    )


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


def create_engine(url: URL) -> Engine:
    """The engine for a URL from ``resolve_database_url`` (PostgreSQL or SQLite)."""
    if url.get_backend_name() != "sqlite":
        connect_args: dict[str, Any] = {}
        if "connect_timeout" not in url.query:
            connect_args["connect_timeout"] = PG_CONNECT_TIMEOUT_S
        return sa.create_engine(
            url,
            pool_pre_ping=True,
            pool_size=PG_POOL_SIZE,
            max_overflow=PG_MAX_OVERFLOW,
            pool_timeout=PG_POOL_TIMEOUT_S,
            connect_args=connect_args,
        )

    if url.database == ":memory:":
        engine = sa.create_engine(
            url, poolclass=StaticPool, connect_args={"check_same_thread": False}
        )
    else:
        assert url.database is not None
        try:
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            problem = sqlite_location_problem(url.database)
            if problem is None:
                reason = os.strerror(exc.errno) if exc.errno else type(exc).__name__
                if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
                    problem = "the folder is read-only"
                else:
                    problem = f"its folder could not be created ({reason.lower()})"
            raise _location_error(problem) from None
        engine = sa.create_engine(
            url,
            pool_size=PG_POOL_SIZE,  # writers queue on the file lock holding a connection
            max_overflow=PG_MAX_OVERFLOW,
            pool_timeout=PG_POOL_TIMEOUT_S,
            connect_args={
                "check_same_thread": False,
                "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000,
            },
        )

    @sa_event.listens_for(engine, "connect")
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

    @sa_event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # Writers take the write lock up front (BEGIN IMMEDIATE), so two writers queue on
        # busy_timeout instead of failing when a read lock cannot be upgraded.
        mode = conn.get_execution_options().get("chatmem_begin", "DEFERRED")
        conn.exec_driver_sql(f"BEGIN {mode}")

    return engine


@contextlib.contextmanager
def transaction(
    engine: Engine | None,
    lock: contextlib.AbstractContextManager[Any],
    *,
    write: bool,
    snapshot: bool = False,
) -> Iterator[Connection]:
    """One transaction: commit on success, roll back on any error.

    ``write`` takes SQLite's write lock at BEGIN; ``snapshot`` makes a multi-query read
    consistent on PostgreSQL (SQLite reads are always a snapshot). ``lock`` is held throughout
    (one shared connection, as in-memory SQLite has, must not be used by two threads at once).
    """
    if engine is None:
        raise StoreError("The store is closed.")
    backend = engine.dialect.name
    with lock:
        try:
            with engine.connect() as conn:
                if write and backend == "sqlite":
                    conn.execution_options(chatmem_begin="IMMEDIATE")
                elif snapshot and backend == "postgresql":
                    conn.execution_options(isolation_level="REPEATABLE READ")
                with conn.begin():
                    yield conn
        except sa_exc.IntegrityError as exc:
            if _is_unique_violation(exc):
                raise _UniqueViolation(_driver_message(exc)) from exc
            raise StoreError(f"the database rejected the write: {_driver_message(exc)}") from exc
        except sa_exc.SQLAlchemyError as exc:
            if isinstance(exc, sa_exc.TimeoutError):
                raise TransientError(
                    f"the database is too busy: no connection came free within "
                    f"{PG_POOL_TIMEOUT_S} s"
                ) from exc
            if is_transient(exc):
                raise TransientError(
                    f"the database is too busy ({backend}: {_driver_message(exc)})"
                ) from exc
            raise translate(engine, exc) from exc


def translate(engine: Engine, exc: sa_exc.SQLAlchemyError) -> StoreError:
    """The StoreError a driver error becomes: the index's, the file's, or the driver's words."""
    if is_search_index_damage(exc):
        return SearchIndexError()
    located = _sqlite_access_error(engine, exc)
    if located is not None:
        return located
    return StoreError(f"{engine.dialect.name} error: {_driver_message(exc)}")


def recorded_version(engine: Engine, lock: contextlib.AbstractContextManager[Any]) -> int | None:
    """The schema version without taking any lock; None if the database is blank."""
    try:
        with lock, engine.connect() as conn:
            try:
                with conn.begin():
                    return max_version(conn)
            except (sa_exc.OperationalError, sa_exc.ProgrammingError) as exc:
                if "schema_version" in str(exc.orig):  # no such table yet
                    return None
                raise
    except sa_exc.SQLAlchemyError as exc:
        raise (_sqlite_access_error(engine, exc) or StoreError(_driver_message(exc))) from exc

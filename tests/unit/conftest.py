"""Fixtures for the store tests: every test taking ``store_url`` runs on SQLite and PostgreSQL.

PostgreSQL comes from ``CHATMEM_TEST_DATABASE_URL`` (``scripts/start_test_postgres.sh`` starts a
local server and prints the export line). Without it, or when the server can't be reached, the
PostgreSQL half is skipped locally and FAILS when ``CI=true``, so CI can't go green by skipping.
Each PostgreSQL test starts from a blank database: the fixture drops the store's tables first
(so don't point this at a database you care about, and don't run these tests in parallel
against one database).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator

import pytest
import sqlalchemy as sa

from chatmem.store import TABLE_NAMES, Store, StoreError, mask_url, resolve_database_url

PG_ENV = "CHATMEM_TEST_DATABASE_URL"

_pg_state: dict[str, object] = {}


def _unavailable(message: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{message} (CI=true, so this is a failure, not a skip)", pytrace=False)
    pytest.skip(message)


def _pg_engine() -> sa.Engine:
    """One engine per test session for resetting the test database; checked once."""
    raw = os.environ.get(PG_ENV, "").strip()
    if not raw:
        _unavailable(
            f"PostgreSQL not reachable at ${PG_ENV}: it is not set "
            '(run `eval "$(scripts/start_test_postgres.sh)"`)'
        )
    if "error" in _pg_state:
        _unavailable(str(_pg_state["error"]))
    if "engine" not in _pg_state:
        try:
            url = resolve_database_url(raw)
            engine = sa.create_engine(url, connect_args={"connect_timeout": 5})
            with engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
        except (StoreError, sa.exc.SQLAlchemyError) as exc:
            reason = " ".join(str(getattr(exc, "orig", None) or exc).split())
            _pg_state["error"] = f"PostgreSQL not reachable at {mask_url(raw)}: {reason}"
            _unavailable(str(_pg_state["error"]))
        _pg_state["engine"] = engine
        _pg_state["url"] = raw
    engine = _pg_state["engine"]
    assert isinstance(engine, sa.Engine)
    return engine


def reset_postgres() -> str:
    """Drop every chatmem table in the test database; return its URL."""
    engine = _pg_engine()
    with engine.begin() as conn:
        for name in TABLE_NAMES:
            conn.execute(sa.text(f"DROP TABLE IF EXISTS {name} CASCADE"))
    return str(_pg_state["url"])


@pytest.fixture(scope="session", autouse=True)
def _dispose_pg_engine() -> Iterator[None]:
    yield
    engine = _pg_state.pop("engine", None)
    if isinstance(engine, sa.Engine):
        engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path) -> str:
    """A URL to a blank database: a SQLite file in tmp_path, or the emptied test PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'chatmem.db'}"
    return reset_postgres()


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    with Store(store_url) as opened:
        yield opened


@pytest.fixture
def db_counts() -> Callable[[Store], dict[str, int]]:
    """``db_counts(store)``: rows per data table, read past the Store API."""
    return table_counts


def table_counts(store: Store) -> dict[str, int]:
    """Rows per data table, read straight from the database (not through the Store API)."""
    engine = store._engine
    assert engine is not None
    with engine.connect() as conn:
        return {
            name: int(conn.scalar(sa.text(f"SELECT count(*) FROM {name}")) or 0)
            for name in ("conversations", "messages", "summaries", "events")
        }


def open_stores_at_once(url: str, count: int = 4) -> tuple[list[Store], list[BaseException]]:
    """Open ``count`` Stores on ``url`` from as many threads released together (a barrier):
    the stores that opened, and the errors of those that did not. Close the stores after."""
    stores: list[Store] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(count)

    def open_store() -> None:
        barrier.wait()
        try:
            stores.append(Store(url))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_store) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return stores, errors

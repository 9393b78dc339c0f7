"""Shared pytest fixtures, and a PostgreSQL database of its own for each pytest-xdist worker."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.fakes import FakeServerProcess, start_server_process

PG_ENV = "CHATMEM_TEST_DATABASE_URL"


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist (``-n 2``) each worker gets its own test database, ``<name>_gw0``...:
    the PostgreSQL tests drop the store's tables before each test, so two workers must never
    share one. The database is created on the same server when missing."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    url = os.environ.get(PG_ENV, "").strip()
    if not worker or not url:
        return
    import sqlalchemy as sa

    base = sa.make_url(url)
    name = f"{base.database}_{worker}"
    try:
        engine = sa.create_engine(base, isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            found = conn.execute(
                sa.text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}
            ).first()
            if found is None:
                conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        engine.dispose()
    except sa.exc.SQLAlchemyError:
        return  # unreachable: the PostgreSQL tests say so themselves
    os.environ[PG_ENV] = base.set(database=name).render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def fake_server() -> Iterator[FakeServerProcess]:
    """The fake OpenAI server as a subprocess for the whole session.

    Attributes: ``.url`` (``http://127.0.0.1:PORT/v1``), ``.base``, ``.port``, ``.control``.
    """
    try:
        server = start_server_process(timeout=15)
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def fake(fake_server: FakeServerProcess) -> FakeServerProcess:
    """The session's fake server, reset (config, failure queue, request log) for this test."""
    fake_server.control.reset()
    return fake_server

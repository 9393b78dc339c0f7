"""Shared pytest fixtures."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fakes import FakeServerProcess, start_server_process


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

"""Test doubles: a real OpenAI-compatible HTTP server (see README.md in this folder).

Names are loaded lazily so ``python -m tests.fakes.openai_server`` runs without a warning.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tests.fakes.openai_server import (
        SUMMARY_MARKER,
        FakeControl,
        FakeOpenAIServer,
        FakeServerProcess,
        free_port,
        start_server_process,
    )

__all__ = [
    "SUMMARY_MARKER",
    "FakeControl",
    "FakeOpenAIServer",
    "FakeServerProcess",
    "free_port",
    "start_server_process",
]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from tests.fakes import openai_server

        return getattr(openai_server, name)
    raise AttributeError(f"module 'tests.fakes' has no attribute {name!r}")

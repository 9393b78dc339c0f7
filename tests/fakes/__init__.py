"""Test doubles: a real OpenAI-compatible HTTP server (see README.md in this folder).

* ``replies.py``: what the fake model answers (facts, recaps, token estimates, failures);
* ``handler.py``: the HTTP side (routes, SSE streaming, usage, error bodies);
* ``server_process.py``: running it in this process or as a subprocess, and its command line;
* ``app_process.py``: ``streamlit run app.py`` as a subprocess (e2e tests and bench_app).

Names are loaded lazily so ``python -m tests.fakes.server_process`` runs without a warning.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tests.fakes.replies import SUMMARY_MARKER, embed_text
    from tests.fakes.server_process import (
        FakeControl,
        FakeOpenAIServer,
        FakeServerProcess,
        free_port,
        start_server_process,
    )

_MODULES = {
    "SUMMARY_MARKER": "tests.fakes.replies",
    "embed_text": "tests.fakes.replies",
    "FakeControl": "tests.fakes.server_process",
    "FakeOpenAIServer": "tests.fakes.server_process",
    "FakeServerProcess": "tests.fakes.server_process",
    "free_port": "tests.fakes.server_process",
    "start_server_process": "tests.fakes.server_process",
}

__all__ = [
    "SUMMARY_MARKER",
    "FakeControl",
    "FakeOpenAIServer",
    "FakeServerProcess",
    "embed_text",
    "free_port",
    "start_server_process",
]


def __getattr__(name: str) -> Any:
    module = _MODULES.get(name)
    if module is None:
        raise AttributeError(f"module 'tests.fakes' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)

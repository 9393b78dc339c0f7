"""Settings: environment, .env and secrets.toml, with clear messages for bad values."""

from __future__ import annotations

import base64
import re

import pytest

from chatmem.config import Settings, SettingsError, load_settings


def test_defaults_with_nothing_set(tmp_path) -> None:
    s = load_settings({}, root=tmp_path)
    assert s == Settings()
    assert s.uses_local_model
    assert s.max_tokens == 3000 and s.keep_recent == 6


def test_precedence_env_over_dotenv_over_secrets(tmp_path) -> None:
    (tmp_path / ".streamlit").mkdir()
    (tmp_path / ".streamlit" / "secrets.toml").write_text(
        'CHATMEM_MAX_TOKENS = "1000"\nCHATMEM_KEEP_RECENT = 10\nCHATMEM_MODEL = "gpt-4"\n'
    )
    (tmp_path / ".env").write_text("CHATMEM_MAX_TOKENS=2000\nCHATMEM_KEEP_RECENT=8\n")
    s = load_settings({"CHATMEM_MAX_TOKENS": "2500"}, root=tmp_path)
    assert s.max_tokens == 2500  # environment wins
    assert s.keep_recent == 8  # .env beats secrets.toml
    assert s.model == "gpt-4"  # secrets.toml fills the rest


def test_key_never_in_repr(tmp_path) -> None:
    s = load_settings({"OPENAI_API_KEY": "sk-test-SECRET123"}, root=tmp_path)
    assert s.api_key == "sk-test-SECRET123"
    assert "SECRET123" not in repr(s)
    assert not s.uses_local_model


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"CHATMEM_MAX_TOKENS": "lots"}, "CHATMEM_MAX_TOKENS must be a whole number"),
        ({"CHATMEM_MAX_TOKENS": "10"}, "CHATMEM_MAX_TOKENS must be at least 256"),
        ({"CHATMEM_KEEP_RECENT": "99"}, "CHATMEM_KEEP_RECENT must be from 2 to 50"),
        ({"CHATMEM_TIMEOUT": "soon"}, "CHATMEM_TIMEOUT must be a number"),
        ({"OPENAI_BASE_URL": "localhost:11434"}, "OPENAI_BASE_URL must be an http(s) URL"),
        ({"OPENAI_BASE_URL": "http://host:notaport/v1"}, "is not a valid URL"),
        ({"OPENAI_BASE_URL": "http://[::1/v1"}, "is not a valid URL"),
        ({"CHATMEM_DATABASE_URL": "mysql://x@y/z"}, "must start with sqlite:/// or postgresql://"),
        ({"CHATMEM_DATABASE_URL": "postgresql:///nohost"}, "needs a host name"),
    ],
)
def test_bad_settings_say_what_is_wrong(tmp_path, env: dict, needle: str) -> None:
    with pytest.raises(SettingsError, match=re.escape(needle)):
        load_settings(env, root=tmp_path)


def test_broken_secrets_file_is_named(tmp_path) -> None:
    (tmp_path / ".streamlit").mkdir()
    (tmp_path / ".streamlit" / "secrets.toml").write_text("this is = = not toml")
    with pytest.raises(SettingsError, match=r"secrets\.toml is not valid TOML"):
        load_settings({}, root=tmp_path)


def test_env_example_lists_every_setting() -> None:
    from pathlib import Path

    from chatmem.config import ENV_NAMES

    example = (Path(__file__).parents[2] / ".env.example").read_text()
    for name in ENV_NAMES.values():
        assert f"{name}=" in example, f"{name} is missing from .env.example"


def test_repr_masks_url_passwords(tmp_path) -> None:
    s = load_settings(
        {
            "OPENAI_BASE_URL": "http://user:hunter22@localhost:8000/v1",
            "CHATMEM_DATABASE_URL": "postgresql://app:s3cret-pw@db:5432/chat",
        },
        root=tmp_path,
    )
    shown = repr(s)
    assert "hunter22" not in shown and "s3cret-pw" not in shown
    # each password, and the Basic-auth token each URL's user and password make
    tokens = {base64.b64encode(pair).decode() for pair in (b"user:hunter22", b"app:s3cret-pw")}
    assert set(s.secrets()) == {"hunter22", "s3cret-pw", *tokens}


def test_chat_memory_arguments_reach_the_session_each_to_its_own_setting() -> None:
    """``ChatMemory`` hands its arguments to ``Overrides`` by position: distinct values for
    every one of them must land in the setting of the same name."""
    from chatmem import ChatMemory, OpenAIChat

    nowhere = "http://127.0.0.1:9/v1"  # no call is made while a session is built
    chat = OpenAIChat("gpt-4o-mini", api_key="k", base_url=nowhere)
    summaries = OpenAIChat("gpt-4o", api_key="k", base_url=nowhere)
    bot = ChatMemory(
        "System S.",
        1_000,
        7,
        chat,
        summary_max_tokens=123,
        reply_reserve=345,
        summary_model=summaries,
        settings=Settings(),
        background=False,
    )
    assert bot.memory.system == "System S."
    assert (bot.memory.max_tokens, bot.memory.keep_recent) == (1_000, 7)
    assert (bot.memory.summary_max_tokens, bot.memory.reply_reserve) == (123, 345)
    assert bot.model is chat and bot.summarizer.model is summaries

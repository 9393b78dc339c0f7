"""The bundled local model answers offline (a real llama.cpp run of SmolLM2-135M)."""

from __future__ import annotations

import pytest

from chatmem import ChatMemory, LocalChat, ModelError, Settings
from chatmem.models import local_model_path

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def local() -> LocalChat:
    return LocalChat()


def test_gguf_is_found_without_importing_llm() -> None:
    path = local_model_path()
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert path.stat().st_size > 50_000_000


def test_local_model_answers_a_short_chat_offline(local: LocalChat) -> None:
    bot = ChatMemory(
        system="You are a friendly assistant. Be concise.",
        max_tokens=1024,
        model=local,
        settings=Settings(),
        reply_reserve=48,
        background=False,
    )
    assert bot.model_label == "local SmolLM2-135M (offline)"
    reply = bot.ask("Hi! What is the capital of France?")
    assert isinstance(reply, str) and reply.strip()
    assert bot.stats[-1].prompt_reported and bot.stats[-1].prompt_reported > 10
    second = bot.ask("Thanks. Say hello back in three words.")
    assert second.strip()
    assert len(bot.recent) == 4


def test_local_token_counts_use_its_own_tokenizer(local: LocalChat) -> None:
    text = "Hello world, this is SmolLM2 counting tokens."
    ids = local._llm.tokenize(text.encode(), add_bos=False, special=False)
    assert local.counter.text(text) == len(ids)


def test_no_key_means_local_model(monkeypatch, tmp_path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    bot = ChatMemory(max_tokens=1000, reply_reserve=32)
    assert isinstance(bot.model, LocalChat)


def test_missing_model_file_is_a_clear_message() -> None:
    with pytest.raises(ModelError, match="does not exist"):
        LocalChat("/nonexistent/model.gguf")

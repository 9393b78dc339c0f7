"""Against the real ``python -m llama_cpp.server`` serving the bundled SmolLM2 GGUF, with a
small window (``--n_ctx 1024``) and its default ``interrupt_requests`` (a new request ends the
one in progress): exact counts, budgets kept by the server's own count, a real overflow shrunk
and answered, usage recorded though its streams carry none, folds that are not cut."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from bench.bench_framing import llama_server
from chatmem import ChatMemory, OpenAIChat, Settings
from chatmem.models import local_model_path
from chatmem.servers import ServerProfile

pytestmark = pytest.mark.slow

N_CTX = 1024
SYSTEM = "You are a friendly assistant. Answer in one or two sentences."
NORWEGIAN = (
    "Hei! Jeg heter Åse og bor i Tromsø, der nordlyset danser over fjellene om vinteren. "
    "Kan du fortelle meg hva som er viktig å tenke på når man går på ski i mørketiden? "
)
LONG = (
    "Here is a longer note about my garden: the tomatoes ripened late this year because "
    "of the cold spring, the beans climbed the fence by July, and the old apple tree by "
    "the shed gave more fruit than ever. I keep a notebook with dates and weights. "
)


TURNS = 10  # two folds or more at max_tokens 400; turns 3 and 9 are the long Norwegian ones


def turn_text(i: int) -> str:
    if i % 3 == 0:
        return NORWEGIAN * (1 + i % 2) + f"(spørsmål {i})"
    if i % 3 == 1:
        return LONG * (1 + i % 2) + f"Question {i}: what should I plant next?"
    return f"Short one, number {i}: thanks!"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    log = tmp_path_factory.mktemp("llama") / "server.log"
    with llama_server(local_model_path(), log, n_ctx=N_CTX, interrupt_requests=True) as url:
        yield url


def server_prompt_tokens(url: str, messages: list[dict[str, Any]]) -> int:
    """The server's own count of a request's prompt (a one-token, non-streamed call)."""
    client = openai.OpenAI(base_url=url, api_key="none", max_retries=2)
    answer = client.chat.completions.create(model="local", messages=messages, max_tokens=1)  # type: ignore[arg-type]
    assert answer.usage is not None
    return answer.usage.prompt_tokens


def make_bot(url: str, **kw: Any) -> ChatMemory:
    model = OpenAIChat(
        "local", base_url=url, max_retries=1, timeout=120, context_window=kw.pop("window", None)
    )
    kw.setdefault("reply_reserve", 48)
    kw.setdefault("summary_max_tokens", 40)
    return ChatMemory(system=SYSTEM, model=model, settings=Settings(), **kw)


def test_probe_finds_the_server_and_counts_as_it_does(server: str) -> None:
    model = OpenAIChat("local", base_url=server, max_retries=1)
    profile: ServerProfile = model.profile
    assert profile.kind == "llama-cpp-python" and profile.template_ok
    assert profile.interrupts and model.interrupts
    assert model.counter.exactness == "exact (local tokenizer)"
    # the window is not published: the server's default is assumed, and the user is told
    assert model.context_window == 2048 and model.notice and "--n_ctx" in model.notice
    # asked for "local", the server answers with the one model it serves: the label says which
    assert model.label.startswith(f"{local_model_path().name} at http://127.0.0.1:")
    for messages in (
        [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Hi"}],
        [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": NORWEGIAN * 3},
            {
                "role": "assistant",
                "content": "Det er lurt å ha hodelykt 🔦 og varme klær.\n\n- a\n- b",
            },
            {"role": "user", "content": LONG * 2 + "  trailing spaces  "},
        ],
    ):
        assert model.counter.messages(messages) == server_prompt_tokens(server, messages)
        assert profile.count_prompt is not None
        assert profile.count_prompt(messages) == model.counter.messages(messages)


@pytest.mark.timeout(2400)  # this machine's CPU evaluates a prompt at ~15 tokens/s under load
def test_ten_turns_stay_within_max_tokens_by_the_servers_count(server: str) -> None:
    bot = make_bot(server, window=N_CTX, max_tokens=400, keep_recent=4, reply_reserve=16)
    sent: list[list[dict[str, Any]]] = []
    for i in range(TURNS):
        bot.ask(turn_text(i))
        assert bot.last_context is not None
        sent.append(bot.last_context.messages)
    bot.close()
    assert len([e for e in bot.events if e.kind == "fold"]) >= 2
    chat = [s for s in bot.stats if s.kind == "chat"]
    assert len(chat) == TURNS
    # usage recorded though the server's streams carry none: the whole request counted
    # again by its tokenizer, independently of the per-message counts the budget used
    assert all(s.prompt_reported is not None and s.counted_by == "tokenizer" for s in chat)
    assert [s.prompt_reported for s in chat] == [s.prompt_estimate for s in chat]
    assert max(s.prompt_estimate for s in chat) <= 400
    assert max(s.prompt_estimate for s in chat) > 300  # the budget was really used
    # the server's own count (a real call each) of the largest requests and a Norwegian one
    largest = [*sorted(range(TURNS), key=lambda i: chat[i].prompt_estimate)[-3:], 9]
    for i in largest:
        assert server_prompt_tokens(server, sent[i]) == chat[i].prompt_estimate <= 400


@pytest.mark.timeout(1200)
def test_a_real_overflow_is_shrunk_and_answered(server: str) -> None:
    # the server is not told: chatmem assumes llama-cpp-python's default window of 2,048
    bot = make_bot(server, max_tokens=1800, keep_recent=20, background=False)
    answered = 0
    for i in range(8):
        bot.ask(LONG * 3 + f"Part {i}.")
        answered += 1
        if any(e.kind == "context_shrunk" for e in bot.events):
            break
    shrunk = [e for e in bot.events if e.kind == "context_shrunk"]
    assert shrunk, "no request went over the real window"
    assert shrunk[0].data["limit"] and shrunk[0].data["server_prompt"] >= N_CTX
    assert bot.model.context_window == N_CTX  # learnt from the server's error
    assert bot.max_tokens == N_CTX - bot.reply_reserve
    assert not any(e.kind == "error" for e in bot.events)
    assert (
        bot.stats[-1].kind == "chat" and len([s for s in bot.stats if s.kind == "chat"]) == answered
    )
    assert bot.last_context is not None
    assert server_prompt_tokens(server, bot.last_context.messages) <= N_CTX - bot.reply_reserve


@pytest.mark.timeout(1200)
def test_a_fold_survives_a_chat_request_arriving_during_it(server: str) -> None:
    bot = make_bot(server, window=N_CTX, max_tokens=400, keep_recent=2, summary_max_tokens=40)
    landed = threading.Event()
    bot.on_fold(lambda event: landed.set())
    while not bot.folding:
        bot.ask(LONG + "Tell me more.")
        assert len(bot.stats) < 20
    # the fold's summary call is streaming now; a chat request arrives at once
    assert bot.ask("And what about the beans?").strip()
    assert landed.wait(900)
    kinds = [e.kind for e in bot.events]
    assert "fold" in kinds and "fold_failed" not in kinds, kinds
    bot.close()


@pytest.mark.timeout(2400)
def test_a_fold_cut_by_another_client_is_detected_and_retried(server: str) -> None:
    """Another client's request ends the fold's stream with no finish reason: the fold is
    recorded as failed, and the next turn folds again."""
    bot = make_bot(server, window=N_CTX, max_tokens=400, keep_recent=2, summary_max_tokens=40)
    while not bot.folding:
        bot.ask(LONG + "Tell me more.")
        assert len(bot.stats) < 20
    time.sleep(0.7)  # the fold's summary is streaming by now
    other = openai.OpenAI(base_url=server, api_key="none", max_retries=2)
    other.chat.completions.create(  # type: ignore[call-overload]
        model="local", messages=[{"role": "user", "content": "Hi"}], max_tokens=2
    )
    bot.wait_for_fold(900)
    failed = [e for e in bot.events if e.kind == "fold_failed"]
    assert failed and "cut off" in failed[-1].message
    bot.ask("One more question about apples?")
    bot.wait_for_fold(900)
    assert bot.events[-1].kind == "fold" or any(
        e.kind == "fold" for e in bot.events[bot.events.index(failed[-1]) :]
    )
    bot.close()

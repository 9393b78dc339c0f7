"""Tests of the fake OpenAI-compatible server itself, through the real openai SDK."""

from __future__ import annotations

import http.client
import json
import math
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.fakes import FakeOpenAIServer, FakeServerProcess, start_server_process
from tests.fakes.replies import build_recap, estimate_message_tokens, extract_facts

RECAP_SYSTEM = "You maintain a running recap of the conversation. Keep names and numbers."


_clients: list[openai.OpenAI] = []


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    yield
    while _clients:
        _clients.pop().close()


def client(fake: Any, timeout: float = 5.0) -> openai.OpenAI:
    api = openai.OpenAI(base_url=fake.url, api_key="test-key", max_retries=0, timeout=timeout)
    _clients.append(api)
    return api


def ask(fake: Any, *messages: dict[str, str], **kw: Any) -> Any:
    return client(fake).chat.completions.create(model="gpt-4o-mini", messages=list(messages), **kw)


def user(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


def system(text: str) -> dict[str, str]:
    return {"role": "system", "content": text}


def raw_post(fake: Any, path: str, body: bytes) -> tuple[int, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", fake.port, timeout=5)
    try:
        conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


# --------------------------------------------------------------------------- replies


def test_non_streaming_reply_shape_and_usage(fake: FakeServerProcess) -> None:
    response = ask(fake, system("Be concise."), user("Hi, my name is Sam."))
    choice = response.choices[0]
    assert choice.message.content == "You said: Hi, my name is Sam."
    assert choice.message.role == "assistant"
    assert choice.finish_reason == "stop"
    assert response.object == "chat.completion"
    assert response.model == "gpt-4o-mini"
    assert response.id.startswith("chatcmpl-")
    assert response.created > 0
    # "Be concise ." = 3 pieces, "Hi , my name is Sam ." = 7 pieces, 4 per message, 3 to prime.
    assert response.usage.prompt_tokens == 3 + 7 + 2 * 4 + 3
    assert response.usage.completion_tokens == 10  # "You said : Hi , my name is Sam ."
    assert response.usage.total_tokens == response.usage.prompt_tokens + 10


def test_same_request_same_reply_and_twelve_word_echo(fake: FakeServerProcess) -> None:
    text = "one two three four five six seven eight nine ten eleven twelve thirteen fourteen"
    first = ask(fake, user(text)).choices[0].message.content
    second = ask(fake, user(text)).choices[0].message.content
    assert first == second
    assert first == "You said: " + " ".join(text.split()[:12])


def test_streaming_joined_equals_non_streaming_and_usage_chunk(fake: FakeServerProcess) -> None:
    messages = [system("Be concise."), user("Tell me something about the weather in Paris")]
    expected = ask(fake, *messages).choices[0].message.content
    stream = client(fake).chat.completions.create(
        model="gpt-4o-mini",
        messages=messages,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    pieces = [
        c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content
    ]
    assert len(pieces) > 3, "the reply must arrive in several chunks"
    assert "".join(pieces) == expected
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "stop"
    last = chunks[-1]
    assert last.choices == []
    assert last.usage is not None
    assert last.usage.prompt_tokens == estimate_message_tokens(messages)
    assert last.usage.total_tokens == last.usage.prompt_tokens + last.usage.completion_tokens
    assert all(c.object == "chat.completion.chunk" for c in chunks)


def test_streaming_without_include_usage_has_no_usage_chunk(fake: FakeServerProcess) -> None:
    chunks = list(
        client(fake).chat.completions.create(model="m", messages=[user("hello there")], stream=True)
    )
    assert all(c.choices for c in chunks)
    assert all(c.usage is None for c in chunks)


def test_max_tokens_truncates_with_finish_reason_length(fake: FakeServerProcess) -> None:
    fake.control.config(reply_words=40)
    response = ask(fake, user("please say a lot"), max_tokens=8)
    assert response.choices[0].finish_reason == "length"
    assert 0 < response.usage.completion_tokens <= 8
    full = ask(fake, user("please say a lot"))
    assert full.choices[0].finish_reason == "stop"
    assert len(full.choices[0].message.content.split()) == 40


def test_question_answered_from_earlier_statement(fake: FakeServerProcess) -> None:
    answer = ask(
        fake,
        user("Hi, my name is Sam."),
        {"role": "assistant", "content": "Nice to meet you."},
        user("What is my name?"),
    )
    assert answer.choices[0].message.content == "Your name is Sam."
    unknown = ask(fake, user("my name is Sam"), user("what's my favourite colour?"))
    assert unknown.choices[0].message.content == "I don't know your favourite colour."


def test_question_answered_from_recap_in_system_message(fake: FakeServerProcess) -> None:
    recap = "Earlier conversation (untrusted recap):\n- The user's dog is Rex.\n"
    later = ask(fake, system(recap), user("my dog is Bella"), user("what is my dog?"))
    assert later.choices[0].message.content == "Your dog is Bella."
    only_recap = ask(fake, system(recap), user("What is my dog"))
    assert only_recap.choices[0].message.content == "Your dog is Rex."


# --------------------------------------------------------------------------- summaries


def test_summary_request_builds_recap_and_carries_it_forward(fake: FakeServerProcess) -> None:
    first = (
        ask(
            fake,
            system(RECAP_SYSTEM),
            user("Transcript:\nuser: Hi, my name is Sam.\nuser: My favourite colour is blue!"),
        )
        .choices[0]
        .message.content
    )
    assert first == "- The user's name is Sam.\n- The user's favourite colour is blue."
    second = (
        ask(
            fake,
            system("Update the RUNNING RECAP."),
            user(
                f"Previous recap:\n{first}\nNew turns:\nuser: my dog is Rex\nuser: my name is Alex"
            ),
        )
        .choices[0]
        .message.content
    )
    assert second.splitlines() == [
        "- The user's name is Alex.",
        "- The user's favourite colour is blue.",
        "- The user's dog is Rex.",
    ]
    logged = fake.control.requests()
    assert [e["kind"] for e in logged] == ["summary", "summary"]
    assert all(e["summary"] for e in logged)
    assert logged[-1]["body"]["messages"][0]["content"] == "Update the RUNNING RECAP."


def test_summary_without_facts_and_fixed_length(fake: FakeServerProcess) -> None:
    empty = ask(fake, system(RECAP_SYSTEM), user("hello")).choices[0].message.content
    assert empty == "- No durable facts yet."
    fake.control.config(summary_words=50)
    padded = ask(fake, system(RECAP_SYSTEM), user("my name is Sam")).choices[0].message.content
    assert padded.startswith("- The user's name is Sam.\n")
    assert len(padded.split()) == 50
    assert "Recap filler 0. Recap filler 1." in padded  # numbered: not read as a loop


def test_recap_is_not_triggered_by_user_messages(fake: FakeServerProcess) -> None:
    reply = ask(fake, user("please write a running recap")).choices[0].message.content
    assert reply.startswith("You said:")
    assert fake.control.requests()[0]["kind"] == "chat"


def test_fact_extraction_ignores_the_fakes_own_cut_echo() -> None:
    texts = [
        "user: I wanted to say that my favourite food is spicy ramen noodles today",
        "assistant: You said: I wanted to say that my favourite food is spicy",
    ]
    assert extract_facts(texts) == {"favourite food": "spicy ramen noodles today"}
    assert build_recap([], summary_words=3) == "- No durable"


# --------------------------------------------------------------------------- failures


def test_429_rate_limit_with_retry_after(fake: FakeServerProcess) -> None:
    fake.control.fail({"kind": "429", "retry_after": 7})
    with pytest.raises(openai.RateLimitError) as caught:
        ask(fake, user("hi"))
    assert caught.value.status_code == 429
    assert caught.value.response.headers["retry-after"] == "7"
    assert caught.value.body["type"] == "rate_limit_error"
    # The failure was consumed: the next request succeeds.
    assert ask(fake, user("hi")).choices[0].message.content == "You said: hi"


def test_500_and_503(fake: FakeServerProcess) -> None:
    assert fake.control.fail("500", {"kind": "503"}) == 2
    with pytest.raises(openai.InternalServerError) as first:
        ask(fake, user("hi"))
    assert first.value.status_code == 500
    with pytest.raises(openai.APIStatusError) as second:
        ask(fake, user("hi"))
    assert second.value.status_code == 503
    statuses = [e["status"] for e in fake.control.requests()]
    assert statuses == [500, 503]


def test_timeout(fake: FakeServerProcess) -> None:
    fake.control.fail({"kind": "timeout", "seconds": 2})
    started = time.monotonic()
    with pytest.raises(openai.APITimeoutError):
        client(fake, timeout=0.3).chat.completions.create(model="m", messages=[user("hi")])
    assert time.monotonic() - started < 1.5


def test_cut_non_streaming(fake: FakeServerProcess) -> None:
    fake.control.fail("cut")
    with pytest.raises(openai.APIConnectionError):
        ask(fake, user("hi"))
    assert ask(fake, user("hi again")).choices[0].message.content == "You said: hi again"


def test_cut_stream_sends_half_then_breaks(fake: FakeServerProcess) -> None:
    text = "one two three four five six seven eight nine ten"
    full = ask(fake, user(text)).choices[0].message.content
    fake.control.fail("cut")
    received: list[str] = []
    with pytest.raises((openai.APIConnectionError, httpx.TransportError)):
        stream = client(fake).chat.completions.create(model="m", messages=[user(text)], stream=True)
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                received.append(chunk.choices[0].delta.content)
    assert received, "some chunks arrive before the cut"
    assert full.startswith("".join(received))
    assert len("".join(received)) < len(full)


def test_injected_context_length_error(fake: FakeServerProcess) -> None:
    fake.control.fail({"kind": "context_length"})
    with pytest.raises(openai.BadRequestError) as caught:
        ask(fake, user("short"))
    error = caught.value.body
    assert caught.value.status_code == 400
    assert error["code"] == "context_length_exceeded"
    assert error["type"] == "invalid_request_error"
    assert error["param"] == "messages"
    assert error["message"] == (
        "This model's maximum context length is 4096 tokens. However, your messages resulted "
        "in 4097 tokens. Please reduce the length of the messages."
    )


def test_configured_context_window_rejects_long_prompts(fake: FakeServerProcess) -> None:
    fake.control.config(context_window=50)
    long_messages = [user("word " * 60)]
    tokens = estimate_message_tokens(long_messages)
    with pytest.raises(openai.BadRequestError) as caught:
        ask(fake, *long_messages)
    assert caught.value.body["code"] == "context_length_exceeded"
    assert "maximum context length is 50 tokens" in caught.value.body["message"]
    assert f"resulted in {tokens} tokens" in caught.value.body["message"]
    assert ask(fake, user("short")).choices[0].finish_reason == "stop"


def test_only_summary_failure_waits_for_a_summary_request(fake: FakeServerProcess) -> None:
    fake.control.fail({"kind": "500", "only": "summary"}, {"kind": "429", "only": "chat"})
    with pytest.raises(openai.RateLimitError):
        ask(fake, user("chat first"))
    assert ask(fake, user("chat second")).choices[0].message.content.startswith("You said:")
    with pytest.raises(openai.InternalServerError):
        ask(fake, system(RECAP_SYSTEM), user("my name is Sam"))
    assert ask(fake, system(RECAP_SYSTEM), user("my name is Sam")).choices[0].message.content
    assert fake.control.pending_failures() == []
    kinds = [(e["kind"], e["status"]) for e in fake.control.requests()]
    assert kinds == [("chat", 429), ("chat", 200), ("summary", 500), ("summary", 200)]


# --------------------------------------------------------------------------- other endpoints


def test_embeddings_shape_and_determinism(fake: FakeServerProcess) -> None:
    api = client(fake)
    first = api.embeddings.create(model="text-embedding-3-small", input=["my dog Rex", "cats"])
    again = api.embeddings.create(
        model="text-embedding-3-small", input="my dog Rex", encoding_format="float"
    )
    assert len(first.data) == 2
    vector = first.data[0].embedding
    assert len(vector) == 256
    assert math.isclose(sum(v * v for v in vector), 1.0, rel_tol=1e-5)
    assert again.data[0].embedding == pytest.approx(vector, abs=1e-6)
    assert first.data[1].embedding != pytest.approx(vector, abs=1e-6)
    assert first.usage.prompt_tokens == 4
    assert first.usage.total_tokens == 4


def test_models_list(fake: FakeServerProcess) -> None:
    ids = [m.id for m in client(fake).models.list()]
    assert "gpt-4o-mini" in ids


def test_bad_json_and_unknown_path(fake: FakeServerProcess) -> None:
    status, body = raw_post(fake, "/v1/chat/completions", b"{not json")
    assert status == 400
    assert body["error"]["type"] == "invalid_request_error"
    status, body = raw_post(fake, "/v1/chat/completions", b'{"model": "m"}')
    assert status == 400
    status, body = raw_post(fake, "/v1/nowhere", b"{}")
    assert status == 404
    assert "error" in body
    assert ask(fake, user("still alive")).choices[0].message.content == "You said: still alive"


def test_config_reset_and_unknown_keys(fake: FakeServerProcess) -> None:
    assert fake.control.config(reply_words=30)["reply_words"] == 30
    with pytest.raises(RuntimeError, match="unknown config keys"):
        fake.control.config(latency=5)
    ask(fake, user("logged"))
    fake.control.fail("500")
    assert len(fake.control.requests()) == 1
    assert len(fake.control.pending_failures()) == 1
    fake.control.reset()
    assert fake.control.config()["reply_words"] is None
    assert fake.control.pending_failures() == []
    assert fake.control.requests() == []


def test_concurrent_requests_with_latency(fake: FakeServerProcess) -> None:
    fake.control.config(latency_ms=300)
    results: list[str] = []
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            results.append(ask(fake, user(f"request {i}")).choices[0].message.content)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    elapsed = time.monotonic() - started
    assert not errors
    assert sorted(results) == sorted(f"You said: request {i}" for i in range(8))
    assert 0.3 <= elapsed < 2.0, "requests must be served concurrently, after the latency"


def test_in_process_server_and_command_line_options() -> None:
    with FakeOpenAIServer(reply_words=5) as server:
        assert server.url == f"http://127.0.0.1:{server.port}/v1"
        reply = ask(server, user("hi")).choices[0].message.content
        assert reply == "You said: hi the quick"
    with start_server_process("--context-window", "20", "--model", "local-x") as proc:
        assert proc.url.endswith("/v1")
        assert [m.id for m in client(proc).models.list()] == ["local-x"]
        with pytest.raises(openai.BadRequestError):
            ask(proc, user("word " * 30))


@pytest.mark.parametrize("module", ["tests.fakes.server_process"])
def test_command_line_under_both_module_names(module: str) -> None:
    """The command line runs under its module and the old single-module name, warning-free."""
    command = [sys.executable, "-W", "error", "-m", module, "--port", "0"]
    root = Path(__file__).resolve().parents[2]
    with subprocess.Popen(
        command, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as proc:
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
        finally:
            proc.terminate()
            _, err = proc.communicate(timeout=10)
    assert line.startswith("listening on http://127.0.0.1:"), (line, err)
    assert "Warning" not in err

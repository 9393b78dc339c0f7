"""The Compare replay: what the memory kept is read from the request the model received,
questions are asked from the end state, scripted replies spare the model, time left."""

from __future__ import annotations

from typing import Any

import pytest

from chatmem.config import Settings
from chatmem.models import LocalChat, OpenAIChat
from chatmem.replay import (
    FULL,
    ROLLING,
    STRATEGIES,
    TRIM,
    MemoryOptions,
    Progress,
    ReplayResult,
    memory_kept,
    replay,
    seconds_left,
)
from chatmem.request import Part
from chatmem.sample_conversation import (
    ASSISTANT_REPLIES,
    FACT_QUESTIONS,
    SYSTEM_PROMPT,
    USER_TURNS,
    knows,
)
from tests.fakes import FakeServerProcess

TURNS = 20


def _options(max_tokens: int = 300, keep_recent: int = 2) -> MemoryOptions:
    return MemoryOptions(
        system=SYSTEM_PROMPT,
        max_tokens=max_tokens,
        keep_recent=keep_recent,
        reply_reserve=128,
        settings=Settings(embedding_model="off"),
    )


def _replay(fake: FakeServerProcess, **kw: Any) -> ReplayResult:
    model = OpenAIChat("gpt-4o-mini", api_key="k", base_url=fake.url, max_retries=0)
    return replay(
        model,
        USER_TURNS[:TURNS],
        FACT_QUESTIONS,
        _options(),
        replies=ASSISTANT_REPLIES[:TURNS],
        **kw,
    )


def _texts(messages: list[dict[str, Any]]) -> str:
    return "\n".join(str(m.get("content") or "") for m in messages)


def test_memory_kept_is_read_from_the_request_the_model_received(
    fake: FakeServerProcess,
) -> None:
    fake.control.config(forget=True)  # the model answers nothing: only the memory is measured
    result = _replay(fake)
    # scripted replies: the only chat requests are the questions, strategy after strategy
    chats = fake.control.requests("chat")
    assert len(chats) == len(STRATEGIES) * len(FACT_QUESTIONS)
    received = iter(chats)
    for name in STRATEGIES:
        run = result.runs[name]
        for fact in FACT_QUESTIONS:
            body = next(received)["body"]
            assert body["messages"][-1] == {"role": "user", "content": fact.question}
            assert body["messages"] == [p.message for p in run.sent[fact.question]]
            in_request = knows(_texts(body["messages"][:-1]), fact)
            assert bool(run.kept(fact)) == in_request, (name, fact.question)
            assert not run.answered(fact)
    # trimming at this budget loses early facts; the rolling summary keeps every one of them
    # in its summary (the fake's summaries list the user's facts)
    assert result.memory_score(FULL) == len(FACT_QUESTIONS)
    assert result.memory_score(TRIM) < len(FACT_QUESTIONS) - 2
    assert result.memory_score(ROLLING) == len(FACT_QUESTIONS)
    for fact in FACT_QUESTIONS:
        assert "summary" in (result.runs[ROLLING].kept(fact) or ""), fact.question
    assert result.runs[FULL].kept(FACT_QUESTIONS[0]) == "verbatim"
    assert result.score(ROLLING) == 0


def test_each_question_is_asked_from_the_end_state(fake: FakeServerProcess) -> None:
    result = _replay(fake)
    asked = {f.question for f in FACT_QUESTIONS}
    for entry in fake.control.requests("chat"):
        users = [m["content"] for m in entry["body"]["messages"] if m["role"] == "user"]
        assert sum(u in asked for u in users) == 1, users  # never after an earlier question
    # the answers use the memory: the fake answers from what it is sent
    assert result.score(FULL) == result.score(ROLLING) == len(FACT_QUESTIONS)
    assert result.score(TRIM) == result.memory_score(TRIM)
    # the answer's cap is short, whatever the reply reserve
    assert {e["body"]["max_tokens"] for e in fake.control.requests("chat")} == {32}


def test_replies_from_the_model_call_it_every_turn(fake: FakeServerProcess) -> None:
    model = OpenAIChat("gpt-4o-mini", api_key="k", base_url=fake.url, max_retries=0)
    result = replay(model, USER_TURNS[:12], FACT_QUESTIONS[:2], _options(), replies=None)
    assert not result.scripted
    assert len(fake.control.requests("chat")) == len(STRATEGIES) * (12 + 2)


def test_a_failing_model_still_leaves_the_memory_measured(fake: FakeServerProcess) -> None:
    fake.control.fail(*[{"kind": "500", "only": "chat"}] * 3)
    result = _replay(fake)
    for name in STRATEGIES:
        run = result.runs[name]
        assert run.model_failed and run.stopped_at is None, name
        assert not run.answers  # one failure stops its model calls
        assert len(run.sent) == len(FACT_QUESTIONS)
    assert result.memory_score(ROLLING) == len(FACT_QUESTIONS)
    assert len(fake.control.requests("chat")) == len(STRATEGIES)


def test_scripted_replies_must_match_the_turns(fake: FakeServerProcess) -> None:
    model = OpenAIChat("gpt-4o-mini", api_key="k", base_url=fake.url, max_retries=0)
    with pytest.raises(ValueError, match="3 scripted replies for 4 turns"):
        replay(model, USER_TURNS[:4], FACT_QUESTIONS, _options(), replies=ASSISTANT_REPLIES[:3])


def test_memory_kept_names_where_the_fact_was() -> None:
    name = FACT_QUESTIONS[0]
    parts = (
        Part("system", {"role": "system", "content": "Be concise."}, 3),
        Part("summary", {"role": "system", "content": "The user's name is Sam."}, 6),
        Part("verbatim", {"role": "user", "content": "Same again, please."}, 4),
        Part("verbatim", {"role": "user", "content": "sam here"}, 2),
    )
    assert memory_kept(parts, name) == "summary, verbatim"
    assert memory_kept(parts[:1] + parts[2:3], name) is None  # "Same" is not "Sam"


def test_the_script_never_repeats_an_early_fact_in_a_reply() -> None:
    assert len(ASSISTANT_REPLIES) == len(USER_TURNS)
    for reply in ASSISTANT_REPLIES:
        assert not [f.expected for f in FACT_QUESTIONS if knows(reply, f)], reply


def test_time_left_from_each_kind_of_step() -> None:
    assert seconds_left({"turn": 0.0}, {"turn": 0}, {"turn": 5}) is None
    # 4 turns took 2 s; 2 questions took 6 s: 2 turns and 3 questions left
    assert seconds_left(
        {"turn": 2.0, "question": 6.0}, {"turn": 4, "question": 2}, {"turn": 2, "question": 3}
    ) == pytest.approx(2 * 0.5 + 3 * 3.0)
    # no question yet: the mean step so far stands in
    assert seconds_left(
        {"turn": 2.0, "question": 0.0}, {"turn": 4, "question": 0}, {"turn": 0, "question": 3}
    ) == pytest.approx(1.5)


def test_progress_reports_every_step_with_the_time_left(fake: FakeServerProcess) -> None:
    steps: list[Progress] = []
    ticks = iter(range(10_000))
    _replay(fake, progress=steps.append, clock=lambda: float(next(ticks)))
    total = len(STRATEGIES) * (TURNS + len(FACT_QUESTIONS))
    assert [s.done for s in steps] == list(range(1, total + 1))
    assert {s.total for s in steps} == {total}
    assert steps[0].seconds_left is not None and steps[0].seconds_left > 0
    assert steps[-1].seconds_left == 0
    assert steps[-1].label == f"{ROLLING}: {FACT_QUESTIONS[-1].question}"


@pytest.mark.slow
def test_the_bundled_model_replays_end_to_end() -> None:
    model = LocalChat()
    questions = (FACT_QUESTIONS[0], FACT_QUESTIONS[5])  # the name (turn 1), the allergy (6)
    turns = 6
    result = replay(
        model,
        USER_TURNS[:turns],
        questions,
        _options(max_tokens=256, keep_recent=2),
        replies=ASSISTANT_REPLIES[:turns],
        answer_tokens=16,
    )
    full, trimmed, rolling = (result.runs[name] for name in STRATEGIES)
    for run in (full, trimmed, rolling):
        assert run.stopped is None, (run.name, run.stopped)
        assert all(run.answers[q.question].strip() for q in questions), run.answers
    # the whole script went to the model with full history; trimming lost the first fact
    assert len(full.sent[questions[0].question]) == 1 + 2 * turns + 1
    assert result.memory_score(FULL) == 2
    assert trimmed.kept(questions[0]) is None
    assert result.memory_score(TRIM) < 2
    assert result.memory_score(ROLLING) >= result.memory_score(TRIM)
    for run in (full, trimmed, rolling):  # each count is the fact's words in what was sent
        for fact in questions:
            sent = _texts([p.message for p in run.sent[fact.question]][:-1])
            assert bool(run.kept(fact)) == knows(sent, fact), (run.name, fact.question)
    assert max(rolling.prompt_tokens) <= 256 < max(full.prompt_tokens)

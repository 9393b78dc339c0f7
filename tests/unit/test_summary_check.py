"""A fold's output is checked before it may become the summary; facts are found by rules."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from chatmem.errors import SummaryError
from chatmem.facts import extract_facts, parse_notes, recap_by_rules
from chatmem.memory import Message
from chatmem.models import ReplyStream, Usage
from chatmem.summarize import Summarizer, check_summary, summary_problems
from chatmem.tokens import TokenCounter, counter_for_model

COUNTER: TokenCounter = counter_for_model("gpt-4o-mini")
count = COUNTER.text

CHAT = [
    "Hi! My name is Sam.",
    "Nice to meet you, Sam!",
    "I live in Lyon and we are moving to Oslo in March.",
    "Oslo is lovely in spring.",
    "Our budget is 2000 euros for the move.",
    "That should cover a van.",
    "I work as a nurse, and I have 3 kids.",
    "That is a busy life!",
    "We decided to rent a van, so let's book it for Friday.",
    "Good plan.",
    "Write to me at sam@example.com if anything changes.",
    "Will do.",
]


def chat(texts: Sequence[str] = CHAT, first: int = 1) -> list[Message]:
    return [
        Message(role="user" if i % 2 == 0 else "assistant", content=t, seq=first + i, tokens=9)
        for i, t in enumerate(texts)
    ]


GOOD = (
    "- The user is Sam, a nurse with 3 kids, living in Lyon.\n"
    "- Sam moves to Oslo in March with a budget of 2000 euros.\n"
    "- They decided to rent a van; booking it for Friday."
)


def test_a_good_summary_passes() -> None:
    assert summary_problems(GOOD, None, chat(), 200, count) == []
    check_summary(GOOD, None, chat(), 200, count)  # does not raise


def test_a_looping_summary_is_rejected() -> None:
    looping = " ".join(["[2018-01-01T00:00:00.00]"] * 11)
    with pytest.raises(SummaryError, match="repeats"):
        check_summary(looping, None, chat(), 500, count)
    # the same stamp on eleven lines, and glued together, loop too
    assert summary_problems("\n".join(["[2018-01-01T00:00:00.00]"] * 11), None, chat(), 500, count)
    assert summary_problems("[2018-01-01T00:00:00.00]" * 11, None, chat(), 500, count)
    assert summary_problems("Eh, " * 40, None, chat(), 500, count)


def test_an_echoed_instruction_is_rejected() -> None:
    echoed = (
        "The original recap is too long. I've rewritten it in at most 186 words:\n"
        "- The user is Sam."
    )
    with pytest.raises(SummaryError, match="talks about itself"):
        check_summary(echoed, None, chat(), 500, count)
    copied = "- Keep every concrete fact: names, numbers, amounts, dates, places.\n- Sam."
    with pytest.raises(SummaryError, match="copies the summary instructions"):
        check_summary(copied, None, chat(), 500, count)
    plain = (
        "A conversation between a user and an assistant.\n- Here is the plan: a van.\n"
        "- The user asked the assistant to book it."
    )
    assert summary_problems(plain, None, chat(), 500, count) == []
    assert summary_problems("Here is the updated recap:\n- Sam.", None, chat(), 500, count)


def test_an_over_cap_summary_is_rejected() -> None:
    assert count(GOOD) > 20
    with pytest.raises(SummaryError, match="over its cap of 20"):
        check_summary(GOOD, None, chat(), 20, count)


def test_text_from_outside_the_folded_range_is_rejected() -> None:
    messages = chat()[:6]  # seqs 1-6: name, places, budget
    quoted = GOOD + '\n- The user said "I work as a nurse, and I have 3 kids".'
    with pytest.raises(SummaryError, match="no folded message says"):
        check_summary(quoted, None, messages, 500, count)
    as_transcript = GOOD + "\n[7] user: I work as a nurse, and I have 3 kids."
    with pytest.raises(SummaryError, match="does not cover"):
        check_summary(as_transcript, None, messages, 500, count)
    invented = GOOD + "\n[3] user: I am Emily Thompson, a freelance writer."
    with pytest.raises(SummaryError, match="no folded message says"):
        check_summary(invented, None, messages, 500, count)
    # a quote the previous summary holds is not from outside
    previous = '- Sam said "I work as a nurse, and I have 3 kids".'
    assert summary_problems(quoted, previous, messages, 500, count) == []


def test_rules_find_the_facts_of_a_chat() -> None:
    facts = extract_facts(chat())
    values = "; ".join(f.value for f in facts)
    for fact in ["Sam", "Lyon", "Oslo", "March", "2000 euros", "3 kids", "Friday"]:
        assert fact in values
    assert "sam@example.com" in values
    kinds = "/".join(f.kind for f in facts)
    for kind in ["name", "place", "date", "amount", "about", "decision", "email"]:
        assert kind in kinds
    assert all(f.seq % 2 == 1 for f in facts)  # from the user's messages only
    for f in facts:  # notes are verbatim words of their message
        assert f.text in CHAT[f.seq - 1]
    assert [(f.seq, f.text) for f in parse_notes("\n".join(f.note for f in facts))] == [
        (f.seq, f.text) for f in facts
    ]


def test_an_assistant_invention_is_no_fact() -> None:
    told = chat(["What is my name?", "I'm Emily Thompson, a freelance writer from Paris."])
    assert extract_facts(told) == []


def test_a_question_states_no_fact() -> None:
    asked = chat(["How long is a train ride from Oslo to Bergen?", "About seven hours."])
    assert extract_facts(asked) == []
    told = chat(["I live in Bergen. How long is the train from Oslo?", "About seven hours."])
    assert [f.text for f in extract_facts(told)] == ["I live in Bergen."]


def test_the_rule_recap_keeps_its_outline_apart_from_the_last_note() -> None:
    text = recap_by_rules(
        None, chat(["My name is Sam.", "Hi!", "Tell me a joke.", "Ha."]), 200, count
    )
    notes, outline = text.split("\n\n")  # Markdown would run the heading into the last note
    assert "My name is Sam" in notes and outline.startswith("Earlier topics")


def test_the_rule_recap_keeps_facts_first_within_its_cap() -> None:
    first = recap_by_rules(None, chat()[:6], 200, count)
    assert "My name is Sam" in first and "2000 euros" in first
    later = chat([f"Tell me a story about a cat number {i}." for i in range(30)], first=13)
    text = recap_by_rules(first, later, 120, count)
    assert count(text) <= 120
    for fact in ["Sam", "Lyon", "2000 euros"]:
        assert fact in text  # the outline gave way, the facts stayed
    assert "cat number 0" not in text  # the oldest outline lines went first
    assert summary_problems(text, first, later, 120, count) == []


class _Scripted:
    """A chat model that answers the summary call with a fixed text."""

    name = "scripted"
    context_window = 8000

    def __init__(self, answer: str) -> None:
        self.answer = answer
        self.counter = COUNTER
        self.calls = 0

    def stream(self, messages: list[dict[str, Any]], *, max_reply_tokens: int) -> ReplyStream:
        self.calls += 1
        return ReplyStream(iter([self.answer, Usage(100, 10)]))


def test_a_model_summary_gets_notes_for_the_facts_it_lost() -> None:
    model = _Scripted("- The user greeted the assistant and talked about moving.")
    result = Summarizer(model).summarize(None, chat(), 200)  # type: ignore[arg-type]
    assert result.text.startswith(model.answer)
    for fact in ["Sam", "Oslo", "2000 euros", "3 kids", "Friday"]:
        assert fact in result.text
    assert result.text_tokens <= 200 and not result.by_rules and model.calls == 1


def test_a_looping_model_summary_is_a_failed_fold() -> None:
    model = _Scripted(" ".join(["[2018-01-01T00:00:00.00]"] * 11))
    with pytest.raises(SummaryError, match="repeats"):
        Summarizer(model).summarize(None, chat(), 200)  # type: ignore[arg-type]


def test_a_model_that_summarises_by_rules_is_not_called() -> None:
    model = _Scripted("never used")
    model.summarizes_by_rules = True  # type: ignore[attr-defined]
    result = Summarizer(model).summarize(None, chat(), 200)  # type: ignore[arg-type]
    assert model.calls == 0 and result.calls == 0 and result.by_rules
    assert "My name is Sam" in result.text

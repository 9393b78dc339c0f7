"""Default conversation titles, by rule: what the first message is about."""

from __future__ import annotations

import pytest

from chatmem.text import title_from


@pytest.mark.parametrize(
    ("first", "title"),
    [
        (
            "Hi, my name is Sam. I'm planning a trip to Lisbon in May.",
            "Planning a trip to Lisbon in May",
        ),
        (
            "Can you help me write a cover letter for a nursing job?",
            "Write a cover letter for a nursing job",
        ),
        (
            "Hey there! So, I need to fix my bike chain, it keeps slipping.",
            "Fix my bike chain, it keeps slipping",
        ),
        ("What is the capital of France?", "What is the capital of France?"),
        ("Hi, my name is Sam.", "Hi, my name is Sam."),  # nothing more to go on: as typed
        ("hello", "hello"),
    ],
)
def test_title_says_what_the_conversation_is_about(first: str, title: str) -> None:
    assert title_from(first) == title


def test_long_titles_are_cut_at_a_word() -> None:
    title = title_from("Please explain " + "very " * 30 + "long things")
    assert len(title) <= 60 and title.endswith("…") and title.startswith("Very very")

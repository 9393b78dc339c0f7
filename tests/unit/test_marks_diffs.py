"""The chat's marks and the diffs, from plain requests (no model, no store)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from chatmem.diffs import Change, request_diff, seq_ranges, text_diff
from chatmem.marks import Mark, memory_marks
from chatmem.memory import Memory, Recalled, Summary
from chatmem.tokens import TokenCounter

SYSTEM = "You are a friendly assistant."


def conversation(turns: int = 10, max_tokens: int = 400) -> Memory:
    mem = Memory(
        system=SYSTEM,
        counter=TokenCounter(lambda t: len(t.split())),
        max_tokens=max_tokens,
        recall_share=0.3,
    )
    for i in range(1, turns + 1):
        mem.add("user", f"question {i} " + "word " * 20)
        mem.add("assistant", f"answer {i} " + "word " * 20)
    return mem


def test_each_message_gets_the_mark_the_request_gives_it() -> None:
    mem = conversation()
    mem.set_summary(Summary("They talked about words.", covers_seq=6, tokens=12))
    context = mem.context([Recalled("question 2 word", seq=3, score=1.0)], limit=280)
    marks = memory_marks(context, mem.summary, {m.seq: m.tokens for m in mem.messages})
    sent = [p.seq for p in context.parts if p.kind == "verbatim"]
    assert sent and context.trimmed  # some unfolded messages were cut to fit 280 tokens
    for m in mem.messages:
        mark = marks.of(m.seq).mark
        if m.seq in sent:
            assert mark == Mark.SENT
            assert f"{m.tokens:,} tokens" in marks.of(m.seq).detail
        elif m.seq == 3:
            assert mark == Mark.RECALLED
        elif m.seq <= 6:
            assert mark == Mark.SUMMARY
        else:
            assert mark == Mark.LEFT_OUT
    assert marks.window_starts_at(min(sent))
    assert not marks.window_starts_at(min(sent) + 1)
    assert marks.of(None).mark == Mark.LEFT_OUT  # never stored
    assert marks.of(sent[-1], "incomplete").mark == Mark.LEFT_OUT  # cut off: never sent


def test_overrides_win_over_the_request() -> None:
    mem = conversation(3)
    context = mem.context()
    marks = memory_marks(context, None, overrides={1: Mark.PINNED, 2: Mark.EXCLUDED})
    assert marks.of(1).mark == Mark.PINNED
    assert marks.of(2).mark == Mark.EXCLUDED
    assert marks.of(3).mark == Mark.SENT


def test_request_diff_names_added_dropped_and_summarised() -> None:
    mem = conversation(6, max_tokens=1000)
    before = mem.context()
    assert before.trimmed == 0
    mem.add("user", "question 7 " + "word " * 20)
    mem.set_summary(Summary("Words.", covers_seq=2, tokens=8))
    after = mem.context(limit=200)  # a budget cut
    diff = request_diff(before, after, covers_seq=2)
    kept = {p.seq for p in after.parts if p.kind == "verbatim"}
    assert diff.added == (13,)
    assert diff.summarised == (1, 2)
    assert set(diff.dropped) == set(range(3, 13)) - kept
    assert diff.dropped  # the cut dropped some
    assert diff.summary_changed
    assert (diff.tokens_before, diff.tokens_after) == (before.budget.total, after.budget.total)
    assert request_diff(after, after, 2).unchanged


def test_seq_ranges() -> None:
    assert seq_ranges([7, 1, 2, 3]) == "#1–3, #7"
    assert seq_ranges([]) == ""


@given(st.text(max_size=80), st.text(max_size=80))
def test_text_diff_rebuilds_both_versions(old: str, new: str) -> None:
    runs = text_diff(old, new)
    assert "".join(t for c, t in runs if c != Change.ADDED) == old
    assert "".join(t for c, t in runs if c != Change.REMOVED) == new


def test_text_diff_marks_the_changed_words() -> None:
    runs = text_diff("Sam likes tea. Budget 2400.", "Sam likes coffee. Budget 2400.")
    assert (Change.REMOVED, "tea. ") in runs
    assert (Change.ADDED, "coffee. ") in runs

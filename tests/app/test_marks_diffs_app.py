"""The chat's memory marks, the inspector's diffs and the presenter page, by AppTest."""

from __future__ import annotations

from typing import Any

import pytest
from streamlit.testing.v1 import AppTest

from chatmem.diffs import seq_ranges
from chatmem.marks import Mark
from chatmem.ui.marks import MARKS_KEY, WINDOW_LINE
from tests.app.conftest import session
from tests.fakes import FakeServerProcess

TEXTS = [
    "Hi, my name is Sam.",
    "My budget is 2400 euros.",
    *[f"Plan day {i} of the trip in Lisbon, with museums and food." for i in range(6)],
]


@pytest.fixture
def folded(app: AppTest, fake: FakeServerProcess) -> AppTest:
    """A conversation past a fold, on the chat page."""
    for text in TEXTS[:-1]:
        talk(app, text)
    app.run()
    app.slider(key="max_tokens").set_value(300).run()
    session(app).bot.wait_for_fold(timeout=10)
    talk(app, TEXTS[-1])  # one request sent after the fold
    app.run()
    assert not app.exception
    assert session(app).bot.current_summary is not None
    return app


def talk(at: AppTest, text: str) -> None:
    """One turn through the session (faster than typing it in the page)."""
    sess = session(at)
    msg = sess.bot.add_user_message(text)
    sess.add("user", text, seq=msg.seq)
    reply = "".join(sess.bot.reply_stream())
    sess.add("assistant", reply, seq=sess.bot.newest_message().seq)  # type: ignore[union-attr]
    sess.bot.wait_for_fold(timeout=10)


def chat_marks(at: AppTest) -> list[tuple[str, str]]:
    """(mark, tooltip) of every chat message, in order."""
    out = []
    for message in at.chat_message:
        found = [c for c in message.caption if any(m.value in c.value for m in Mark)]
        assert len(found) == 1, [c.value for c in message.caption]
        caption = found[0]
        mark = next(m for m in Mark if f" {m.value}]" in caption.value)
        out.append((mark.value, caption.proto.help))
    return out


def test_marks_agree_with_the_next_request(folded: AppTest) -> None:
    bot = session(folded).bot
    context = bot.next_request()
    sent = {p.seq: p.tokens for p in context.parts if p.kind == "verbatim"}
    recalled = {r.seq for r in context.recalled}
    covers = bot.current_summary.covers_seq  # type: ignore[union-attr]
    seqs = [e["seq"] for e in session(folded).transcript]
    marks = chat_marks(folded)
    assert len(marks) == len(seqs) == 2 * len(TEXTS)
    for seq, (mark, tooltip) in zip(seqs, marks, strict=True):
        if seq in sent:
            assert mark == Mark.SENT
            assert f"{sent[seq]:,} tokens" in tooltip  # hovering gives its tokens
        elif seq in recalled:
            assert mark == Mark.RECALLED
            assert "recalled block" in tooltip
        elif seq <= covers:
            assert mark == Mark.SUMMARY
            assert "summary" in tooltip
        else:
            assert mark == Mark.LEFT_OUT
    assert Mark.SUMMARY in [m for m, _ in marks] and Mark.SENT in [m for m, _ in marks]
    # one line, right before the first message sent word for word
    order = page_order(folded.main)
    assert order.count("line") == 1
    assert order[order.index("line") + 1] == seqs.index(min(sent))
    # the switch hides them for ordinary chatting
    folded.toggle(key=MARKS_KEY).set_value(False).run()
    assert not folded.exception
    assert not any(
        any(m.value in c.value for m in Mark) for msg in folded.chat_message for c in msg.caption
    )
    assert "line" not in page_order(folded.main)
    folded.toggle(key=MARKS_KEY).set_value(True).run()
    assert len(chat_marks(folded)) == 2 * len(TEXTS)


def page_order(node: Any, out: list[Any] | None = None) -> list[Any]:
    """The window line ("line") and the chat messages (their index) in page order."""
    out = [] if out is None else out
    for child in getattr(node, "children", {}).values():
        if child.type == "chat_message":
            out.append(sum(1 for x in out if x != "line"))
        elif child.type == "caption" and WINDOW_LINE in child.value:
            out.append("line")
        else:
            page_order(child, out)
    return out


def test_inspector_diffs_name_what_a_budget_cut_dropped(
    folded: AppTest, fake: FakeServerProcess
) -> None:
    bot = session(folded).bot
    folded.slider(key="max_tokens").set_value(1000).run()
    for i in range(3):
        talk(folded, f"And what about the evening of day {i}, after dinner by the river?")
    folded.switch_page("app_pages/inspector.py").run()
    assert "Since the last request sent" in "\n".join(m.value for m in folded.main.markdown)
    before = {p.seq for p in bot.last_context.parts if p.kind == "verbatim"}  # type: ignore[union-attr]
    fake.control.config(summary_latency_ms=3000)  # the fold the cut starts is still running
    folded.slider(key="max_tokens").set_value(256).run()
    after = {p.seq for p in bot.next_request().parts if p.kind == "verbatim"}
    covers = bot.current_summary.covers_seq  # type: ignore[union-attr]
    dropped = sorted(s for s in before - after if s > covers)
    assert dropped
    lines = "\n".join(m.value for m in folded.main.markdown)
    assert f"Dropped] to fit the budget: {seq_ranges(dropped)}" in lines
    fake.control.config(summary_latency_ms=0)
    bot.wait_for_fold(timeout=10)
    folded.run()  # two summary versions: the second against the first, word by word
    assert len(bot.summary_versions()) == 2
    assert folded.selectbox(key="diff_from").value == 1
    assert folded.selectbox(key="diff_to").value == 2
    assert any("v1 → v2" in c.value for c in folded.main.caption)


def test_presenter_tells_what_is_remembered_and_forgotten(folded: AppTest) -> None:
    bot = session(folded).bot
    folded.switch_page("app_pages/presenter.py").run()
    assert not folded.exception
    text = "\n".join(m.value for m in folded.main.markdown)
    sent = sorted(p.seq for p in bot.next_request().parts if p.kind == "verbatim")
    summary = bot.current_summary
    assert summary is not None
    assert f"This conversation has **{2 * len(TEXTS)} message(s)**" in text
    assert f"the newest {len(sent)} message(s) word for word** ({seq_ranges(sent)}" in text
    assert f"Everything up to message #{summary.covers_seq}" in text
    story = bot.last_fold()
    assert story is not None and story.before_tokens
    assert (
        f"squeezed **{story.folded_count} message(s)** ({story.before_tokens:,} tokens) into a "
        f"summary of **{summary.tokens:,} tokens**" in text
    )
    assert summary.text in text  # the after side
    assert "#1 user:** Hi, my name is Sam." in text  # the before side quotes what was folded


def test_presenter_on_an_empty_chat(app: AppTest) -> None:
    app.switch_page("app_pages/presenter.py").run()
    assert not app.exception
    assert any("Nothing to remember yet" in i.value for i in app.main.info)

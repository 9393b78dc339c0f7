"""The chat's memory marks, the inspector's diffs and the presenter page, by AppTest."""

from __future__ import annotations

from typing import Any

import pytest
from streamlit.testing.v1 import AppTest

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
    sess = session(app)
    for text in TEXTS:  # through the session (faster than typing each in the page)
        msg = sess.bot.add_user_message(text)
        sess.add("user", text, seq=msg.seq)
        reply = "".join(sess.bot.reply_stream())
        sess.add("assistant", reply, seq=sess.bot.newest_message().seq)  # type: ignore[union-attr]
    app.run()
    app.slider(key="max_tokens").set_value(300).run()
    session(app).bot.wait_for_fold(timeout=10)
    app.run()
    assert not app.exception
    assert session(app).bot.current_summary is not None
    return app


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
    covers = bot.current_summary.covers_seq  # type: ignore[union-attr]
    seqs = [e["seq"] for e in session(folded).transcript]
    marks = chat_marks(folded)
    assert len(marks) == len(seqs) == 2 * len(TEXTS)
    for seq, (mark, tooltip) in zip(seqs, marks, strict=True):
        if seq in sent:
            assert mark == Mark.SENT
            assert f"{sent[seq]:,} tokens" in tooltip  # hovering gives its tokens
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


def test_the_toggle_hides_the_marks(folded: AppTest) -> None:
    assert folded.toggle(key=MARKS_KEY).value
    folded.toggle(key=MARKS_KEY).set_value(False).run()
    assert not folded.exception
    assert not any(
        any(m.value in c.value for m in Mark) for msg in folded.chat_message for c in msg.caption
    )
    assert not [c for c in folded.main.caption if WINDOW_LINE in c.value]
    folded.toggle(key=MARKS_KEY).set_value(True).run()
    assert len(chat_marks(folded)) == 2 * len(TEXTS)

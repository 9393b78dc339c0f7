"""The chat's memory marks: beside each message, what the model sees of it in the next
request (read from ``bot.memory_marks()``), a line where the verbatim window begins, and the
switch that hides them for ordinary chatting."""

from __future__ import annotations

from typing import Any

import streamlit as st

from chatmem.errors import ContextOverflow, StoreError
from chatmem.marks import MARK_ICONS, Mark, MemoryMarks
from chatmem.ui.state import ChatSession

MARKS_KEY = "show_marks"
WINDOW_LINE = "The model sees the messages below word for word"
MARK_COLORS = {
    Mark.SENT: "blue",
    Mark.RECALLED: "green",
    Mark.SUMMARY: "violet",
    Mark.LEFT_OUT: "gray",
    Mark.PINNED: "orange",
    Mark.EXCLUDED: "red",
}


def marks_toggle() -> None:
    """The switch that shows or hides the marks (on by default)."""
    if st.session_state.get(MARKS_KEY) is None:
        st.session_state[MARKS_KEY] = True
    st.toggle(
        "Memory marks",
        key=MARKS_KEY,
        help="Beside each message, what the model sees of it in the next request: sent word "
        "for word, in the summary only, recalled, or left out. Hover a mark for its tokens.",
    )


def chat_marks(sess: ChatSession) -> MemoryMarks | None:
    """The marks for the chat, or None when hidden or the request cannot be built."""
    if not st.session_state.get(MARKS_KEY, True):
        return None
    try:
        return sess.bot.memory_marks()
    except (ContextOverflow, StoreError):
        return None  # the sidebar's gauge says why


def draw_marks(marks: MemoryMarks | None, entry: dict[str, Any], where: str) -> None:
    """Draw the mark of a transcript ``entry``: ``where`` is "before" (the window line, above
    the message) or "inside" (the mark, in the message)."""
    if marks is None:
        return
    seq = entry.get("seq")
    if where == "before":
        if marks.window_starts_at(seq):
            with st.container(key=f"window_line_{seq}"):
                st.caption(f":blue[──── {WINDOW_LINE} ────]")
        return
    mark = marks.of(seq, entry.get("status", "ok"))
    st.caption(
        f":{MARK_COLORS[mark.mark]}[{MARK_ICONS[mark.mark]} {mark.mark}]",
        help=mark.detail,
    )

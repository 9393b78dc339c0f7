"""The chat page: history, the streaming reply, Stop, errors with Retry, New chat.

Every message is stored before the model is called; the first one puts the conversation's id
in the URL (``?c=<id>``), so a reload reopens it.

A reply is produced by a :class:`~chatmem.ui.turns.Turn` on a thread of its own, never inside
a script run: submitting starts it (in :func:`_on_submit`, before the script runs, so the run
already draws the chat input disabled). While it runs, a fragment redraws the reply from the
turn's buffer a few times a second and offers **Stop**; when it has ended, one full rerun
draws everything in its final state (input enabled, sidebar gauge and summary up to date).
A rerun in between (a slider, another page, a reload) does not touch the turn.
"""

from __future__ import annotations

import streamlit as st

from chatmem.errors import StoreError
from chatmem.ui.marks import chat_marks, draw_marks, marks_toggle
from chatmem.ui.state import (
    ChatSession,
    model_label,
    new_chat,
    require_session,
    show_id_in_url,
    shown,
)
from chatmem.ui.text import safe_markdown, stream_safe
from chatmem.ui.turns import Turn

CHAT_INPUT_KEY = "chat_input"
STOP_KEY = "stop_reply"
POLL_SECONDS = 0.4  # how often the reply in flight is redrawn
STATUS_NOTES = {
    "incomplete": "Cut off before it finished.",
    "stopped": "Stopped: you ended this reply before it finished.",
    "too_long": "Not sent: too long for the budget.",
    "failed": "Failed: not sent to the model.",
    "unsaved": "Not saved, so not sent: Retry sends it again.",
}


def render_chat_page() -> None:
    """Draw the chat page for this browser session."""
    sess = require_session()
    _header(sess)
    if sess.missing is not None:
        _missing(sess)
        return
    _history(sess)
    if not sess.busy:
        _problems(sess)
    st.chat_input(
        "Message",
        key=CHAT_INPUT_KEY,
        disabled=sess.busy,
        submit_mode="disable",
        on_submit=_on_submit,
        args=(sess,),
    )
    if sess.turn is not None:
        _in_flight(sess, sess.turn)


def _header(sess: ChatSession) -> None:
    left, right = st.columns([4, 1], vertical_alignment="bottom")
    with left:
        st.markdown("## Chat")
        st.caption(f"Answering: **{model_label(sess.bot)}**")
        marks_toggle()
    with right:
        st.button(
            "New chat",
            key="new_chat",
            icon=":material/add_comment:",
            on_click=new_chat,
            disabled=sess.busy,
            width="stretch",
        )


def _missing(sess: ChatSession) -> None:
    """The URL names a conversation this session cannot open: say so, offer a new chat."""
    st.warning(shown(sess.missing_reason, sess.bot), icon=":material/search_off:")
    left, right = st.columns(2)
    with left:
        st.button(
            "Start a new chat",
            key="missing_new_chat",
            icon=":material/add_comment:",
            type="primary",
            on_click=new_chat,
            width="stretch",
        )
    with right:
        st.page_link(
            "app_pages/conversations.py", label="Saved conversations", icon=":material/forum:"
        )


def _history(sess: ChatSession) -> None:
    entries = sess.transcript
    if not entries and not sess.busy:
        st.caption(
            "Say hello. Older turns are folded into a rolling summary when the conversation "
            "outgrows the budget; the sidebar shows what the next request will hold."
        )
        return
    hidden = sess.hidden()
    if hidden:
        st.button(
            f"Show earlier messages ({hidden:,} hidden)",
            key="show_earlier",
            icon=":material/expand_less:",
            on_click=_show_more,
            args=(sess,),
        )
    marks = chat_marks(sess)  # None when the marks are switched off
    for entry in entries[max(0, len(entries) - sess.show) :]:
        draw_marks(marks, entry, "before")
        with st.chat_message(entry["role"]):
            st.markdown(safe_markdown(entry["content"]))
            note = STATUS_NOTES.get(entry.get("status", "ok"))
            if note:
                st.caption(note)
            draw_marks(marks, entry, "inside")


def _problems(sess: ChatSession) -> None:
    if sess.notice:
        st.warning(shown(sess.notice, sess.bot), icon=":material/warning:")
    if sess.error:
        st.error(shown(sess.error, sess.bot), icon=":material/error:")
    if sess.can_retry:  # after an error, a notice, or a reply stopped on purpose
        st.button(
            "Retry",
            key="retry",
            icon=":material/refresh:",
            type="primary",
            on_click=_on_retry,
            args=(sess,),
        )


# -- callbacks (run before the script) ---------------------------------------------------
def _on_submit(sess: ChatSession) -> None:
    text = st.session_state.get(CHAT_INPUT_KEY)
    if sess.busy or text is None:  # one reply at a time: the input is disabled meanwhile
        return
    sess.start_turn(text)


def _on_retry(sess: ChatSession) -> None:
    if sess.busy:
        return
    sess.start_turn()


def _show_more(sess: ChatSession) -> None:
    try:
        sess.show_earlier()
    except StoreError as exc:
        sess.notice = f"Earlier messages could not be read: {exc}"


# -- the turn in flight ---------------------------------------------------------------
def _in_flight(sess: ChatSession, turn: Turn) -> None:
    """Redraw the reply in flight from the turn's buffer until it ends, then rerun once."""

    @st.fragment(run_every=POLL_SECONDS)
    def reply() -> None:
        if turn.done:
            st.rerun()  # the whole page, in its final state (the run settles the turn)
        if turn.sent:
            show_id_in_url(sess)  # the conversation exists now: a reload reopens it
        if turn.text is not None and not sess.attached:  # attached: already in the transcript
            with st.chat_message("user"):
                st.markdown(safe_markdown(turn.text))
        with st.chat_message("assistant"):
            text = turn.text_so_far()
            if text:
                st.markdown(stream_safe(text) + " ▌")
            else:
                st.caption("Thinking…" if turn.sent else "Saving your message…")
        if turn.stopping:
            st.caption("Stopping…")
        else:
            st.button("Stop", key=STOP_KEY, icon=":material/stop_circle:", on_click=turn.stop)

    reply()

"""The chat page: history, the streaming reply, errors with Retry, New chat.

Every message is stored before the model is called; the first one puts the conversation's id
in the URL (``?c=<id>``), so a reload reopens it.

A turn takes two runs. Submitting calls :func:`_on_submit` before the script runs, which
marks the session busy, so the run that sends the message already draws the chat input
disabled. When the reply has streamed, one more rerun draws everything in its final state
(input enabled, sidebar gauge and summary up to date).
"""

from __future__ import annotations

from collections.abc import Iterator

import streamlit as st

from chatmem.errors import ContextOverflow, ModelError, StoreError
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

CHAT_INPUT_KEY = "chat_input"
INTERRUPTED = "The reply was stopped before it finished."
STATUS_NOTES = {
    "incomplete": "Cut off before it finished.",
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
    if sess.busy:
        _turn(sess)
        st.rerun()


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
        st.page_link("pages/conversations.py", label="Saved conversations", icon=":material/forum:")


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
    if sess.can_retry and (sess.error or sess.notice):
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
    if sess.busy or text is None:
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


# -- the turn -----------------------------------------------------------------------------
def _turn(sess: ChatSession) -> None:
    """Send the pending message (or retry) and stream the reply; never leaves busy set."""
    partial: list[str] = []
    finished = False
    try:
        if sess.pending is not None:
            text, sess.pending = sess.pending, None
            if not _send_user(sess, text):
                finished = True
                return
        elif not sess.retry:  # nothing to send (a stale flag): just re-enable the input
            finished = True
            return
        else:
            while sess.transcript and sess.transcript[-1].get("status") == "incomplete":
                sess.transcript.pop()  # a retry replaces the cut-off reply
        _stream_reply(sess, partial)
        finished = True
    finally:
        # Also reached when the run is interrupted (a click elsewhere, a page switch):
        # the user's message stays, and the reply can be retried.
        sess.busy = False
        sess.retry = False
        if not finished:
            if partial:
                sess.add("assistant", "".join(partial), "incomplete")
            sess.error = INTERRUPTED
            sess.can_retry = True


def _send_user(sess: ChatSession, text: str) -> bool:
    try:
        msg = sess.bot.add_user_message(text)
    except ContextOverflow as exc:
        sess.add("user", text, "too_long")  # kept (and stored), but never sent
        sess.notice = str(exc)
        show_id_in_url(sess)
        return False
    except StoreError as exc:
        sess.add("user", text, "unsaved")  # kept on screen; Retry sends it again
        sess.unsaved = text
        sess.notice = f"The message could not be saved, so it was not sent: {exc}"
        sess.can_retry = True
        return False
    except ValueError as exc:  # empty or blank
        sess.notice = str(exc)
        return False
    sess.add("user", text, seq=msg.seq)
    show_id_in_url(sess)  # the conversation exists now: a reload reopens it
    with st.chat_message("user"):
        st.markdown(safe_markdown(text))
    return True


def _stream_reply(sess: ChatSession, partial: list[str]) -> None:
    try:
        reply = sess.bot.reply_stream()

        def chunks() -> Iterator[str]:
            for chunk in reply:
                partial.append(chunk)
                yield stream_safe(chunk)

        with st.chat_message("assistant"):
            try:
                st.write_stream(chunks())
            finally:
                reply.close()
    except ModelError as exc:
        if partial:
            sess.add("assistant", "".join(partial), "incomplete")
        sess.error = exc.user_message
        sess.can_retry = True
        return
    except ContextOverflow as exc:  # the budget was lowered below the newest message
        sess.error = str(exc)
        sess.can_retry = True
        return
    except StoreError as exc:
        if partial:
            sess.add("assistant", "".join(partial), "incomplete")
        sess.error = f"The conversation could not be saved: {exc}"
        sess.can_retry = True
        return
    newest = sess.bot.newest_message()
    seq = newest.seq if newest is not None and newest.role == "assistant" else None
    sess.add("assistant", "".join(partial), seq=seq)
    sess.error = None
    sess.can_retry = False

"""The inspector's "Correct memory" tab: edit or restore the summary, pin or leave out messages.

Every control calls a public session method (``edit_summary``, ``restore_summary``, ``pin``,
``exclude``); a refusal (``CorrectionRefused``, or a store that cannot write) is shown in plain
words and the person's text stays in the editor.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from chatmem.errors import CorrectionRefused, StoreError
from chatmem.inspection import SummaryVersion
from chatmem.ui.state import ChatSession
from chatmem.ui.text import clock, preview, safe_markdown

TEXT_KEY = "corrections_summary_text"
BASE_KEY = "corrections_summary_base"
NOTICE_KEY = "corrections_notice"


def version_note(version: SummaryVersion) -> str:
    """How a version came to be, for its label: "" for a fold's."""
    if version.restored_from is not None:
        return f" · restored from v{version.restored_from}"
    if version.edited_by:
        return f" · edited by a {version.edited_by}"
    return ""


def render_corrections(sess: ChatSession, versions: list[SummaryVersion]) -> None:
    """Draw the corrections tab for ``sess`` (``versions``: the summary versions, oldest first)."""
    notice = st.session_state.pop(NOTICE_KEY, None)
    if notice:
        st.success(notice, icon=":material/check:")
    st.caption(
        "Corrections are stored, shown in the event log, exported with the conversation, and "
        "used by every tab of it from its next request."
    )
    st.subheader("Summary")
    _summary_editor(sess)
    if len(versions) > 1:
        _restore(sess, versions)
    st.subheader("Messages")
    _marks(sess)


def _attempt(action: Any, done: str) -> bool:
    """Run ``action``; on success remember ``done`` for the next run and rerun."""
    try:
        action()
    except CorrectionRefused as exc:
        st.error(str(exc), icon=":material/block:")
        return False
    except StoreError as exc:
        st.error(f"The correction could not be saved: {exc}", icon=":material/error:")
        return False
    st.session_state[NOTICE_KEY] = done
    return True


def _summary_editor(sess: ChatSession) -> None:
    bot = sess.bot
    summary = bot.current_summary
    if summary is None:
        st.info(
            "No summary yet: the first fold writes one when the history outgrows the budget; "
            "then it can be edited here.",
            icon=":material/info:",
        )
        return
    base = st.session_state.get(BASE_KEY)
    if base is None or TEXT_KEY not in st.session_state:
        st.session_state[BASE_KEY], st.session_state[TEXT_KEY] = summary, summary.text
        base = summary
    elif base != summary:
        st.warning(
            "The summary changed since this editor opened (a fold or another tab). Your text is "
            "kept; load the new version to start from it.",
            icon=":material/sync_problem:",
        )
        if st.button("Load the new version", key="corrections_reload"):
            st.session_state[BASE_KEY], st.session_state[TEXT_KEY] = summary, summary.text
            st.rerun()
    cap = bot.summary_cap
    text = st.text_area(
        f"Current summary (at most {cap:,} tokens)",
        key=TEXT_KEY,
        height=180,
        help="Saving makes a new summary version, marked as edited by a person.",
    )
    st.caption(f"{bot.count_text(text):,} / {cap:,} tokens")
    if st.button("Save as a new version", key="corrections_save", type="primary"):
        if text == summary.text and base == summary:
            st.info("Nothing changed.", icon=":material/info:")
        elif _attempt(lambda: bot.edit_summary(text, based_on=base), "Summary saved."):
            st.session_state.pop(TEXT_KEY, None)
            st.session_state.pop(BASE_KEY, None)
            st.rerun()


def _restore(sess: ChatSession, versions: list[SummaryVersion]) -> None:
    earlier = list(reversed(versions[:-1]))
    chosen = st.selectbox(
        "Restore an earlier version",
        earlier,
        format_func=lambda v: (
            f"v{v.number} · {clock(v.created_at)} · {v.tokens:,} tokens{version_note(v)} · "
            f"{preview(v.text, 60)}"
        ),
        key="corrections_restore_choice",
    )
    if chosen is not None:
        with st.expander(f"v{chosen.number} in full"):
            st.markdown(safe_markdown(chosen.text))
    if st.button("Restore this version", key="corrections_restore") and chosen is not None:
        done = f"Version {chosen.number} restored as a new version."
        if _attempt(lambda: sess.bot.restore_summary(chosen.number), done):
            st.session_state.pop(TEXT_KEY, None)
            st.session_state.pop(BASE_KEY, None)
            st.rerun()


def _marks(sess: ChatSession) -> None:
    bot = sess.bot
    try:
        rows = bot.mark_rows()
    except StoreError as exc:
        st.warning(f"The marked messages could not be read: {exc}", icon=":material/warning:")
        return
    if not rows:
        st.info("No messages yet.", icon=":material/info:")
        return
    used, room = bot.pin_room()
    st.caption(
        f"A pinned message is sent in every request, word for word, even after it is folded "
        f"or would be trimmed; pins may take half of the budget ({used:,} / {room:,} tokens "
        "used). A message left out is never sent again and later folds skip it."
    )
    by_seq = {r.seq: r for r in rows}
    seq = st.selectbox(
        "Message",
        list(by_seq),
        format_func=lambda s: (
            f"#{s} {by_seq[s].role} · {by_seq[s].tokens:,} tokens"
            f"{' · pinned' if by_seq[s].pinned else ''}"
            f"{' · left out' if by_seq[s].excluded else ''} · {preview(by_seq[s].text, 60)}"
        ),
        key="corrections_message",
    )
    row = by_seq.get(seq) if seq is not None else None
    if row is not None:
        pin_col, out_col = st.columns(2)
        if pin_col.button("Unpin" if row.pinned else "Pin", key="corrections_pin", width="stretch"):
            what = "unpinned" if row.pinned else "pinned"
            if _attempt(lambda: bot.pin(row.seq, not row.pinned), f"Message {row.seq} {what}."):
                st.rerun()
        if out_col.button(
            "Include again" if row.excluded else "Leave out of requests",
            key="corrections_exclude",
            width="stretch",
        ):
            what = "included again" if row.excluded else "left out of requests"
            if _attempt(
                lambda: bot.exclude(row.seq, not row.excluded), f"Message {row.seq} {what}."
            ):
                st.rerun()
    marked = [r for r in rows if r.pinned or r.excluded]
    if marked:
        st.dataframe(
            pd.DataFrame(
                [
                    {
                        "seq": r.seq,
                        "mark": "pinned" if r.pinned else "left out",
                        "role": r.role,
                        "tokens": r.tokens,
                        "text": preview(r.text, 200),
                    }
                    for r in marked
                ]
            ),
            hide_index=True,
            width="stretch",
        )

"""What changed, drawn: the next request against the last one sent, and one text (a summary
version) against another, word by word."""

from __future__ import annotations

import html

import streamlit as st

from chatmem.diffs import Change, RequestDiff, seq_ranges, text_diff
from chatmem.session import ChatMemory

NO_PREVIOUS = (
    "No request has been sent in this browser session yet, so there is nothing to compare "
    "the next one with."
)


def request_diff_lines(diff: RequestDiff) -> list[str]:
    """The diff in short sentences (markdown), one a line."""
    lines = [f"Tokens: {diff.tokens_before:,} → {diff.tokens_after:,}"]
    if diff.added:
        lines.append(f":blue[Added] word for word: {seq_ranges(diff.added)}")
    if diff.summarised:
        lines.append(f":violet[Summarised] (summary only): {seq_ranges(diff.summarised)}")
    if diff.dropped:
        lines.append(f":red[Dropped] to fit the budget: {seq_ranges(diff.dropped)}")
    if diff.recalled_added:
        lines.append(f":green[Recalled] now: {seq_ranges(diff.recalled_added)}")
    if diff.recalled_removed:
        lines.append(f"No longer recalled: {seq_ranges(diff.recalled_removed)}")
    if diff.summary_changed:
        lines.append("The summary changed (see Summary versions).")
    if diff.unchanged:
        lines.append("The same messages as the last request.")
    return lines


def render_request_diff(bot: ChatMemory) -> None:
    """The next request against the last one sent (messages by seq)."""
    with st.container(key="request_diff"):
        st.markdown("**Since the last request sent**")
        diff = bot.request_changes()
        if diff is None:
            st.caption(NO_PREVIOUS)
            return
        st.markdown("  \n".join(request_diff_lines(diff)))


STYLES = {
    Change.ADDED: "background:#d3f5dc;text-decoration:none",
    Change.REMOVED: "background:#ffd6d6;text-decoration:line-through",
}
TAGS = {Change.ADDED: "ins", Change.REMOVED: "del"}


def diff_html(old: str, new: str) -> str:
    """``old`` → ``new`` as HTML: removed words struck through in red, added ones in green.
    Every piece of text is escaped."""
    out = []
    for change, text in text_diff(old, new):
        piece = html.escape(text)
        if change == Change.SAME:
            out.append(piece)
        else:
            tag = TAGS[change]
            out.append(f'<{tag} style="{STYLES[change]}">{piece}</{tag}>')
    return f'<div style="white-space:pre-wrap;line-height:1.6">{"".join(out)}</div>'


def render_text_diff(old: str, new: str) -> None:
    st.html(diff_html(old, new))

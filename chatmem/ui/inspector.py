"""The inspector page: the exact next request, summary versions, tokens per call, events."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from chatmem.memory import ContextOverflow
from chatmem.ui.charts import stats_chart
from chatmem.ui.state import ChatSession, require_session
from chatmem.ui.text import clock, safe_markdown


def render_inspector_page() -> None:
    """Draw the inspector page for this browser session."""
    st.set_page_config(layout="wide")
    sess = require_session()
    st.markdown("## Memory inspector")
    st.caption(
        f"Model: **{sess.bot.model_label}** · budget {sess.bot.max_tokens:,} tokens · "
        f"keep_recent {sess.bot.keep_recent} · {len(sess.bot.memory.messages):,} messages in "
        "memory"
    )
    request, summaries, tokens, events = st.tabs(
        ["Next request", "Summary versions", "Tokens per call", "Event log"]
    )
    with request:
        _next_request(sess)
    with summaries:
        _summary_versions(sess)
    with tokens:
        _tokens_per_call(sess)
    with events:
        _event_log(sess)


def _next_request(sess: ChatSession) -> None:
    try:
        context = sess.bot.context()
    except ContextOverflow as exc:
        st.warning(str(exc), icon=":material/warning:")
        return
    budget = context.budget
    cols = st.columns(4)
    cols[0].metric("Prompt tokens", f"{budget.total:,}", help="Framing and reply priming included")
    cols[1].metric("Budget", f"{budget.limit:,}")
    cols[2].metric("Messages", f"{len(context.parts):,}")
    cols[3].metric("Left out (trimmed)", f"{context.trimmed:,}")
    if context.dropped_summary:
        st.warning("The summary did not fit this budget and is left out of this request.")
    rows = [
        {
            "#": i,
            "kind": part.kind,
            "role": part.message.get("role", ""),
            "seq": part.seq,
            "tokens": part.tokens,
            "content": str(part.message.get("content", "")),
        }
        for i, part in enumerate(context.parts, start=1)
    ]
    st.dataframe(
        pd.DataFrame(rows),
        hide_index=True,
        width="stretch",
        column_config={
            "#": st.column_config.NumberColumn(width="small"),
            "kind": st.column_config.TextColumn(width="small"),
            "role": st.column_config.TextColumn(width="small"),
            "seq": st.column_config.NumberColumn(width="small", format="%d"),
            "tokens": st.column_config.NumberColumn(width="small", format="%d"),
            "content": st.column_config.TextColumn(width="large"),
        },
    )
    st.caption(
        f"Plus {budget.priming} tokens that prime the reply; {budget.reply_reserve:,} tokens "
        "are reserved for the reply itself. Tokens include each message's chat framing."
    )


def _summary_versions(sess: ChatSession) -> None:
    versions = list(sess.summary_versions)
    summary = sess.bot.memory.summary
    if summary is not None and (not versions or versions[-1].created_at != summary.created_at):
        st.caption("The current summary was made before this page started tracking versions.")
    if not versions:
        if summary is None:
            st.info("No summary yet: the first fold happens when the history outgrows the budget.")
        else:
            st.markdown(safe_markdown(summary.text))
        return
    st.caption(f"{len(versions)} version(s), newest first.")
    for version in reversed(versions):
        folded = (
            f" · folded {version.messages} messages ({version.before_tokens:,} tokens)"
            if version.messages is not None and version.before_tokens is not None
            else ""
        )
        label = (
            f"v{version.number} · {clock(version.created_at)} · covers 1–{version.covers_seq} · "
            f"{version.tokens:,} tokens{folded}"
        )
        with st.expander(label, expanded=version is versions[-1]):
            st.markdown(safe_markdown(version.text))


def _tokens_per_call(sess: ChatSession) -> None:
    stats = list(sess.bot.stats)
    if not stats:
        st.info("No model calls yet.")
        return
    st.altair_chart(stats_chart(stats), width="stretch")
    chats = [s for s in stats if s.kind == "chat" and s.prompt_reported is not None]
    if chats:
        drift = sum(s.prompt_reported - s.prompt_estimate for s in chats) / len(chats)  # type: ignore[operator]
        st.caption(
            f"Server-reported prompt tokens differ from chatmem's count by {drift:+.1f} tokens "
            f"a call on average ({len(chats)} chat calls)."
        )
    frame = pd.DataFrame(
        [
            {
                "time": clock(s.at),
                "kind": s.kind,
                "seq": s.seq,
                "prompt (estimate)": s.prompt_estimate,
                "prompt (server)": s.prompt_reported,
                "completion (server)": s.completion_reported,
            }
            for s in stats
        ]
    )
    st.dataframe(frame, hide_index=True, width="stretch")


def _event_log(sess: ChatSession) -> None:
    events = list(sess.bot.events)
    if not events:
        st.info("No events yet: folds, trims and errors are listed here.")
        return
    frame = pd.DataFrame(
        [{"time": clock(e.at), "kind": e.kind, "message": e.message} for e in reversed(events)]
    )
    st.dataframe(
        frame,
        hide_index=True,
        width="stretch",
        column_config={"message": st.column_config.TextColumn(width="large")},
    )

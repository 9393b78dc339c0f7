"""The inspector page: the next request, what recall brought back and why, summary
versions, tokens per call, events.

With a store, summary versions and events come from it, so a reopened conversation shows
its whole history, not only what happened since this browser session started.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from chatmem.errors import ContextOverflow, StoreError
from chatmem.events import Event
from chatmem.inspection import SummaryVersion
from chatmem.ui.changes import render_request_diff, render_text_diff
from chatmem.ui.charts import stats_chart
from chatmem.ui.corrections import render_corrections, version_note
from chatmem.ui.recalled import MessageLookup, recall_turns
from chatmem.ui.state import ChatSession, model_label, open_page, shown
from chatmem.ui.text import clock, preview, safe_markdown


def render_inspector_page() -> None:
    """Draw the inspector page for this browser session."""
    sess = open_page("Memory inspector")
    st.caption(
        f"Model: **{model_label(sess.bot)}** · budget {sess.bot.max_tokens:,} tokens · "
        f"keep_recent {sess.bot.keep_recent} · {_message_counts(sess)}"
    )
    events = _events(sess)
    request, recall, summaries, correct, tokens, log = st.tabs(
        [
            "Next request",
            "Recall",
            "Summary versions",
            "Correct memory",
            "Tokens per call",
            "Event log",
        ]
    )
    with request:
        _next_request(sess)
    with recall:
        _recall(sess, events)
    with summaries:
        versions = _summary_versions(sess, events)
    with correct:
        render_corrections(sess, versions)
    with tokens:
        _tokens_per_call(sess)
    with log:
        _event_log(events)


def _message_counts(sess: ChatSession) -> str:
    """The conversation's messages and how many this session holds, named apart."""
    held = sess.bot.message_count
    try:
        stored = sess.bot.stored_message_count()
    except StoreError:
        return f"{held:,} messages held in memory"
    if stored == held:
        return f"{stored:,} messages"
    return (
        f"{stored:,} messages in the conversation, {held:,} held in memory (the rest are "
        "folded into the summary, failed, cut off, or older than a request can hold)"
    )


def _events(sess: ChatSession) -> list[Event]:
    """The conversation's events, oldest first (from the store when there is one)."""
    try:
        return sess.bot.history_events()
    except StoreError as exc:
        st.warning(f"The stored events could not be read: {exc}", icon=":material/warning:")
        return sess.bot.events


def _next_request(sess: ChatSession) -> None:
    try:
        context = sess.bot.next_request()
    except ContextOverflow as exc:
        st.warning(str(exc), icon=":material/warning:")
        return
    budget = context.budget
    cols = st.columns(4)
    cols[0].metric("Prompt tokens", f"{budget.total:,}", help="Framing and reply priming included")
    cols[1].metric("Budget", f"{budget.limit:,}")
    messages = sum(1 for p in context.parts if p.kind == "verbatim")
    cols[2].metric(
        "Messages word for word",
        f"{messages:,}",
        help=f"{len(context.parts):,} parts in all, with the system prompt, the recap and "
        "the recalled block",
    )
    cols[3].metric("Left out (trimmed)", f"{context.trimmed:,}")
    if context.dropped_pins:
        seqs = ", ".join(f"#{s}" for s in context.dropped_pins)
        st.warning(
            f"The pinned messages no longer fit this budget: {seqs} are left out of this "
            "request. Unpin some (Correct memory) or raise the budget.",
            icon=":material/push_pin:",
        )
    if context.dropped_summary:
        st.warning("The summary did not fit this budget and is left out of this request.")
    if context.recalled:
        st.caption(
            f"The recalled part holds the {len(context.recalled)} older message(s) recalled for "
            "your last message; your next message recalls its own (see Recall)."
        )
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
    frame = pd.DataFrame(rows)
    frame["seq"] = frame["seq"].astype("Int64")  # blank, never "None", where a part has none
    st.dataframe(
        frame,
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
        "are reserved for the reply itself. Tokens include each message's chat framing. The "
        "recap and recalled quotes go as user-role messages, never as system ones: written "
        "from what was said (or imported), they get no more authority than your own words."
    )
    _prompt_text(sess, context.messages)
    render_request_diff(sess.bot)


def _prompt_text(sess: ChatSession, messages: list[dict[str, Any]]) -> None:
    """The text a local model is prompted with for this request (its template, applied here)."""
    render = getattr(sess.bot.model, "render", None)
    if not callable(render):
        return  # a server applies its own template
    with st.expander("The prompt text the local model receives"):
        st.caption(
            "This request rendered with the model's chat template, as it is tokenized. The "
            "recap's fact notes leave the recap for a short note just before your newest "
            'message, told about you ("The user lives in Lyon."): a small model uses a fact '
            'it reads last and takes "my" for itself. The tokens above count them there.'
        )
        st.code(render(messages), language=None, wrap_lines=True)


def _recall(sess: ChatSession, events: list[Event]) -> None:
    bot = sess.bot
    state = "on" if bot.recall else "off (the sidebar switch)"
    st.caption(
        f"Recall is {state}. When older messages are out of the request (folded or trimmed), "
        "the ones closest to your message (shared telling words, BM25; similar meaning, "
        "embeddings) compete with the older recent turns for the room left after the newest "
        "ones, up to a ceiling. Score: that relevance, recency included (higher is closer)."
    )
    lookup = MessageLookup(bot.message_at, sess.snippets)
    try:
        turns = recall_turns(events, lookup, bot.last_context)
    except StoreError as exc:
        st.warning(f"Recalled messages could not be read: {exc}", icon=":material/warning:")
        return
    last = bot.last_context
    if last is not None and last.dropped_recalled:
        share = int(last.budget.limit * bot.recall_share)
        st.caption(
            f"For your last message, {last.dropped_recalled} more matching older message(s) "
            f"did not make it: below the others, or over recall's ceiling ({share:,} tokens)."
        )
    if not turns:
        st.info(
            "Nothing recalled yet: recall starts once older messages have left the request "
            "(after a fold, or when they are trimmed), and only brings back ones that match.",
            icon=":material/info:",
        )
        return
    st.caption(f"{len(turns)} turn(s) with recall, newest first.")
    for number, turn in enumerate(turns):
        asked = f"“{preview(turn.for_text, 70)}”" if turn.for_text else "a message"
        where = f" (#{turn.for_seq})" if turn.for_seq is not None else ""
        label = f"{clock(turn.at)} · for {asked}{where} · {len(turn.hits)} recalled"
        with st.expander(label, expanded=number == 0):
            frame = pd.DataFrame(
                [
                    {
                        "seq": hit.seq,
                        "score": round(hit.score, 4),
                        "BM25": hit.bm25,
                        "dense": hit.dense,
                        "found by": hit.found_by,
                        "matched words": ", ".join(hit.matched) or "—",
                        "snippet": hit.snippet,
                    }
                    for hit in turn.hits
                ],
                columns=["seq", "score", "BM25", "dense", "found by", "matched words", "snippet"],
            )
            st.dataframe(
                frame,
                hide_index=True,
                width="stretch",
                column_config={
                    "seq": st.column_config.NumberColumn(width="small", format="%d"),
                    "score": st.column_config.NumberColumn(width="small", format="%.4f"),
                    "BM25": st.column_config.NumberColumn(
                        width="small", format="%.2f", help="keyword search score (— : no match)"
                    ),
                    "dense": st.column_config.NumberColumn(
                        width="small",
                        format="%.3f",
                        help="cosine similarity of the embeddings (— : not among the nearest)",
                    ),
                    "found by": st.column_config.TextColumn(
                        width="small",
                        help="keywords (BM25), meaning (embeddings), or the hit it sits next to: "
                        "a message just before or after a hit comes with it",
                    ),
                    "matched words": st.column_config.TextColumn(width="small"),
                    "snippet": st.column_config.TextColumn(width="large"),
                },
            )


def _summary_versions(sess: ChatSession, events: list[Event]) -> list[SummaryVersion]:
    try:
        versions: list[SummaryVersion] = sess.bot.summary_versions(events)
    except StoreError as exc:
        st.warning(f"The stored summaries could not be read: {exc}", icon=":material/warning:")
        versions = []
    summary = sess.bot.current_summary
    if summary is not None and (not versions or versions[-1].covers_seq != summary.covers_seq):
        st.caption("The current summary was made before this page started tracking versions.")
    if not versions:
        if summary is None:
            st.info("No summary yet: the first fold happens when the history outgrows the budget.")
        else:
            st.markdown(safe_markdown(summary.text))
        return versions
    _compare_versions(versions)
    st.caption(f"{len(versions)} version(s), newest first.")
    for version in reversed(versions):
        folded = (
            f" · folded {version.messages} messages ({version.before_tokens:,} tokens)"
            if version.messages is not None and version.before_tokens is not None
            else ""
        )
        label = (
            f"v{version.number} · {clock(version.created_at)} · covers 1–{version.covers_seq} · "
            f"{version.tokens:,} tokens{folded}{version_note(version)}"
        )
        with st.expander(label, expanded=version is versions[-1]):
            st.markdown(safe_markdown(version.text))
    return versions


def _compare_versions(versions: list[SummaryVersion]) -> None:
    """One version against another, word by word (the two newest by default)."""
    if len(versions) < 2:
        return
    numbers = [v.number for v in versions]
    left, right = st.columns(2)
    old = left.selectbox("Compare version", numbers, index=len(numbers) - 2, key="diff_from")
    new = right.selectbox("with version", numbers, index=len(numbers) - 1, key="diff_to")
    by_number = {v.number: v for v in versions}
    with st.container(key="summary_diff", border=True):
        st.caption(
            f"v{old} → v{new}: :red[struck through] left out, :green[highlighted] added · "
            f"{by_number[old].tokens:,} → {by_number[new].tokens:,} tokens"
        )
        render_text_diff(by_number[old].text, by_number[new].text)


COUNTED_BY = {
    "server": "the server's usage",
    "tokenizer": "the server's tokenizer (its stream had no usage)",
    "non-streamed call": "a one-token call (its stream had no usage)",
    "": "not reported",
}


def _tokens_per_call(sess: ChatSession) -> None:
    stats = list(sess.bot.stats)
    if not stats:
        replies = sum(
            1 for e in sess.transcript if e["role"] == "assistant" and e.get("seq") is not None
        )
        if replies or sess.bot.current_summary is not None:
            st.info(
                "No model calls in this browser session yet: this conversation was opened "
                "from the store, and token counts are listed for the calls made since. Its "
                "earlier replies and summaries are in the chat and under Summary versions.",
                icon=":material/info:",
            )
        else:
            st.info("No model calls yet.")
        return
    st.altair_chart(stats_chart(stats), width="stretch")
    st.caption(f"Token counts: {sess.bot.counter_exactness}.")
    chats = [s for s in stats if s.kind == "chat" and s.prompt_reported is not None]
    if chats:
        drift = sum(s.prompt_reported - s.prompt_estimate for s in chats) / len(chats)  # type: ignore[operator]
        st.caption(
            f"Reported prompt tokens differ from chatmem's count by {drift:+.1f} tokens "
            f"a call on average ({len(chats)} chat calls)."
        )
    elif any(s.kind == "chat" for s in stats):
        st.caption(
            "The server reports no token usage for its replies, so there is nothing "
            "to compare chatmem's count with."
        )
    frame = pd.DataFrame(
        [
            {
                "time": clock(s.at),
                "kind": s.kind,
                "seq": s.seq,
                "prompt (estimate)": s.prompt_estimate,
                "prompt (reported)": s.prompt_reported,
                "completion (reported)": s.completion_reported,
                "reported by": COUNTED_BY.get(s.counted_by, s.counted_by),
            }
            for s in stats
        ]
    )
    for column in ("seq", "prompt (reported)", "completion (reported)"):
        frame[column] = frame[column].astype("Int64")  # blank, never "None"
    st.dataframe(frame, hide_index=True, width="stretch")


def _event_log(events: list[Event]) -> None:
    if not events:
        st.info("No events yet: folds, trims, recalls and errors are listed here.")
        return
    frame = pd.DataFrame(
        [
            {"time": clock(e.at), "kind": str(e.kind), "message": shown(e.message)}
            for e in reversed(events)
        ]
    )
    st.dataframe(
        frame,
        hide_index=True,
        width="stretch",
        column_config={"message": st.column_config.TextColumn(width="large")},
    )

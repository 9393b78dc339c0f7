"""The sidebar inspector, shown on every page: budget gauge, summary, fold notices, sliders,
the recall switch, and who is signed in (or that the app is in local mode).

Folds run on a background thread. The live part of the sidebar is a fragment that polls
(``run_every``) only while a fold is running; when the fold lands it triggers one full rerun
so every page shows the new state, and the poll stops. The worker never calls Streamlit.
"""

from __future__ import annotations

import streamlit as st

from chatmem.config import KEEP_RECENT_RANGE, MAX_TOKENS_MIN
from chatmem.errors import ContextOverflow, StoreError
from chatmem.events import EventKind
from chatmem.memory import Context
from chatmem.ui.charts import GAUGE_COLOR_NAMES, WARN_AT, budget_share, gauge_html, segments
from chatmem.ui.state import (
    KEEP_RECENT_KEY,
    MAX_TOKENS_KEY,
    RECALL_KEY,
    ChatSession,
    setup_error,
    shown,
    signed_in,
    slider_max_tokens,
)
from chatmem.ui.text import ago, clock, safe_markdown

POLL_SECONDS = 1.0
TOAST_ICONS = {
    EventKind.FOLD: ":material/compress:",
    EventKind.FOLD_FAILED: ":material/warning:",
    EventKind.RECALL_UNAVAILABLE: ":material/search_off:",
}
LOCAL_ADDRESSES = ("localhost", "127.0.0.1", "::1")
LOCAL_MODE = "Local mode: no sign-in; serving on localhost only"


def render_sidebar(sess: ChatSession | None) -> None:
    """The inspector in the sidebar (or the setup error, if the chat could not start)."""
    with st.sidebar:
        if sess is None:
            st.error(setup_error() or "The chat could not start.", icon=":material/error:")
            return
        st.markdown("### Memory")
        if sess.bot.model_notice:
            st.info(shown(sess.bot.model_notice, sess.bot), icon=":material/info:")
        for note in sess.setup_notes:
            st.info(note, icon=":material/info:")
        _live_panel(sess)
        _settings(sess)
        _access(sess)


def _live_panel(sess: ChatSession) -> None:
    polling = sess.bot.folding

    @st.fragment(run_every=POLL_SECONDS if polling else None)
    def live() -> None:
        if polling and not sess.bot.folding:
            st.rerun()  # the fold landed: redraw everything once, without the poll
        for event in sess.new_events():
            if event.kind in TOAST_ICONS:
                st.toast(shown(event.message, sess.bot), icon=TOAST_ICONS[event.kind])
        if sess.bot.folding:
            st.info("Folding older messages into the summary…", icon=":material/hourglass_top:")
        _gauge(sess)
        _summary(sess)

    live()


def _gauge(sess: ChatSession) -> None:
    bot = sess.bot
    with st.container(key="gauge"):
        try:
            context = bot.next_request()
        except ContextOverflow as exc:
            st.warning(str(exc), icon=":material/warning:")
            return
        except StoreError as exc:  # the chat below still works; only the gauge is missing
            st.warning(
                shown(f"The next request could not be measured: {exc}", bot),
                icon=":material/warning:",
            )
            return
        budget = context.budget
        share = budget_share(budget)
        text = f"**{budget.total:,}** / {budget.limit:,} tokens ({share:.0%})"
        if share >= WARN_AT:
            text = f":red[{text}] · near the limit"
        st.markdown(f"Next request: {text}")
        st.html(gauge_html(budget))
        st.caption(
            f"Token counts: **{bot.counter_exactness}**",
            help=f"Counted with {bot.counter_label}.",
        )
        legend = " ".join(
            f":{GAUGE_COLOR_NAMES[name]}[■] {name} {tokens:,}"
            for name, tokens in segments(budget).items()
        )
        # the gray segment holds the system prompt and the reply's priming: name both, so the
        # figure matches the inspector's system row
        legend = legend.replace(
            f"system {budget.system + budget.priming:,}",
            f"system {budget.system:,} + {budget.priming:,} priming",
            1,
        )
        recalled = (
            f"  \n{len(context.recalled)} older message(s) recalled for your last message"
            if context.recalled
            else ""
        )
        st.caption(
            f"{legend}  \nand {budget.reply_reserve:,} more reserved for the reply{recalled}"
        )
        _gauge_notes(sess, context)


def _gauge_notes(sess: ChatSession, context: Context) -> None:
    """Why the gauge may look emptier than the chat: a last exchange that no longer fits,
    a fold still running."""
    bot = sess.bot
    newest = bot.newest_message()
    notes = []
    if context.budget.recent == 0 and newest is not None and newest.role != "user":
        notes.append(
            "Recent 0: the last exchange is longer than this budget leaves room for, so your "
            "next message goes without it (only its summary, once folded, and what recall "
            "brings back)."
        )
    if bot.folding:
        notes.append(
            "Your next message waits for the fold, then goes with the new summary."
            if bot.waits_for_fold
            else "Sent before the fold lands, your next message goes as shown: the messages "
            "being folded are left out, not yet summarised."
        )
    if notes:
        with st.container(key="gauge_notes"):
            st.caption("  \n".join(notes))


def _summary(sess: ChatSession) -> None:
    bot = sess.bot
    summary = bot.current_summary
    with st.container(key="summary"):
        if summary is None:
            st.caption("No summary yet: it appears after the first fold.")
            return
        label = f"Summary · {summary.tokens:,} tokens · updated {clock(summary.created_at)}"
        with st.expander(label, expanded=True, icon=":material/notes:"):
            st.markdown(safe_markdown(summary.text))
            st.caption(
                f"Covers messages 1–{summary.covers_seq} · {ago(summary.created_at)}"
                + (f" · by {summary.model}" if summary.model else "")
            )


def _apply_max_tokens(sess: ChatSession) -> None:
    value = int(st.session_state[MAX_TOKENS_KEY])
    try:
        sess.bot.max_tokens = value
    except ValueError as exc:
        sess.settings_notice = str(exc)
        st.session_state[MAX_TOKENS_KEY] = sess.bot.max_tokens
        return
    if not sess.busy:  # a lower budget folds now, in the background (or when the reply ends)
        sess.bot.schedule_fold()


def _apply_keep_recent(sess: ChatSession) -> None:
    try:
        sess.bot.keep_recent = int(st.session_state[KEEP_RECENT_KEY])
    except ValueError as exc:
        sess.settings_notice = str(exc)
        st.session_state[KEEP_RECENT_KEY] = sess.bot.keep_recent


def _apply_recall(sess: ChatSession) -> None:
    sess.bot.recall = bool(st.session_state[RECALL_KEY])


def _settings(sess: ChatSession) -> None:
    bot = sess.bot
    top = max(slider_max_tokens(bot), bot.max_tokens)
    if st.session_state.get(MAX_TOKENS_KEY) is None:
        st.session_state[MAX_TOKENS_KEY] = bot.max_tokens
    if st.session_state.get(KEEP_RECENT_KEY) is None:
        st.session_state[KEEP_RECENT_KEY] = bot.keep_recent
    st.slider(
        "Budget per request (max_tokens)",
        min_value=MAX_TOKENS_MIN,
        max_value=top,
        step=1,
        key=MAX_TOKENS_KEY,
        on_change=_apply_max_tokens,
        args=(sess,),
        help="The most prompt tokens a request may use: system, summary, recalled and recent "
        f"messages. {bot.reply_reserve:,} more are reserved for the reply. Takes "
        "effect on the next turn; lowering it folds older messages now.",
    )
    st.slider(
        "Messages kept verbatim (keep_recent)",
        min_value=KEEP_RECENT_RANGE[0],
        max_value=KEEP_RECENT_RANGE[1],
        step=1,
        key=KEEP_RECENT_KEY,
        on_change=_apply_keep_recent,
        args=(sess,),
        help="How many of the newest messages stay word for word after a fold.",
    )
    if st.session_state.get(RECALL_KEY) is None:
        st.session_state[RECALL_KEY] = bot.recall
    elif bool(st.session_state[RECALL_KEY]) != bot.recall:
        bot.recall = bool(st.session_state[RECALL_KEY])  # e.g. a conversation just opened
    st.toggle(
        "Recall older messages",
        key=RECALL_KEY,
        on_change=_apply_recall,
        args=(sess,),
        help="Bring back older messages that matter to the one you send (found by their "
        "words), within a share of the budget. The inspector shows what was recalled and why.",
    )
    unavailable = bot.recall_unavailable
    if unavailable and bot.recall:
        st.warning(shown(unavailable, bot), icon=":material/search_off:")
    if sess.settings_notice:
        st.warning(sess.settings_notice, icon=":material/warning:")
        sess.settings_notice = None
    st.caption(f"Tokens counted with {bot.counter_label}.")


def _access(sess: ChatSession) -> None:
    """Who is signed in, or that there is no sign-in and where the app listens."""
    if sess.bot.settings.require_login:
        if signed_in():
            who = st.user.get("email") or st.user.get("name") or "you"
            st.caption(f"Signed in as {safe_markdown(str(who))}")
            st.button("Log out", key="logout", icon=":material/logout:", on_click=st.logout)
        return
    address = st.get_option("server.address")
    if address in LOCAL_ADDRESSES:
        st.caption(LOCAL_MODE)
    else:
        where = f"on {safe_markdown(str(address))}" if address else "on every network interface"
        st.caption(
            f":orange[No sign-in, and the server listens {where}: anyone who can reach it "
            "can read every conversation. Set CHATMEM_REQUIRE_LOGIN=1, or serve on localhost.]"
        )

"""The compare page: the shipped sample conversation through three memory strategies."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from chatmem.config import MAX_TOKENS_MIN
from chatmem.replay import STRATEGIES, MemoryOptions, ReplayResult, replay
from chatmem.sample_conversation import FACT_QUESTIONS, SYSTEM_PROMPT, USER_TURNS
from chatmem.ui.charts import line_chart
from chatmem.ui.state import (
    ChatSession,
    model_label,
    open_page,
    slider_max_tokens,
)

RESULT_KEY = "compare_result"
TURNS_KEY = "compare_turns"
BUDGET_KEY = "compare_max_tokens"
KEEP_KEY = "compare_keep_recent"
REPLY_KEY = "compare_reply_tokens"
DEFAULT_TURNS = 20
LOCAL_REPLY_TOKENS = 128  # the local model rambles; shorter replies keep the replay quick
MIN_TURNS = max(q.said_at_turn for q in FACT_QUESTIONS)  # every early fact has been said
DEFAULT_BUDGET = 600


def render_compare_page() -> None:
    """Draw the compare page."""
    sess = open_page("Compare memory strategies")
    st.caption(
        f"Replays the first user turns of a shipped {len(USER_TURNS)}-turn conversation (a week "
        "in Lisbon; names, numbers and decisions come in the first ten turns) through three "
        "strategies, then asks each what it still knows. Model: "
        f"**{model_label(sess.bot)}**."
    )
    local = sess.bot.settings.uses_local_model
    reserve = sess.bot.reply_reserve
    with st.form("compare_form", border=True):
        cols = st.columns(4)
        turns = cols[0].number_input(
            "User turns to replay",
            min_value=MIN_TURNS,
            max_value=len(USER_TURNS),
            value=MIN_TURNS if local else DEFAULT_TURNS,
            step=1,
            key=TURNS_KEY,
            help="Keep it small on the local model: each turn is three model calls.",
        )
        budget = cols[1].number_input(
            "max_tokens (trimming and summary)",
            min_value=MAX_TOKENS_MIN,
            max_value=slider_max_tokens(sess.bot),
            value=min(DEFAULT_BUDGET, slider_max_tokens(sess.bot)),
            step=50,
            key=BUDGET_KEY,
        )
        keep = cols[2].number_input(
            "keep_recent", min_value=2, max_value=40, value=4, step=1, key=KEEP_KEY
        )
        reply = cols[3].number_input(
            "Longest reply (tokens)",
            min_value=16,
            max_value=reserve,
            value=min(LOCAL_REPLY_TOKENS, reserve) if local else reserve,
            step=16,
            key=REPLY_KEY,
            help="The reply reserve of every strategy: the cap on each reply's length.",
        )
        run = st.form_submit_button("Run the replay", type="primary", icon=":material/play_arrow:")
    if local:
        st.caption(
            "On the bundled local model a replay of 10 turns takes a few minutes on a small "
            "machine, mostly in its summary calls."
        )
    if run:
        st.session_state[RESULT_KEY] = _run(sess, int(turns), int(budget), int(keep), int(reply))
    result = st.session_state.get(RESULT_KEY)
    if isinstance(result, ReplayResult):
        _show(result)
    else:
        st.info(
            f"Nothing replayed yet. {len(FACT_QUESTIONS)} questions about early facts are asked "
            "at the end, e.g. “What is my name?”.",
            icon=":material/info:",
        )


def _run(sess: ChatSession, turns: int, budget: int, keep: int, reply: int) -> ReplayResult:
    bar = st.progress(0.0, text="Starting…")

    def progress(done: int, total: int, label: str) -> None:
        bar.progress(done / total, text=f"{done}/{total} calls · {label}")

    bot = sess.bot
    result = replay(
        bot.model,
        USER_TURNS[:turns],
        FACT_QUESTIONS,
        MemoryOptions(
            system=SYSTEM_PROMPT,
            max_tokens=budget,
            keep_recent=keep,
            reply_reserve=reply,
            settings=bot.settings,
            summary_max_tokens=bot.summary_max_tokens,
        ),
        progress=progress,
    )
    bar.empty()
    return result


def _show(result: ReplayResult) -> None:
    st.markdown(
        f"#### {result.turns} turns · max_tokens {result.max_tokens:,} · "
        f"keep_recent {result.keep_recent} · replies up to {result.reply_reserve:,} tokens"
    )
    cols = st.columns(3)
    full = result.runs[STRATEGIES[0]].input_tokens
    for col, name in zip(cols, STRATEGIES, strict=True):
        run = result.runs[name]
        delta = None
        if name != STRATEGIES[0] and full:
            delta = f"{(run.input_tokens - full) / full:+.0%} vs full history"
        col.metric(
            f"{name}: input tokens",
            f"{run.input_tokens:,}",
            delta=delta,
            delta_color="inverse",
            help="All prompt tokens sent over the replay (summary calls included).",
        )
        col.caption(f"Knows {result.score(name)} of {len(result.questions)} early facts")
        if run.stopped:
            col.warning(
                f"Stopped{f' at turn {run.stopped_at}' if run.stopped_at else ''}: {run.stopped}"
            )
    frame = pd.DataFrame(result.rows(), columns=["strategy", "turn", "prompt", "cumulative"])
    left, right = st.columns(2)
    with left:
        st.altair_chart(
            line_chart(frame, "cumulative", "Cumulative input tokens", STRATEGIES),
            width="stretch",
        )
    with right:
        st.altair_chart(
            line_chart(frame, "prompt", "Prompt size per turn", STRATEGIES, rule=result.max_tokens),
            width="stretch",
        )
    st.caption("Rolling-summary input includes its summary calls. The dashed line is max_tokens.")
    st.markdown("#### What each strategy still knows")
    st.dataframe(
        pd.DataFrame(result.knowledge()),
        hide_index=True,
        width="stretch",
        column_config={name: st.column_config.TextColumn(width="medium") for name in STRATEGIES},
    )

"""The compare page: the shipped sample conversation through three memory strategies."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from chatmem.config import MAX_TOKENS_MIN
from chatmem.errors import ChatmemError
from chatmem.replay import STRATEGIES, MemoryOptions, Progress, ReplayResult, replay
from chatmem.sample_conversation import (
    ASSISTANT_REPLIES,
    FACT_QUESTIONS,
    SYSTEM_PROMPT,
    USER_TURNS,
)
from chatmem.ui.charts import line_chart
from chatmem.ui.state import (
    ChatSession,
    model_label,
    open_page,
    shown,
    slider_max_tokens,
)

RESULT_KEY = "compare_result"
ERROR_KEY = "compare_error"
TURNS_KEY = "compare_turns"
BUDGET_KEY = "compare_max_tokens"
KEEP_KEY = "compare_keep_recent"
REPLY_KEY = "compare_reply_tokens"
REPLIES_KEY = "compare_replies"
SCRIPTED = "scripted"
FROM_MODEL = "from the model"
DEFAULT_TURNS = 20
LOCAL_REPLY_TOKENS = 128  # the local model rambles; shorter replies keep the replay quick
MIN_TURNS = max(q.said_at_turn for q in FACT_QUESTIONS)  # every early fact has been said
DEFAULT_BUDGET = 600
LOCAL_TIME_NOTE = (
    "On the bundled local model, the default replay (20 turns, scripted replies) asks the "
    f"model only the {3 * len(FACT_QUESTIONS)} final questions, and folds make no model "
    "call: about a minute on a 2-core machine (57 s measured at load average 2.5, 95 s at "
    "5 to 6). With replies from the model, each turn adds three model calls."
)


def render_compare_page() -> None:
    """Draw the compare page."""
    sess = open_page("Compare memory strategies")
    st.caption(
        f"Replays the first user turns of a shipped {len(USER_TURNS)}-turn conversation (a week "
        "in Lisbon; names, numbers and decisions come in the first ten turns) through three "
        f"strategies, then asks each {len(FACT_QUESTIONS)} questions about the early facts, "
        "each from the end of the replay. Two answers per strategy: did its **memory** keep "
        "the fact (its words are in the request the model received), and did the **model** "
        f"answer it (its words are in the reply). Model: **{model_label(sess.bot)}**."
    )
    local = sess.bot.settings.uses_local_model
    reserve = sess.bot.reply_reserve
    with st.form("compare_form", border=True):
        cols = st.columns(4)
        turns = cols[0].number_input(
            "User turns to replay",
            min_value=MIN_TURNS,
            max_value=len(USER_TURNS),
            value=DEFAULT_TURNS,
            step=1,
            key=TURNS_KEY,
            help="With replies from the model, each turn is three model calls.",
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
        replies = st.radio(
            "Replies to the replayed turns",
            [SCRIPTED, FROM_MODEL],
            index=0 if local else 1,
            horizontal=True,
            key=REPLIES_KEY,
            help="Scripted: the conversation script carries the assistant's side too, and the "
            "model is called only for the final questions (and summaries). From the model: "
            "it answers every replayed turn.",
        )
        run = st.form_submit_button("Run the replay", type="primary", icon=":material/play_arrow:")
    if local:
        st.caption(LOCAL_TIME_NOTE)
    if run:
        _run(sess, int(turns), int(budget), int(keep), int(reply), replies == SCRIPTED)
    error = st.session_state.get(ERROR_KEY)
    if isinstance(error, str):
        st.error(error, icon=":material/error:")
    result = st.session_state.get(RESULT_KEY)
    if isinstance(result, ReplayResult):
        _show(result, sess)
    elif error is None:
        st.info(
            f"Nothing replayed yet. {len(FACT_QUESTIONS)} questions about early facts are asked "
            "at the end, e.g. “What is my name?”.",
            icon=":material/info:",
        )


def time_left(seconds: float | None) -> str:
    """The time left, in words for the progress bar."""
    if seconds is None:
        return "estimating the time left"
    if seconds < 10:
        return "a few seconds left"
    minutes, rest = divmod(round(seconds), 60)
    return f"about {minutes} min {rest:02d} s left" if minutes else f"about {rest} s left"


def _run(sess: ChatSession, turns: int, budget: int, keep: int, reply: int, scripted: bool) -> None:
    """Replay and keep the result (or the error, in words) for this and later reruns."""
    bar = st.progress(0.0, text="Starting…")

    def progress(step: Progress) -> None:
        bar.progress(
            step.done / step.total,
            text=f"{step.done}/{step.total} steps · {time_left(step.seconds_left)} · {step.label}",
        )

    bot = sess.bot
    st.session_state[ERROR_KEY] = None
    try:
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
            replies=ASSISTANT_REPLIES[:turns] if scripted else None,
            progress=progress,
        )
    except (ChatmemError, ValueError) as exc:  # a setting the model refuses, a store failure
        st.session_state[RESULT_KEY] = None
        st.session_state[ERROR_KEY] = shown(f"The replay could not run: {exc}", bot)
        return
    finally:
        bar.empty()
    st.session_state[RESULT_KEY] = result
    failed = [run for run in result.runs.values() if run.model_failed]
    if failed:
        st.session_state[ERROR_KEY] = shown(
            f"The model server failed: {failed[0].stopped} The strategies it stopped show what "
            "their memory kept all the same; their model column stays empty from there on.",
            bot,
        )


def _show(result: ReplayResult, sess: ChatSession) -> None:
    replies = "scripted" if result.scripted else "from the model"
    st.markdown(
        f"#### {result.turns} turns · max_tokens {result.max_tokens:,} · "
        f"keep_recent {result.keep_recent} · replies {replies}, up to "
        f"{result.reply_reserve:,} tokens"
    )
    st.caption(f"Replayed in {result.seconds:,.0f} s with {shown(result.model_label, sess.bot)}.")
    cols = st.columns(3)
    full = result.runs[STRATEGIES[0]].input_tokens
    questions = len(result.questions)
    for col, name in zip(cols, STRATEGIES, strict=True):
        run = result.runs[name]
        delta = None
        if name != STRATEGIES[0] and full:
            delta = f"{(run.input_tokens - full) / full:+.0%} vs full history"
        with col.container(key=f"compare_{name.replace(' ', '_')}"):
            st.metric(
                f"{name}: input tokens",
                f"{run.input_tokens:,}",
                delta=delta,
                delta_color="inverse",
                help="All prompt tokens of the replayed turns (summary calls included).",
            )
            memory, model = st.columns(2)
            memory.metric(
                "Memory kept",
                f"{result.memory_score(name)} of {questions}",
                help="Early facts whose words are in the request the model received.",
            )
            model.metric(
                "Model answered",
                f"{result.score(name)} of {questions}",
                help="Early facts whose words are in the model's answer.",
            )
            if run.stopped:
                where = f" at turn {run.stopped_at}" if run.stopped_at else ""
                st.warning(f"Stopped{where}: {shown(run.stopped, sess.bot)}")
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
    st.markdown("#### What each strategy's memory kept, and what the model answered")
    st.caption(
        "Memory: ✓ and where the request held the fact (summary, recalled, verbatim), or ✗. "
        "Model: ✓ or ✗ and its answer. A memory can keep a fact that a small model then fails "
        "to use."
    )
    st.dataframe(
        pd.DataFrame(result.knowledge()),
        hide_index=True,
        width="stretch",
        column_config={
            f"{name}: {side}": st.column_config.TextColumn(width="medium")
            for name in STRATEGIES
            for side in ("memory", "model")
        },
    )

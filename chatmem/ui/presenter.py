"""The presenter page: what the bot remembers and what it has forgotten, in sentences, with
the before and after of the last fold. Written for people who do not write code; every figure
comes from the same public views the inspector draws (``next_request()``, ``memory_marks()``,
``current_summary``, ``last_fold()``)."""

from __future__ import annotations

import streamlit as st

from chatmem.diffs import seq_ranges
from chatmem.errors import ContextOverflow, StoreError
from chatmem.inspection import FoldStory
from chatmem.memory import Context
from chatmem.session import ChatMemory
from chatmem.ui.state import open_page, shown
from chatmem.ui.text import preview, safe_markdown


def render_presenter_page() -> None:
    """Draw the presenter page for this browser session."""
    sess = open_page("What the bot remembers")
    bot = sess.bot
    try:
        total = bot.stored_message_count()
        context = bot.next_request()
        story = bot.last_fold()
    except (ContextOverflow, StoreError) as exc:
        st.warning(shown(str(exc), bot), icon=":material/warning:")
        return
    if total == 0:
        st.info("Nothing to remember yet: start a chat, and this page tells its story.")
        return
    with st.container(key="remembers"):
        st.markdown("  \n".join(remembers(bot, context, total)))
    with st.container(key="forgets"):
        st.markdown("  \n".join(forgets(bot, context)))
    _fold(story, context.budget.limit)


def remembers(bot: ChatMemory, context: Context, total: int) -> list[str]:
    """What the next request holds, in sentences (markdown)."""
    marks = bot.memory_marks(context)
    sent = sorted(marks.sent)
    budget = context.budget
    share = budget.total / budget.limit if budget.limit else 0.0
    lines = [
        f"This conversation has **{total:,} message(s)**. Each time you send one, the bot is "
        f"given a fresh note of at most {budget.limit:,} tokens (a token is about ¾ of a "
        f"word); the next one uses {budget.total:,} ({share:.0%})."
    ]
    if sent:
        lines.append(
            f"- It reads **the newest {len(sent)} message(s) word for word** "
            f"({seq_ranges(sent)}, {budget.recent:,} tokens)."
        )
    summary = bot.current_summary
    if summary is not None and marks.summary_sent:
        lines.append(
            f"- Everything up to message #{summary.covers_seq} it knows **only from its "
            f"summary**: a note of {summary.tokens:,} tokens it wrote itself, shown below."
        )
    elif summary is not None:
        lines.append(
            "- Its summary does not fit the budget right now, so the next request goes without it."
        )
    if marks.recalled:
        lines.append(
            f"- For your last message it **looked back** and brought {len(marks.recalled)} "
            f"older message(s) back word for word ({seq_ranges(sorted(marks.recalled))})."
        )
    return lines


def forgets(bot: ChatMemory, context: Context) -> list[str]:
    """What the next request leaves out, in sentences (markdown)."""
    if context.trimmed:
        first = bot.current_summary.covers_seq + 1 if bot.current_summary else 1
        start = bot.memory_marks(context).window_start
        where = f" (between #{first} and #{start - 1})" if start and start > first else ""
        return [
            f"It has **forgotten for now {context.trimmed} message(s)**{where}: "
            "they no longer fit the budget and are not in the summary yet. The next fold "
            "writes them into the summary."
        ]
    if bot.current_summary is None:
        return ["It has **forgotten nothing**: the whole conversation still fits word for word."]
    return [
        "It has forgotten **the exact words** of older messages, not what they said: the "
        "summary keeps the gist. Every message stays saved, and the bot can recall older ones "
        "when you ask about them."
    ]


def _fold(story: FoldStory | None, limit: int) -> None:
    st.markdown("### The last fold")
    if story is None:
        st.caption(
            f"No fold yet: the summary is written when the conversation outgrows the "
            f"{limit:,}-token budget."
        )
        return
    with st.container(key="fold_story"):
        before = (
            f"{story.before_tokens:,} tokens"
            if story.before_tokens is not None
            else "their tokens were not recorded"
        )
        smaller = (
            f", {1 - story.after_tokens / story.before_tokens:.0%} smaller"
            if story.before_tokens
            else ""
        )
        st.markdown(
            f"The bot squeezed **{story.folded_count} message(s)** ({before}) into a summary "
            f"of **{story.after_tokens:,} tokens**{smaller}. It now covers messages "
            f"1–{story.covers_seq}."
        )
        left, right = st.columns(2)
        with left, st.container(border=True, key="fold_before"):
            st.markdown("**Before:** what it had to remember")
            if story.before_summary:
                st.caption("The earlier summary")
                st.markdown(safe_markdown(story.before_summary))
            st.caption(f"The {story.folded_count} message(s) it folded")
            for seq, speaker, text in story.folded:
                st.markdown(f"**#{seq} {safe_markdown(speaker)}:** {safe_markdown(preview(text))}")
            if story.folded_count > len(story.folded):
                st.caption(f"… and {story.folded_count - len(story.folded)} more.")
        with right, st.container(border=True, key="fold_after"):
            st.markdown(f"**After:** summary v{story.number}")
            st.markdown(safe_markdown(story.after_text))

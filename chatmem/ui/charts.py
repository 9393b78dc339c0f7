"""Charts for the inspector, the compare page and the sidebar gauge (data in, chart out)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import altair as alt
import pandas as pd

from chatmem.inspection import TurnStat
from chatmem.memory import Budget

WARN_AT = 0.9  # share of the budget at which the gauge turns to warning colours

GAUGE_SEGMENTS = ("system", "summary", "recalled", "recent", "free")
# Close to Streamlit's named markdown colours, so a caption can serve as the legend.
GAUGE_COLORS = ("#a3a8b8", "#803df5", "#21c354", "#1c83e1", "#e6e9ef")
GAUGE_WARN_COLORS = ("#a3a8b8", "#803df5", "#21c354", "#ff4b4b", "#ffd6d6")
GAUGE_COLOR_NAMES = {"system": "gray", "summary": "violet", "recalled": "green", "recent": "blue"}


def segments(budget: Budget) -> dict[str, int]:
    """Tokens of the next request by gauge segment (all but "free"), in gauge order."""
    return {
        "system": budget.system + budget.priming,
        "summary": budget.summary,
        "recalled": budget.recalled,
        "recent": budget.recent + budget.pinned,  # pinned messages are sent verbatim too
    }


def budget_share(budget: Budget) -> float:
    return budget.total / budget.limit if budget.limit else 0.0


def gauge_html(budget: Budget) -> str:
    """A stacked horizontal bar of where the next request's tokens go, out of ``limit``.

    Plain HTML and inline CSS (rendered with ``st.html``, which sanitises it): it draws
    instantly on every page and rerun, where a chart library would cost a script-side spec
    build and a browser-side chart runtime. Only numbers and fixed labels go into it.
    """
    near = budget_share(budget) >= WARN_AT
    colors = dict(zip(GAUGE_SEGMENTS, GAUGE_WARN_COLORS if near else GAUGE_COLORS, strict=True))
    scale = max(budget.limit, budget.total, 1)
    bars = "".join(
        f'<div title="{name}: {tokens:,} tokens" style="width:{100 * tokens / scale:.3f}%;'
        f'background:{colors[name]};height:100%"></div>'
        for name, tokens in segments(budget).items()
        if tokens > 0
    )
    label = f"{budget.total:,} of {budget.limit:,} tokens used"
    return (
        f'<div role="img" aria-label="{label}" title="{label}" style="display:flex;'
        f"width:100%;height:14px;border-radius:4px;overflow:hidden;"
        f'background:{colors["free"]}">{bars}</div>'
    )


def stats_frame(stats: Sequence[TurnStat]) -> pd.DataFrame:
    """Long-form rows for the tokens-per-call chart: one row per (call, measure)."""
    rows: list[dict[str, Any]] = []
    for i, stat in enumerate(stats, start=1):
        call = f"{i} {stat.kind}"

        def add(measure: str, tokens: int | None, call: str = call, n: int = i) -> None:
            if tokens is not None:
                rows.append({"call": call, "n": n, "measure": measure, "tokens": tokens})

        if stat.kind == "chat":
            add("prompt (estimate)", stat.prompt_estimate)
            add("prompt (server)", stat.prompt_reported)
        else:
            add("summary prompt", stat.prompt_reported or stat.prompt_estimate)
        add("completion", stat.completion_reported)
    return pd.DataFrame(rows, columns=["call", "n", "measure", "tokens"])


STAT_MEASURES = ("prompt (estimate)", "prompt (server)", "completion", "summary prompt")
STAT_COLORS = ("#3b82f6", "#93c5fd", "#10b981", "#8b5cf6")


def stats_chart(stats: Sequence[TurnStat]) -> alt.Chart:
    """Grouped bars per model call: our estimate beside the server's count, and completions."""
    frame = stats_frame(stats)
    order = list(dict.fromkeys(frame["call"]))
    return (
        alt.Chart(frame)
        .mark_bar()
        .encode(
            x=alt.X("call:N", sort=order, title="model call", axis=alt.Axis(labelAngle=-45)),
            xOffset=alt.XOffset("measure:N", sort=list(STAT_MEASURES)),
            y=alt.Y("tokens:Q", title="tokens"),
            color=alt.Color(
                "measure:N",
                scale=alt.Scale(domain=list(STAT_MEASURES), range=list(STAT_COLORS)),
                legend=alt.Legend(orient="bottom", title=None),
            ),
            tooltip=["call:N", "measure:N", alt.Tooltip("tokens:Q", format=",")],
        )
        .properties(height=280)
    )


STRATEGY_COLORS = ("#ef4444", "#f59e0b", "#3b82f6")


def line_chart(
    frame: pd.DataFrame, y: str, title: str, strategies: Sequence[str], rule: int | None = None
) -> alt.LayerChart | alt.Chart:
    """A line per strategy over the replayed turns; an optional dashed budget line."""
    base = (
        alt.Chart(frame)
        .mark_line(point=alt.OverlayMarkDef(size=18))
        .encode(
            x=alt.X("turn:Q", title="user turn", axis=alt.Axis(tickMinStep=1)),
            y=alt.Y(f"{y}:Q", title="tokens"),
            color=alt.Color(
                "strategy:N",
                scale=alt.Scale(domain=list(strategies), range=list(STRATEGY_COLORS)),
                legend=alt.Legend(orient="bottom", title=None),
            ),
            tooltip=["strategy:N", "turn:Q", alt.Tooltip(f"{y}:Q", format=",")],
        )
        .properties(height=300, title=title)
    )
    if rule is None:
        return base
    line = (
        alt.Chart(pd.DataFrame({"limit": [rule]}))
        .mark_rule(strokeDash=[4, 4], color="#64748b")
        .encode(y="limit:Q")
    )
    return base + line

"""Tokens billed over a long conversation: full history vs trimming vs rolling summary.

A scripted 300-turn conversation (deterministic user messages; a few facts stated early,
asked back at the end) goes through each strategy, talking HTTP to the fake
OpenAI-compatible server in ``tests/fakes/`` (in this process):

* full history: every request resends the whole conversation (what a naive bot does);
* trimming only: a chatmem ``Memory`` with no folds (the oldest exchanges fall out);
* rolling summary: ``ChatMemory(background=False)``, folding old turns into a summary, with
  chatmem's defaults (recall tier on), and again with ``recall=False``.

Per turn it records the prompt tokens (chatmem's tiktoken estimate and the usage the server
reported) and every summary call's tokens.

Run: ``python -m bench.bench_tokens [--quick] [--no-chart] [--out DIR]``.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from bench._common import (
    Report,
    finish_report,
    machine_line,
    markdown_table,
    pyplot,
    run_main,
    save_chart,
    script_parser,
    user_text,
)

NAME = "bench_tokens"
TURNS = 300
QUICK_TURNS = 50
MAX_TOKENS = 3000
KEEP_RECENT = 6
REPLY_WORDS = 60
SUMMARY_WORDS = 120
SYSTEM = "You are a friendly assistant. Be concise."
MODEL = "gpt-4o-mini"

# Facts stated early (turn number -> message); asked back in the last turns.
FACTS: dict[str, str] = {
    "name": "Sam",
    "favourite colour": "teal",
    "budget": "4200 euros",
    "home city": "Lisbon",
    "deadline": "March 14",
}
FACT_TURNS = {
    1: "Hi, my name is Sam. I want help planning a trip.",
    2: "Good to know. For the record, my favourite colour is teal; it may matter for gifts.",
    4: "About money: my budget is 4200 euros for the whole trip, flights included.",
    6: "I will leave from home, and my home city is Lisbon, so flights start there.",
    9: "One more constraint: my deadline is March 14 for booking everything.",
}


def script(turns: int) -> list[str]:
    """The user's messages: facts early, ordinary messages, questions about the facts last."""
    rng = random.Random(300)
    questions = [f"What is my {key}?" for key in FACTS]
    messages = []
    for turn in range(1, turns + 1):
        from_end = turns - turn
        if from_end < len(questions):
            messages.append(questions[len(questions) - 1 - from_end])
        elif turn in FACT_TURNS:
            messages.append(FACT_TURNS[turn])
        else:
            messages.append(user_text(rng))
    return messages


@dataclass
class TurnRecord:
    turn: int
    prompt_estimate: int  # chatmem's tiktoken count of the request
    prompt_reported: int | None  # the server's usage.prompt_tokens
    completion_reported: int | None
    summary_calls: int = 0
    summary_prompt: int = 0
    summary_completion: int = 0
    trimmed: int = 0  # unsummarised messages left out of this request to fit the budget
    reply: str = ""


@dataclass
class Strategy:
    key: str
    label: str
    turns: list[TurnRecord] = field(default_factory=list)

    @property
    def chat_billed(self) -> int:
        return sum((t.prompt_reported or 0) + (t.completion_reported or 0) for t in self.turns)

    @property
    def summary_billed(self) -> int:
        return sum(t.summary_prompt + t.summary_completion for t in self.turns)

    @property
    def total_billed(self) -> int:
        return self.chat_billed + self.summary_billed

    @property
    def summary_calls(self) -> int:
        return sum(t.summary_calls for t in self.turns)

    @property
    def first_fold(self) -> int | None:
        """The turn whose request first went out after a fold (None if never folded)."""
        for i, t in enumerate(self.turns):
            if t.summary_calls:
                return self.turns[i + 1].turn if i + 1 < len(self.turns) else None
        return None


def _facts_recalled(strategy: Strategy) -> int:
    replies = [t.reply for t in strategy.turns[-len(FACTS) :]]
    return sum(
        1
        for (_key, value), reply in zip(FACTS.items(), replies, strict=True)
        if value.lower() in reply.lower()
    )


# ------------------------------------------------------------------------------ strategies
def run_full_history(model: Any, messages: list[str]) -> Strategy:
    out = Strategy("full", "full history (resend everything)")
    history: list[dict[str, Any]] = [{"role": "system", "content": SYSTEM}]
    for turn, text in enumerate(messages, 1):
        history.append({"role": "user", "content": text})
        estimate = model.counter.messages(history)
        reply = model.stream(list(history), max_reply_tokens=512)
        answer = reply.read()
        history.append({"role": "assistant", "content": answer})
        usage = reply.usage
        out.turns.append(
            TurnRecord(
                turn,
                estimate,
                usage.prompt_tokens if usage else None,
                usage.completion_tokens if usage else None,
                reply=answer,
            )
        )
    return out


def run_trimming(model: Any, messages: list[str]) -> Strategy:
    from chatmem.memory import Memory

    out = Strategy("trim", "trimming only (chatmem Memory, no folds)")
    memory = Memory(system=SYSTEM, counter=model.counter, max_tokens=MAX_TOKENS)
    for turn, text in enumerate(messages, 1):
        memory.add("user", text)
        context = memory.context()
        reply = model.stream(context.messages, max_reply_tokens=512)
        answer = reply.read()
        memory.add("assistant", answer)
        usage = reply.usage
        out.turns.append(
            TurnRecord(
                turn,
                context.budget.total,
                usage.prompt_tokens if usage else None,
                usage.completion_tokens if usage else None,
                trimmed=context.trimmed,
                reply=answer,
            )
        )
    return out


def run_rolling(model: Any, url: str, messages: list[str], *, recall: bool = True) -> Strategy:
    """``ChatMemory(background=False)``; ``recall=False`` turns off its recall tier."""
    from chatmem import ChatMemory, Settings

    if recall:
        out = Strategy("rolling", "rolling summary (chatmem ChatMemory, defaults)")
    else:
        out = Strategy("rolling_norecall", "rolling summary, recall off (recall=False)")
    options: dict[str, Any] = {} if recall else {"recall": False}
    bot = ChatMemory(
        system=SYSTEM,
        max_tokens=MAX_TOKENS,
        keep_recent=KEEP_RECENT,
        model=model,
        background=False,
        settings=Settings(base_url=url, model=MODEL),
        **options,
    )
    seen = 0
    calls_before = 0
    with bot:
        for turn, text in enumerate(messages, 1):
            answer = bot.ask(text)
            new = bot.stats[seen:]
            seen = len(bot.stats)
            chat = [s for s in new if s.kind == "chat"]
            summaries = [s for s in new if s.kind == "summary"]
            # a fold may take more than one call (batches, re-compression): its event says
            calls_total = sum(int(e.data.get("calls", 1)) for e in bot.events if e.kind == "fold")
            fold_calls, calls_before = calls_total - calls_before, calls_total
            stat = chat[-1]
            out.turns.append(
                TurnRecord(
                    turn,
                    stat.prompt_estimate,
                    stat.prompt_reported,
                    stat.completion_reported,
                    summary_calls=fold_calls,
                    summary_prompt=sum(s.prompt_reported or 0 for s in summaries),
                    summary_completion=sum(s.completion_reported or 0 for s in summaries),
                    trimmed=bot.last_context.trimmed if bot.last_context else 0,
                    reply=answer,
                )
            )
    return out


# ------------------------------------------------------------------------------ report
def flatness(strategy: Strategy) -> dict[str, Any]:
    """Prompt size after the first fold: first half vs second half, and the linear trend."""
    first = strategy.first_fold
    if first is None:
        return {"first_fold_turn": None}
    after = [t.prompt_estimate for t in strategy.turns if t.turn >= first]
    half = max(1, len(after) // 2)
    early, late = statistics.fmean(after[:half]), statistics.fmean(after[-half:])
    slope = statistics.linear_regression(range(len(after)), after).slope if len(after) >= 2 else 0.0
    return {
        "first_fold_turn": first,
        "turns_after": len(after),
        "early_mean": early,
        "late_mean": late,
        "change": (late - early) / early if early else 0.0,
        "slope_per_turn": slope,
        "min": min(after),
        "max": max(after),
    }


def _recall_note() -> str:
    """ChatMemory's default recall reserve, read from its signature so it stays true."""
    import inspect

    from chatmem import ChatMemory

    param = inspect.signature(ChatMemory).parameters.get("recall_share")
    if param is None or not isinstance(param.default, float):
        return "its default settings"
    return f"{param.default:.0%} of the budget reserved for it"


def build_markdown(
    strategies: list[Strategy], turns: int, quick: bool, summary_requests: int
) -> tuple[str, dict[str, Any]]:
    full = strategies[0]
    rows = []
    for s in strategies:
        last = s.turns[-1]
        max_est = max(t.prompt_estimate for t in s.turns)
        max_rep = max(t.prompt_reported or 0 for t in s.turns)
        rows.append(
            [
                s.label,
                f"{last.prompt_estimate:,} / {last.prompt_reported or 0:,}",
                f"{statistics.fmean(t.prompt_estimate for t in s.turns):,.0f}",
                f"{max_est:,} / {max_rep:,}",
                f"{s.chat_billed:,}",
                f"{s.summary_calls}",
                f"{s.summary_billed:,}",
                f"{s.total_billed:,}",
                f"{100 * s.total_billed / full.total_billed:.1f}%",
                f"{sum(1 for t in s.turns if t.trimmed)}",
                f"{_facts_recalled(s)}/{len(FACTS)}",
            ]
        )
    table = markdown_table(
        [
            "strategy",
            f"prompt at turn {turns} (est. / reported)",
            "mean prompt per turn (est.)",
            f"max prompt (est. / reported), budget {MAX_TOKENS:,}",
            "chat tokens billed",
            "summary calls",
            "summary tokens billed",
            "total billed",
            "vs full history",
            "turns that left out unsummarised messages",
            "facts recalled at the end",
        ],
        rows,
    )

    by_key = {s.key: s for s in strategies}
    rolling = by_key["rolling"]
    checked = [s for s in strategies if s.key != "full"]
    lines = []
    flats = {}
    for s in sorted(strategies, key=lambda s: s.key != "rolling"):
        if not s.key.startswith("rolling"):
            continue
        flat = flats[s.key] = flatness(s)
        name = "" if s.key == "rolling" else f" ({s.label}, for comparison)"
        if flat["first_fold_turn"] is None:
            lines.append(f"- prompt size flat after the first fold{name}: NOT met (no fold).")
            continue
        ok = abs(flat["change"]) <= 0.10
        lines.append(
            f"- prompt size flat after the first fold{name}: {'met' if ok else 'NOT met'} — "
            f"the first request after a fold was turn {flat['first_fold_turn']}; over the "
            f"{flat['turns_after']} turns from there the mean prompt is "
            f"{flat['early_mean']:,.0f} in the first half and {flat['late_mean']:,.0f} in the "
            f"second ({flat['change']:+.1%}; 'flat' = within ±10%), linear trend "
            f"{flat['slope_per_turn']:+.2f} tokens/turn, range {flat['min']:,}–{flat['max']:,}."
        )
    share = rolling.total_billed / full.total_billed
    lines.append(
        f"- total under 25% of full history at {turns} turns: "
        f"{'met' if share < 0.25 else 'NOT met'} ({share:.1%} with chatmem's defaults, "
        f"summary calls included)."
    )
    for s in checked:
        max_est = max(t.prompt_estimate for t in s.turns)
        over = sum(1 for t in s.turns if t.prompt_estimate > MAX_TOKENS)
        lines.append(
            f"- never over budget ({s.label}): {'met' if over == 0 else 'NOT met'} — max "
            f"{max_est:,} of {MAX_TOKENS:,} tokens by tiktoken, {over} turns over."
        )
    over_rep = sum(1 for t in rolling.turns if (t.prompt_reported or 0) > MAX_TOKENS)
    drift = [
        (t.prompt_reported or 0) - t.prompt_estimate
        for s in strategies
        for t in s.turns
        if t.prompt_reported
    ]
    mean_drift = statistics.fmean(drift) if drift else 0.0
    recall_note = _recall_note()
    md = f"""# Tokens over a {turns}-turn conversation

Ways to keep a conversation going, over the same scripted {turns}-turn conversation
(budget `max_tokens={MAX_TOKENS:,}`, `keep_recent={KEEP_RECENT}`; replies of {REPLY_WORDS}
words; a fixed {SUMMARY_WORDS}-word recap from each summary call). Prompt tokens are given as
chatmem's tiktoken (`o200k_base`) estimate and as the server reported them; "billed" is the
server-reported prompt + completion tokens of every call, summary calls included.
{"**Quick run (fewer turns): not for publishing.**" if quick else ""}

{table}

Targets:
{chr(10).join(lines)}

Notes: the fake server counts tokens with a deliberately inexact rule (regex words and
punctuation, +4 per message), so "reported" differs from tiktoken (mean difference
{mean_drift:+.1f} tokens per request here); the budget is enforced on chatmem's tiktoken
count, which is what OpenAI's `gpt-4o-mini` would bill. {over_rep} rolling-summary requests
were over {MAX_TOKENS:,} by the fake's count. The server saw {summary_requests} summary
requests. "Facts recalled": the last {len(FACTS)} turns ask for facts stated in turns
{", ".join(str(t) for t in FACT_TURNS)}; trimming loses them once they fall out of the
window, the rolling summary keeps them. chatmem's defaults include its recall tier (older
messages relevant to the newest one, found by BM25, fill the room the verbatim messages
leave, with {recall_note}); the "recall off" row is the rolling summary alone. After a fold
the request holds the system prompt, the summary and the {KEEP_RECENT} kept messages, then
grows turn by turn until the next fold: a sawtooth, with no upward trend. "Turns that left
out unsummarised messages": requests from which some messages were trimmed that are in
neither the summary nor the request (with the recall tier on, the verbatim part has
{recall_note.split(" of")[0]} less room, so trimming starts before the history is big
enough to fold).

{machine_line()}
"""
    data = {
        "turns": turns,
        "max_tokens": MAX_TOKENS,
        "keep_recent": KEEP_RECENT,
        "reply_words": REPLY_WORDS,
        "summary_words": SUMMARY_WORDS,
        "machine": machine_line(),
        "flatness": flats,
        "strategies": {
            s.key: {
                "label": s.label,
                "total_billed": s.total_billed,
                "chat_billed": s.chat_billed,
                "summary_billed": s.summary_billed,
                "summary_calls": s.summary_calls,
                "facts_recalled": _facts_recalled(s),
                "turns": [{k: v for k, v in asdict(t).items() if k != "reply"} for t in s.turns],
            }
            for s in strategies
        },
    }
    return md, data


def chart(strategies: list[Strategy], path: Path) -> Path:
    plt = pyplot()
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 7.5), dpi=120, sharex=True)
    styles = {
        "full": ("tab:red", "-"),
        "trim": ("tab:blue", "--"),
        "rolling_norecall": ("tab:purple", ":"),
        "rolling": ("tab:green", "-"),
    }
    for s in strategies:
        color, style = styles.get(s.key, ("black", "-"))
        xs = [t.turn for t in s.turns]
        top.plot(xs, [t.prompt_estimate for t in s.turns], style, color=color, label=s.label)
        running = 0
        cumulative = []
        for t in s.turns:
            running += (
                (t.prompt_reported or 0)
                + (t.completion_reported or 0)
                + t.summary_prompt
                + t.summary_completion
            )
            cumulative.append(running)
        bottom.plot(xs, cumulative, style, color=color, label=s.label)
    rolling = next(s for s in strategies if s.key == "rolling")
    folds = [t.turn for t in rolling.turns if t.summary_calls]
    for i, turn in enumerate(folds):
        top.axvline(turn, color="tab:green", alpha=0.15, label="fold" if i == 0 else None)
    top.axhline(MAX_TOKENS, color="black", linewidth=1, linestyle=":", label="budget")
    top.set_ylabel("prompt tokens per turn (tiktoken)")
    top.set_yscale("log")
    top.set_title("Prompt size per turn")
    top.grid(True, alpha=0.3)
    top.legend(fontsize=8, loc="upper left")
    bottom.set_ylabel("tokens billed so far")
    bottom.set_xlabel("turn")
    bottom.ticklabel_format(axis="y", style="plain")
    bottom.yaxis.set_major_formatter(lambda value, _pos: f"{value / 1e6:.1f}M")
    bottom.set_title("Cumulative tokens billed (summary calls included)")
    bottom.grid(True, alpha=0.3)
    bottom.legend(fontsize=8, loc="upper left")
    return save_chart(fig, path)


def run_bench(args: argparse.Namespace, log: Callable[[str], None] = print) -> Report:
    from chatmem.models import OpenAIChat
    from tests.fakes import FakeOpenAIServer

    turns = QUICK_TURNS if args.quick else TURNS
    messages = script(turns)
    log(f"{NAME}: {turns} turns, three strategies")
    with FakeOpenAIServer(reply_words=REPLY_WORDS, summary_words=SUMMARY_WORDS) as server:
        model = OpenAIChat(MODEL, base_url=server.url, max_retries=0)
        control = server.control
        strategies = []
        summary_requests = 0
        for runner in (
            lambda: run_full_history(model, messages),
            lambda: run_trimming(model, messages),
            lambda: run_rolling(model, server.url, messages, recall=False),
            lambda: run_rolling(model, server.url, messages),
        ):
            control.reset()
            strategy = runner()
            strategies.append(strategy)
            summary_requests += len(control.requests("summary"))
            log(
                f"  {strategy.label}: {strategy.total_billed:,} tokens billed, "
                f"{strategy.summary_calls} summary calls"
            )
    markdown, data = build_markdown(strategies, turns, args.quick, summary_requests)
    return finish_report(
        args, NAME, markdown, data, partial(chart, strategies), "prompt tokens per turn"
    )


def main(argv: list[str] | None = None) -> int:
    return run_main(script_parser(NAME, __doc__), run_bench, argv)


if __name__ == "__main__":
    sys.exit(main())

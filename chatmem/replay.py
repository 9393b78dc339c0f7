"""Replay a conversation through three memory strategies and measure them (no Streamlit).

* **full history**: every message resent each turn (the naive recipe);
* **trimming only**: the memory policy's budget, oldest exchanges dropped, never folded;
* **rolling summary**: :class:`ChatMemory` with folding (inline, ``background=False``).

Each strategy talks to the same model. Prompt sizes are counted with the model's own
counter, framing included; summary calls count as input tokens of the rolling strategy.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Protocol

from chatmem.config import Settings
from chatmem.errors import ChatmemError, ContextOverflow, ModelError
from chatmem.memory import Memory
from chatmem.models import ChatModel
from chatmem.sample_conversation import FactQuestion, knows
from chatmem.session import ChatMemory

FULL = "full history"
TRIM = "trimming only"
ROLLING = "rolling summary"
STRATEGIES = (FULL, TRIM, ROLLING)


@dataclass(frozen=True)
class MemoryOptions:
    """The memory settings every strategy of a replay shares (``ChatMemory``'s keywords)."""

    system: str
    max_tokens: int
    keep_recent: int
    reply_reserve: int
    settings: Settings | None = None
    summary_max_tokens: int = 300

    def as_kwargs(self) -> dict[str, Any]:
        """The options as keyword arguments (a shallow copy: ``settings`` is passed as is)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


class StrategyStopped(ChatmemError):
    """The strategy cannot continue (its request no longer fits, or the model failed)."""


class Strategy(Protocol):
    name: str

    def turn(self, text: str) -> tuple[str, int, int]:
        """Send ``text``; returns (reply, prompt tokens of the request, other input tokens)."""
        ...


class FullHistory:
    """The whole conversation, resent every turn."""

    name = FULL

    def __init__(self, model: ChatModel, options: MemoryOptions) -> None:
        self.model = model
        self.reply_reserve = options.reply_reserve
        self.messages: list[dict[str, Any]] = [{"role": "system", "content": options.system}]

    def turn(self, text: str) -> tuple[str, int, int]:
        self.messages.append({"role": "user", "content": text})
        prompt = self.model.counter.messages(self.messages)
        if prompt + self.reply_reserve > self.model.context_window:
            raise StrategyStopped(
                f"The full history ({prompt:,} tokens) no longer fits the model's "
                f"{self.model.context_window:,}-token context window."
            )
        reply = _read(self.model, self.messages, self.reply_reserve)
        self.messages.append({"role": "assistant", "content": reply})
        return reply, prompt, 0


class TrimmingOnly:
    """The memory policy's budget with no summary: old exchanges are simply dropped."""

    name = TRIM

    def __init__(self, model: ChatModel, options: MemoryOptions) -> None:
        self.model = model
        self.memory = Memory(
            system=options.system,
            counter=model.counter,
            max_tokens=options.max_tokens,
            keep_recent=options.keep_recent,
            reply_reserve=options.reply_reserve,
        )

    def turn(self, text: str) -> tuple[str, int, int]:
        try:
            self.memory.check_fits("user", text)
            self.memory.add("user", text)
            context = self.memory.context()
        except ContextOverflow as exc:
            raise StrategyStopped(str(exc)) from None
        reply = _read(self.model, context.messages, self.memory.reply_reserve)
        self.memory.add("assistant", reply)
        return reply, context.budget.total, 0


class RollingSummary:
    """ChatMemory as shipped: recent turns verbatim, older ones folded into a summary."""

    name = ROLLING

    def __init__(self, model: ChatModel, options: MemoryOptions) -> None:
        self.bot = ChatMemory(model=model, background=False, **options.as_kwargs())

    def turn(self, text: str) -> tuple[str, int, int]:
        summaries_before = self._summary_input()
        try:
            reply = self.bot.ask(text)
        except ContextOverflow as exc:
            raise StrategyStopped(str(exc)) from None
        context = self.bot.last_context
        prompt = context.budget.total if context is not None else 0
        return reply, prompt, self._summary_input() - summaries_before

    def _summary_input(self) -> int:
        return sum(s.prompt_estimate for s in self.bot.stats if s.kind == "summary")


def _read(model: ChatModel, messages: list[dict[str, Any]], reply_reserve: int) -> str:
    return model.stream(messages, max_reply_tokens=reply_reserve).read()


@dataclass
class StrategyRun:
    """What one strategy did over the replay."""

    name: str
    prompt_tokens: list[int] = field(default_factory=list)  # per replayed user turn
    extra_tokens: list[int] = field(default_factory=list)  # summary calls after each turn
    answers: dict[str, str] = field(default_factory=dict)  # question -> reply
    stopped: str | None = None  # why it stopped early, if it did
    stopped_at: int | None = None  # 1-based turn

    @property
    def input_tokens(self) -> int:
        return sum(self.prompt_tokens) + sum(self.extra_tokens)

    def cumulative(self) -> list[int]:
        out, total = [], 0
        for prompt, extra in zip(self.prompt_tokens, self.extra_tokens, strict=True):
            total += prompt + extra
            out.append(total)
        return out


@dataclass
class ReplayResult:
    turns: int
    max_tokens: int
    keep_recent: int
    model_label: str
    runs: dict[str, StrategyRun]
    questions: tuple[FactQuestion, ...]
    reply_reserve: int = 512

    def rows(self) -> list[dict[str, Any]]:
        """Long-form rows for the charts: strategy, turn, prompt, cumulative."""
        rows = []
        for run in self.runs.values():
            for i, (prompt, total) in enumerate(
                zip(run.prompt_tokens, run.cumulative(), strict=True), start=1
            ):
                rows.append(
                    {"strategy": run.name, "turn": i, "prompt": prompt, "cumulative": total}
                )
        return rows

    def knowledge(self) -> list[dict[str, Any]]:
        """One row per fact question: the expected fact and each strategy's answer."""
        table = []
        for fact in self.questions:
            row: dict[str, Any] = {"question": fact.question, "fact": fact.expected}
            for run in self.runs.values():
                answer = run.answers.get(fact.question)
                if answer is None:
                    row[run.name] = "— (stopped)"
                else:
                    row[run.name] = ("✓ " if knows(answer, fact) else "✗ ") + answer
            table.append(row)
        return table

    def score(self, name: str) -> int:
        run = self.runs[name]
        return sum(
            1
            for fact in self.questions
            if fact.question in run.answers and knows(run.answers[fact.question], fact)
        )


Progress = Callable[[int, int, str], None]


def replay(
    model: ChatModel,
    turns: Sequence[str],
    questions: Sequence[FactQuestion],
    options: MemoryOptions,
    *,
    progress: Progress | None = None,
) -> ReplayResult:
    """Replay ``turns`` through the three strategies, then ask each the ``questions``.

    Every strategy gets the same ``options`` (full history uses only the system prompt and
    the reply reserve).

    ``progress(done, total, label)`` is called after every model call.
    """
    strategies: list[Strategy] = [
        FullHistory(model, options),
        TrimmingOnly(model, options),
        RollingSummary(model, options),
    ]
    runs = {s.name: StrategyRun(s.name) for s in strategies}
    live = {s.name for s in strategies}
    total = (len(turns) + len(questions)) * len(strategies)
    done = 0

    def step(strategy: Strategy, text: str, index: int, label: str) -> str | None:
        nonlocal done
        run = runs[strategy.name]
        reply: str | None = None
        if strategy.name in live:
            try:
                reply, prompt, extra = strategy.turn(text)
                if index > 0:
                    run.prompt_tokens.append(prompt)
                    run.extra_tokens.append(extra)
            except (StrategyStopped, ModelError) as exc:
                live.discard(strategy.name)
                run.stopped = exc.user_message if isinstance(exc, ModelError) else str(exc)
                run.stopped_at = index or None
        done += 1
        if progress is not None:
            progress(done, total, f"{strategy.name}: {label}")
        return reply

    # One strategy at a time: each request then extends the previous one, so a local model
    # reuses its evaluated prompt prefix (and a hosted one its prompt cache).
    for strategy in strategies:
        for i, text in enumerate(turns, start=1):
            step(strategy, text, i, f"turn {i} of {len(turns)}")
        for fact in questions:
            answer = step(strategy, fact.question, 0, fact.question)
            if answer is not None:
                runs[strategy.name].answers[fact.question] = answer
        if isinstance(strategy, RollingSummary):
            strategy.bot.close()
    return ReplayResult(
        turns=len(turns),
        max_tokens=options.max_tokens,
        keep_recent=options.keep_recent,
        model_label=model.label,
        runs=runs,
        questions=tuple(questions),
        reply_reserve=options.reply_reserve,
    )

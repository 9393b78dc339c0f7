"""Replay a conversation through three memory strategies and measure them (no Streamlit).

* **full history**: every message resent each turn (the naive recipe);
* **trimming only**: the memory policy's budget, oldest exchanges dropped, never folded;
* **rolling summary**: :class:`ChatMemory` with folding (inline, ``background=False``).

The assistant's side of the replayed turns is either scripted (the model is then called only
for the final questions and for summaries) or the model's own replies. Each question is asked
from the end state of the replay, never after an earlier question, and is measured twice:
whether the *memory* kept the fact (its text is in the request the model received) and
whether the *model* answered it (its text is in the reply).

Prompt sizes are counted with the model's own counter, framing included; summary calls count
as input tokens of the rolling strategy.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Protocol

from chatmem.config import Settings
from chatmem.errors import ChatmemError, ContextOverflow, ModelError
from chatmem.memory import Memory
from chatmem.models import ChatModel, ReplyStream
from chatmem.request import Part
from chatmem.sample_conversation import FactQuestion, knows
from chatmem.session import ChatMemory

FULL = "full history"
TRIM = "trimming only"
ROLLING = "rolling summary"
STRATEGIES = (FULL, TRIM, ROLLING)
ANSWER_TOKENS = 32  # the cap on each answer to a final question: "Your name is Sam." fits


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

    def turn(self, text: str, scripted: str | None) -> tuple[str, int, int]:
        """Send ``text``; the reply is ``scripted`` when given, else the model's.
        Returns (reply, prompt tokens of the request, other input tokens)."""
        ...

    def request(self, question: str) -> tuple[Part, ...]:
        """The request that would answer ``question`` now, leaving the memory as it was."""
        ...


class ScriptedReplies:
    """A chat model whose next reply can be set in advance (a replayed turn of a script);
    every other call, summaries included, goes to the wrapped model."""

    def __init__(self, model: ChatModel) -> None:
        self.model = model
        self.name = model.name
        self.label = model.label
        self.context_window = model.context_window
        self.counter = model.counter
        self.next_reply: str | None = None

    def stream(self, messages: list[dict[str, Any]], *, max_reply_tokens: int) -> ReplyStream:
        if self.next_reply is None:
            return self.model.stream(messages, max_reply_tokens=max_reply_tokens)
        text, self.next_reply = self.next_reply, None
        return ReplyStream(iter([text]))

    def __getattr__(self, name: str) -> Any:
        # anything else the wrapped model says of itself (e.g. how it summarises)
        if name == "model":
            raise AttributeError(name)
        return getattr(self.model, name)


class FullHistory:
    """The whole conversation, resent every turn."""

    name = FULL

    def __init__(self, model: ChatModel, options: MemoryOptions) -> None:
        self.model = model
        self.reply_reserve = options.reply_reserve
        self.messages: list[dict[str, Any]] = [{"role": "system", "content": options.system}]

    def _fitting(self, messages: list[dict[str, Any]]) -> int:
        prompt = self.model.counter.messages(messages)
        if prompt + self.reply_reserve > self.model.context_window:
            raise StrategyStopped(
                f"The full history ({prompt:,} tokens) no longer fits the model's "
                f"{self.model.context_window:,}-token context window."
            )
        return prompt

    def turn(self, text: str, scripted: str | None) -> tuple[str, int, int]:
        self.messages.append({"role": "user", "content": text})
        prompt = self._fitting(self.messages)
        reply = _reply(self.model, self.messages, self.reply_reserve, scripted)
        self.messages.append({"role": "assistant", "content": reply})
        return reply, prompt, 0

    def request(self, question: str) -> tuple[Part, ...]:
        messages = [*self.messages, {"role": "user", "content": question}]
        self._fitting(messages)
        kinds = ["system"] + ["verbatim"] * (len(messages) - 1)
        return tuple(Part(k, m, 0) for k, m in zip(kinds, messages, strict=True))


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

    def turn(self, text: str, scripted: str | None) -> tuple[str, int, int]:
        try:
            self.memory.check_fits("user", text)
            self.memory.add("user", text)
            context = self.memory.context()
        except ContextOverflow as exc:
            raise StrategyStopped(str(exc)) from None
        reply = _reply(self.model, context.messages, self.memory.reply_reserve, scripted)
        self.memory.add("assistant", reply)
        return reply, context.budget.total, 0

    def request(self, question: str) -> tuple[Part, ...]:
        held = len(self.memory.messages)
        try:
            self.memory.check_fits("user", question)
            self.memory.add("user", question)
            return self.memory.context().parts
        except ContextOverflow as exc:
            raise StrategyStopped(str(exc)) from None
        finally:
            self.memory.truncate(held)


class RollingSummary:
    """ChatMemory as shipped: recent turns verbatim, older ones folded into a summary."""

    name = ROLLING

    def __init__(self, model: ChatModel, options: MemoryOptions) -> None:
        self.scripted = ScriptedReplies(model)
        self.bot = ChatMemory(model=self.scripted, background=False, **options.as_kwargs())

    def turn(self, text: str, scripted: str | None) -> tuple[str, int, int]:
        summaries_before = self._summary_input()
        self.scripted.next_reply = scripted
        try:
            reply = self.bot.ask(text)
        except ContextOverflow as exc:
            raise StrategyStopped(str(exc)) from None
        finally:
            self.scripted.next_reply = None
        context = self.bot.last_context
        prompt = context.budget.total if context is not None else 0
        return reply, prompt, self._summary_input() - summaries_before

    def request(self, question: str) -> tuple[Part, ...]:
        memory = self.bot.memory
        held = len(memory.messages)
        try:
            memory.check_fits("user", question)
            memory.add("user", question)  # not stored, not indexed: taken back below
            return self.bot.next_request().parts
        except ContextOverflow as exc:
            raise StrategyStopped(str(exc)) from None
        finally:
            memory.truncate(held)

    def _summary_input(self) -> int:
        return sum(s.prompt_estimate for s in self.bot.stats if s.kind == "summary")


def _reply(
    model: ChatModel, messages: list[dict[str, Any]], reply_reserve: int, scripted: str | None
) -> str:
    """The scripted reply when there is one, else the model's."""
    if scripted is not None:
        return scripted
    return model.stream(messages, max_reply_tokens=reply_reserve).read()


def memory_kept(request: Sequence[Part], fact: FactQuestion) -> str | None:
    """Where the request holds the fact: the kinds of its messages that state it
    ("summary", "recalled", "verbatim"...), comma-separated, or None when none does."""
    kinds: list[str] = []
    for part in request:
        if part.kind not in kinds and knows(str(part.message.get("content") or ""), fact):
            kinds.append(part.kind)
    return ", ".join(kinds) or None


@dataclass
class StrategyRun:
    """What one strategy did over the replay."""

    name: str
    prompt_tokens: list[int] = field(default_factory=list)  # per replayed user turn
    extra_tokens: list[int] = field(default_factory=list)  # summary calls after each turn
    sent: dict[str, tuple[Part, ...]] = field(default_factory=dict)  # question -> its request
    answers: dict[str, str] = field(default_factory=dict)  # question -> reply
    stopped: str | None = None  # why it stopped early, if it did
    stopped_at: int | None = None  # 1-based turn; None when it stopped at the questions
    model_failed: bool = False  # it stopped because a model call failed

    @property
    def input_tokens(self) -> int:
        return sum(self.prompt_tokens) + sum(self.extra_tokens)

    def cumulative(self) -> list[int]:
        out, total = [], 0
        for prompt, extra in zip(self.prompt_tokens, self.extra_tokens, strict=True):
            total += prompt + extra
            out.append(total)
        return out

    def kept(self, fact: FactQuestion) -> str | None:
        """Where the request for ``fact``'s question held it (None: not held, or not built)."""
        request = self.sent.get(fact.question)
        return memory_kept(request, fact) if request is not None else None

    def answered(self, fact: FactQuestion) -> bool:
        answer = self.answers.get(fact.question)
        return answer is not None and knows(answer, fact)


@dataclass
class ReplayResult:
    turns: int
    max_tokens: int
    keep_recent: int
    model_label: str
    runs: dict[str, StrategyRun]
    questions: tuple[FactQuestion, ...]
    reply_reserve: int = 512
    scripted: bool = False  # the replayed turns had scripted replies
    seconds: float = 0.0  # wall time of the replay

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
        """One row per fact question: the expected fact, then for each strategy what its
        memory kept (where the fact was in the request) and what its model answered."""
        table = []
        for fact in self.questions:
            row: dict[str, Any] = {"question": fact.question, "fact": fact.expected}
            for run in self.runs.values():
                if fact.question not in run.sent:
                    row[f"{run.name}: memory"] = "— (stopped)"
                else:
                    where = run.kept(fact)
                    row[f"{run.name}: memory"] = f"✓ {where}" if where else "✗ not sent"
                answer = run.answers.get(fact.question)
                if answer is None:
                    row[f"{run.name}: model"] = "— (not asked)"
                else:
                    row[f"{run.name}: model"] = ("✓ " if knows(answer, fact) else "✗ ") + answer
            table.append(row)
        return table

    def memory_score(self, name: str) -> int:
        """How many early facts the strategy's requests for the questions held."""
        run = self.runs[name]
        return sum(1 for fact in self.questions if run.kept(fact))

    def score(self, name: str) -> int:
        """How many early facts the model answered correctly with the strategy's memory."""
        run = self.runs[name]
        return sum(1 for fact in self.questions if run.answered(fact))


@dataclass(frozen=True)
class Progress:
    """Where a replay is: ``done`` of ``total`` steps, the last one's label, and the time
    left estimated from the time each kind of step has taken so far (None before any)."""

    done: int
    total: int
    label: str
    seconds_left: float | None


def seconds_left(
    spent: dict[str, float], done: dict[str, int], left: dict[str, int]
) -> float | None:
    """Time left: each kind of step still to do at the mean time its kind has taken so far
    (a kind not seen yet at the mean of all steps so far). None before any step."""
    steps = sum(done.values())
    if not steps:
        return None
    overall = sum(spent.values()) / steps
    return sum(
        n * (spent[kind] / done[kind] if done.get(kind) else overall) for kind, n in left.items()
    )


def replay(
    model: ChatModel,
    turns: Sequence[str],
    questions: Sequence[FactQuestion],
    options: MemoryOptions,
    *,
    replies: Sequence[str] | None = None,
    answer_tokens: int = ANSWER_TOKENS,
    progress: Callable[[Progress], object] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> ReplayResult:
    """Replay ``turns`` through the three strategies, then ask each the ``questions``.

    Every strategy gets the same ``options`` (full history uses only the system prompt and
    the reply reserve). With ``replies`` (one per turn) the assistant's side of the turns is
    scripted: the model is called only to answer the questions (and to summarise). Each
    question is asked from the state after the last turn, its answer capped at
    ``answer_tokens`` (and the reply reserve). When a model call fails, the strategy stops
    calling the model, but the requests for the questions are still built, so what its
    memory kept is known.

    ``progress`` is called after every step (a turn, or a question).
    """
    if replies is not None and len(replies) != len(turns):
        raise ValueError(f"{len(replies)} scripted replies for {len(turns)} turns.")
    started = clock()
    strategies: list[Strategy] = [
        FullHistory(model, options),
        TrimmingOnly(model, options),
        RollingSummary(model, options),
    ]
    runs = {s.name: StrategyRun(s.name) for s in strategies}
    cap = min(answer_tokens, options.reply_reserve)
    left = {"turn": len(turns) * len(strategies), "question": len(questions) * len(strategies)}
    spent = {"turn": 0.0, "question": 0.0}
    done = {"turn": 0, "question": 0}
    total = sum(left.values())

    def stop(run: StrategyRun, exc: ChatmemError, at: int | None) -> None:
        run.model_failed = isinstance(exc, ModelError)
        run.stopped = exc.user_message if isinstance(exc, ModelError) else str(exc)
        run.stopped_at = at

    def tick(kind: str, since: float, label: str) -> None:
        now = clock()
        spent[kind] += now - since
        done[kind] += 1
        left[kind] -= 1
        if progress is not None:
            progress(Progress(sum(done.values()), total, label, seconds_left(spent, done, left)))

    # One strategy at a time: each request then extends the previous one (and the questions
    # share the end state), so a local model reuses its evaluated prompt prefix (and a hosted
    # one its prompt cache).
    try:
        for strategy in strategies:
            run = runs[strategy.name]
            for i, text in enumerate(turns, start=1):
                since = clock()
                if run.stopped is None:
                    try:
                        scripted = replies[i - 1] if replies is not None else None
                        _, prompt, extra = strategy.turn(text, scripted)
                        run.prompt_tokens.append(prompt)
                        run.extra_tokens.append(extra)
                    except (StrategyStopped, ModelError) as exc:
                        stop(run, exc, i)
                tick("turn", since, f"{strategy.name}: turn {i} of {len(turns)}")
            for fact in questions:
                since = clock()
                if run.stopped_at is None:  # the replay reached its end state
                    _ask(strategy, run, fact, model, cap, stop)
                tick("question", since, f"{strategy.name}: {fact.question}")
    finally:
        for strategy in strategies:
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
        scripted=replies is not None,
        seconds=clock() - started,
    )


def _ask(
    strategy: Strategy,
    run: StrategyRun,
    fact: FactQuestion,
    model: ChatModel,
    cap: int,
    stop: Callable[[StrategyRun, ChatmemError, int | None], None],
) -> None:
    """Build the request for ``fact``'s question from the end state; send it while the
    strategy's model calls still succeed."""
    try:
        request = strategy.request(fact.question)
    except StrategyStopped as exc:
        if run.stopped is None:
            stop(run, exc, None)
        return
    run.sent[fact.question] = request
    if run.model_failed:
        return
    try:
        messages = [p.message for p in request]
        run.answers[fact.question] = model.stream(messages, max_reply_tokens=cap).read()
    except ModelError as exc:
        stop(run, exc, None)

"""Bookkeeping cost per turn as the history grows: chatmem vs the seed recipe vs peers.

For each history length (100 ... 100,000 messages of varied, realistic length) this times
the work a chatbot does before each request: append the new user message and build the
context that fits ``max_tokens=3000``. Everyone counts with the same tiktoken encoding
(``o200k_base``, loaded offline through ``chatmem.tokens.get_encoding``).

* chatmem: ``Memory.add()`` then ``Memory.context()``; the history was added beforehand, so
  each message's count is cached on it (the steady state of a running conversation).
* seed recipe: re-count everything with tiktoken and pop the oldest message until it fits,
  on a copy of the full history (``seed_trim`` below).
* LangChain: ``langchain_core.messages.trim_messages`` (strategy "last", system kept, start
  on a human message), with a token counter over the same encoding.
* LlamaIndex: ``ChatMemoryBuffer`` (``token_limit=3000``, ``tokenizer_fn`` = the same
  encoder): ``put()`` the new message, then ``get()``.

Run: ``python -m bench.bench_context [--quick] [--no-chart] [--out DIR] [--profile]``.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import math
import pstats
import random
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from bench._common import (
    Report,
    conversation,
    finish_report,
    fmt_ratio,
    fmt_seconds,
    machine_line,
    markdown_table,
    median,
    package_version,
    pyplot,
    save_chart,
    script_parser,
    user_text,
)

NAME = "bench_context"
SIZES = (100, 1_000, 10_000, 100_000)
QUICK_SIZES = (100, 300)
MAX_TOKENS = 3000
SKIP_SECONDS = 20.0  # one call predicted slower than this: skipped
SYSTEM = "You are a friendly assistant. Be concise."
MODEL = "gpt-4o-mini"
ENCODING = "o200k_base"

Turn = Callable[[], Any]


def encoding() -> Any:
    from chatmem.tokens import get_encoding

    return get_encoding(ENCODING)


# ------------------------------------------------------------------------------ the seed recipe
def seed_count_tokens(messages: Sequence[dict[str, str]], enc: Any) -> int:
    """The seed recipe's counter: re-encodes every message on every call, no cache."""
    total = 0
    for message in messages:
        total += 3
        for key, value in message.items():
            total += len(enc.encode(value, disallowed_special=()))
            if key == "name":
                total += 1
    return total + 3


def seed_trim(messages: list[dict[str, str]], max_tokens: int, enc: Any | None = None) -> None:
    """The seed recipe, faithfully: pop the oldest non-system message until it fits.

    ``messages[0]`` is the system prompt. Trims in place, like the recipe.
    """
    enc = enc if enc is not None else encoding()
    while seed_count_tokens(messages, enc) > max_tokens:
        messages.pop(1)


# ------------------------------------------------------------------------------ methods
@dataclass
class Method:
    """One way of building the next request.

    ``setup(history)`` returns a per-size state; ``turn(state, text)`` returns a
    zero-argument callable that does the timed work (append ``text``, build the context)
    and returns the number of messages in the request; ``undo(state)`` removes the
    appended message afterwards (untimed), so every repetition sees the same history.
    """

    key: str
    label: str
    setup: Callable[[list[tuple[str, str]]], Any]
    turn: Callable[[Any, str], Turn]
    undo: Callable[[Any], None] = lambda state: None
    available: bool = True
    reason: str = ""


def drop_last(memory: Any) -> Any:
    """Take the probe message back out of a ``Memory`` (untimed), the way it supports."""
    message = memory.messages[-1]
    if hasattr(memory, "truncate"):  # keeps Memory's running totals in step
        memory.truncate(len(memory.messages) - 1)
    else:
        memory.messages.pop()
    return message


def _chatmem_method() -> Method:
    from chatmem.memory import Memory
    from chatmem.tokens import TokenCounter

    def setup(history: list[tuple[str, str]]) -> Memory:
        memory = Memory(system=SYSTEM, counter=TokenCounter.for_model(MODEL), max_tokens=MAX_TOKENS)
        for role, text in history:
            memory.add(role, text)
        memory.context()  # the system prompt's count is cached too, as after any first turn
        return memory

    def turn(memory: Memory, text: str) -> Turn:
        def run() -> int:
            memory.add("user", text)
            return len(memory.context().parts)

        return run

    def undo(memory: Memory) -> None:
        drop_last(memory)

    return Method("chatmem", "chatmem Memory.add + context()", setup, turn, undo)


FOLDED_TAIL = 40  # unfolded messages left after the last fold, in the "after folds" variant

RECAP = " ".join(
    f"- The user mentioned item {i}: a trip to Lisbon in March, a budget of 4200 euros."
    for i in range(12)
)


def fold_all_but_tail(memory: Any) -> bool:
    """Give ``memory`` a summary covering all but its newest ~FOLDED_TAIL messages, as a
    ChatMemory leaves it after folding (the tail starts at a user message). False if the
    history is too short to fold."""
    from chatmem.memory import Summary, summary_block

    cut = len(memory.messages) - FOLDED_TAIL
    if cut <= 0:
        return False
    while memory.messages[cut].role != "user":
        cut += 1
    block = {"role": "system", "content": summary_block(RECAP)}
    memory.set_summary(Summary(RECAP, memory.messages[cut - 1].seq, memory.counter.message(block)))
    return True


def _chatmem_folded_method() -> Method:
    """chatmem as a ChatMemory leaves it: a summary covers all but the newest messages."""
    plain = _chatmem_method()

    def setup(history: list[tuple[str, str]]) -> Any:
        memory = plain.setup(history)
        if fold_all_but_tail(memory):
            memory.context()
        return memory

    return Method(
        "chatmem_folded",
        f"chatmem after folds (summary + {FOLDED_TAIL} unfolded)",
        setup,
        plain.turn,
        plain.undo,
    )


def _chatmem_session_method() -> Method:
    """A whole ``ChatMemory`` turn with its defaults: summary state plus the recall tier.

    ``add_user_message()`` then ``context()`` (what ``reply_stream()`` sends), after folds:
    a summary covers all but the newest messages, and every message is in the recall
    index, so each turn also runs the BM25 search and fits the recalled snippets.
    """
    from chatmem import ChatMemory, Settings
    from chatmem.models import OpenAIChat
    from chatmem.recall import FtsIndex

    class UndoableIndex(FtsIndex):
        """chatmem's FTS5 index, plus a way to take the benchmark's probe message out."""

        def remove(self, seq: int) -> None:
            with self._lock:
                self._db.execute("DELETE FROM messages WHERE rowid = ?", (seq,))

    never_called = "http://127.0.0.1:9/v1"  # the model is never asked: no request is sent

    def setup(history: list[tuple[str, str]]) -> Any:
        bot = ChatMemory(
            system=SYSTEM,
            max_tokens=MAX_TOKENS,
            model=OpenAIChat(MODEL, base_url=never_called, max_retries=0),
            settings=Settings(base_url=never_called, model=MODEL),
            recall_index=UndoableIndex(),
        )
        for role, text in history:
            message = bot.memory.add(role, text)
            bot.recall_index.add(message.seq, role, text)
        fold_all_but_tail(bot.memory)
        bot.context()
        return bot

    def turn(bot: Any, text: str) -> Turn:
        def run() -> int:
            bot.add_user_message(text)
            return len(bot.context().parts)

        return run

    def undo(bot: Any) -> None:
        message = drop_last(bot.memory)
        bot.recall_index.remove(message.seq)

    return Method(
        "chatmem_session",
        "chatmem ChatMemory turn (summary + recall, defaults)",
        setup,
        turn,
        undo,
    )


def _seed_method() -> Method:
    enc = encoding()

    def setup(history: list[tuple[str, str]]) -> list[dict[str, str]]:
        return [{"role": "system", "content": SYSTEM}] + [
            {"role": role, "content": text} for role, text in history
        ]

    def turn(base: list[dict[str, str]], text: str) -> Turn:
        messages = [*base, {"role": "user", "content": text}]  # the copy is not timed

        def run() -> int:
            seed_trim(messages, MAX_TOKENS, enc)
            return len(messages)

        return run

    return Method("seed", "seed recipe (re-count, pop oldest)", setup, turn)


def _missing(key: str, label: str, package: str, exc: ImportError) -> Method:
    """A peer that cannot be measured because ``package`` is not installed."""
    return Method(
        key,
        label,
        lambda h: None,
        lambda s, t: lambda: 0,
        available=False,
        reason=f"{package} is not installed ({exc.name})",
    )


def _langchain_method() -> Method:
    try:
        from langchain_core.messages import (
            AIMessage,
            BaseMessage,
            HumanMessage,
            SystemMessage,
            trim_messages,
        )
    except ImportError as exc:
        return _missing("langchain", "LangChain trim_messages", "langchain-core", exc)
    enc = encoding()
    roles = {"human": "user", "ai": "assistant", "system": "system"}

    def count(messages: list[BaseMessage]) -> int:
        total = 3
        for m in messages:
            total += 3 + len(enc.encode(roles.get(m.type, m.type), disallowed_special=()))
            total += len(enc.encode(str(m.content), disallowed_special=()))
        return total

    def setup(history: list[tuple[str, str]]) -> list[BaseMessage]:
        out: list[BaseMessage] = [SystemMessage(SYSTEM)]
        for role, text in history:
            out.append(HumanMessage(text) if role == "user" else AIMessage(text))
        return out

    def turn(base: list[BaseMessage], text: str) -> Turn:
        new = HumanMessage(text)

        def run() -> int:
            kept = trim_messages(
                [*base, new],
                max_tokens=MAX_TOKENS,
                token_counter=count,
                strategy="last",
                include_system=True,
                start_on="human",
            )
            return len(kept)

        return run

    return Method("langchain", "LangChain trim_messages", setup, turn)


def _llamaindex_method() -> Method:
    try:
        from llama_index.core.llms import ChatMessage
        from llama_index.core.memory import ChatMemoryBuffer
    except ImportError as exc:
        return _missing("llamaindex", "LlamaIndex ChatMemoryBuffer", "llama-index-core", exc)
    enc = encoding()
    tokenizer = partial(enc.encode, disallowed_special=())

    def setup(history: list[tuple[str, str]]) -> Any:
        return ChatMemoryBuffer.from_defaults(
            chat_history=[ChatMessage(role=role, content=text) for role, text in history],
            token_limit=MAX_TOKENS,
            tokenizer_fn=tokenizer,
        )

    def turn(buffer: Any, text: str) -> Turn:
        message = ChatMessage(role="user", content=text)

        def run() -> int:
            buffer.put(message)
            return len(buffer.get())

        return run

    def undo(buffer: Any) -> None:
        buffer.chat_store.delete_last_message(buffer.chat_store_key)

    return Method("llamaindex", "LlamaIndex ChatMemoryBuffer", setup, turn, undo)


def methods() -> list[Method]:
    return [
        _chatmem_method(),
        _chatmem_folded_method(),
        _chatmem_session_method(),
        _seed_method(),
        _langchain_method(),
        _llamaindex_method(),
    ]


# ------------------------------------------------------------------------------ timing
@dataclass
class Cell:
    """Timings of one method at one history length."""

    times: list[float] = field(default_factory=list)
    kept: int | None = None
    skipped: str = ""
    estimate: float | None = None  # predicted seconds for one call, when skipped for time
    setup_seconds: float = 0.0

    @property
    def min(self) -> float | None:
        return min(self.times) if self.times else None

    @property
    def median(self) -> float | None:
        return median(self.times) if self.times else None


def time_turns(
    method: Method,
    state: Any,
    texts: Sequence[str],
    max_reps: int,
    budget: float,
    *,
    warmup: int = 0,
) -> Cell:
    """Time up to ``max_reps`` turns (at least 3 unless one turn eats the budget).

    ``warmup`` untimed turns go first (caches, lazy imports), for the cheap cells.
    """
    for i in range(warmup):
        method.turn(state, texts[-1 - i % len(texts)])()
        method.undo(state)
    cell = Cell()
    spent = 0.0
    for i in range(max_reps):
        run = method.turn(state, texts[i % len(texts)])
        gc.disable()
        try:
            start = time.perf_counter()
            kept = run()
            elapsed = time.perf_counter() - start
        finally:
            gc.enable()
        method.undo(state)
        cell.times.append(elapsed)
        cell.kept = kept
        spent += elapsed
        if spent >= budget and (i >= 2 or elapsed * 2 >= budget):
            break
    return cell


def predict(points: list[tuple[int, float]], n: int) -> float | None:
    """One call's time at ``n`` messages, from the growth seen at smaller sizes."""
    if not points:
        return None
    n1, t1 = points[-1]
    slope = 2.0  # assume quadratic until two sizes say otherwise
    if len(points) >= 2:
        n0, t0 = points[-2]
        if t0 > 0 and t1 > 0 and n1 != n0:
            slope = math.log(t1 / t0) / math.log(n1 / n0)
            slope = min(max(slope, 1.0), 2.5)
    return t1 * (n / n1) ** slope


# ------------------------------------------------------------------------------ run
def run(
    sizes: Sequence[int], *, max_reps: int, budget: float, log: Callable[[str], None] = print
) -> dict[str, Any]:
    all_methods = methods()
    rng = random.Random(99)
    new_texts = [user_text(rng) for _ in range(max_reps)]
    history_all = conversation(max(sizes), seed=1234)
    results: dict[str, dict[int, Cell]] = {m.key: {} for m in all_methods}
    for n in sizes:
        history = history_all[:n]
        for method in all_methods:
            if not method.available:
                results[method.key][n] = Cell(skipped=f"not installed: {method.reason}")
                continue
            # predict from the fastest run (the least disturbed by other load on the machine)
            points = [
                (size, cell.min)
                for size, cell in results[method.key].items()
                if cell.min is not None
            ]
            guess = predict(points, n)
            if guess is not None and guess > SKIP_SECONDS:
                results[method.key][n] = Cell(
                    skipped=f"skipped (>{SKIP_SECONDS:g} s; ~{fmt_seconds(guess)} estimated)",
                    estimate=guess,
                )
                log(f"  {n:>7,} messages  {method.key:<10} skipped (~{fmt_seconds(guess)})")
                continue
            start = time.perf_counter()
            state = method.setup(history)
            setup_seconds = time.perf_counter() - start
            reps = max_reps
            if guess is not None and guess > 1.0:
                reps = min(reps, 3)
            warmup = 2 if guess is None or guess < 0.2 else 0
            cell = time_turns(method, state, new_texts, reps, budget, warmup=warmup)
            cell.setup_seconds = setup_seconds
            del state
            results[method.key][n] = cell
            log(
                f"  {n:>7,} messages  {method.key:<10} min {fmt_seconds(cell.min):>10}  "
                f"median {fmt_seconds(cell.median):>10}  ({len(cell.times)} runs, "
                f"{cell.kept} messages sent)"
            )
    return {
        "methods": all_methods,
        "results": results,
        "sizes": list(sizes),
        "text_stats": text_stats(history_all[:2000]),
    }


def text_stats(history: Sequence[tuple[str, str]]) -> dict[str, dict[str, int]]:
    """Token lengths of the generated messages, by role (min, median, max)."""
    enc = encoding()
    out: dict[str, dict[str, int]] = {}
    for role in ("user", "assistant"):
        lengths = sorted(len(enc.encode(t, disallowed_special=())) for r, t in history if r == role)
        if lengths:
            out[role] = {
                "min": lengths[0],
                "median": lengths[len(lengths) // 2],
                "max": lengths[-1],
            }
    return out


def build_markdown(outcome: dict[str, Any], quick: bool) -> tuple[str, dict[str, Any]]:
    all_methods: list[Method] = outcome["methods"]
    results: dict[str, dict[int, Cell]] = outcome["results"]
    sizes: list[int] = outcome["sizes"]
    ours = results["chatmem"]

    headers = ["history (messages)", *[m.label for m in all_methods]]
    rows = []
    for n in sizes:
        row: list[str] = [f"{n:,}"]
        for m in all_methods:
            cell = results[m.key][n]
            if cell.skipped:
                row.append(f"skipped (>{SKIP_SECONDS:g} s)" if cell.estimate else cell.skipped)
                continue
            text = f"{fmt_seconds(cell.median)} (min {fmt_seconds(cell.min)})"
            if not m.key.startswith("chatmem") and ours[n].median:
                text += f", {fmt_ratio((cell.median or 0) / ours[n].median)}"
            row.append(text)
        rows.append(row)
    table = markdown_table(headers, rows)

    kept_rows = []
    for n in sizes:
        kept_rows.append(
            [f"{n:,}"]
            + [
                str(results[m.key][n].kept) if results[m.key][n].kept is not None else "-"
                for m in all_methods
            ]
        )
    kept_table = markdown_table(headers, kept_rows)

    # targets
    chat_medians = [(n, ours[n].median) for n in sizes if ours[n].median]
    flat_ratio = None
    if len(chat_medians) >= 2:
        flat_ratio = chat_medians[-1][1] / chat_medians[0][1]
    target_lines = []
    if flat_ratio is not None:
        flat = flat_ratio <= 2.0
        target_lines.append(
            f"- chatmem flat in history length: {'met' if flat else 'NOT met'} — the median "
            f"turn at {chat_medians[-1][0]:,} messages is {fmt_ratio(flat_ratio)} the one at "
            f"{chat_medians[0][0]:,} ({fmt_seconds(chat_medians[0][1])} → "
            f"{fmt_seconds(chat_medians[-1][1])}; 'flat' = within 2×)."
        )
    if 1_000 in sizes and ours[1_000].median:
        seed = results["seed"][1_000]
        if seed.median:
            ratio = seed.median / ours[1_000].median
            target_lines.append(
                f"- ≥100× faster than the seed recipe at 1,000 messages: "
                f"{'met' if ratio >= 100 else 'NOT met'} ({fmt_ratio(ratio)})."
            )
        behind = []
        for m in all_methods:
            if m.key.startswith("chatmem") or m.key == "seed":
                continue
            cell = results[m.key][1_000]
            if cell.median is not None and cell.median <= ours[1_000].median:
                behind.append(m.label)
        peers = [
            m
            for m in all_methods
            if not m.key.startswith("chatmem") and m.key != "seed" and m.available
        ]
        if peers:
            target_lines.append(
                "- ahead of every peer at 1,000 messages: "
                + ("met." if not behind else f"NOT met (slower than {', '.join(behind)}).")
            )
    session = results.get("chatmem_session", {})
    session_pts = [(n, session[n].median) for n in sizes if n in session and session[n].median]
    if session_pts:
        first_n, first_t = session_pts[0]
        last_n, last_t = session_pts[-1]
        line = (
            f"- for information, a whole `ChatMemory` turn with its defaults (recall on): "
            f"{fmt_seconds(first_t)} at {first_n:,} messages, {fmt_seconds(last_t)} at "
            f"{last_n:,} ({fmt_ratio(last_t / first_t)})"
        )
        peer_keys = [k for k in ("langchain", "llamaindex") if k in results]
        if 1_000 in sizes and session.get(1_000) and session[1_000].median:
            peer_times = [
                (results[k][1_000].median, k)
                for k in peer_keys
                if results[k][1_000].median is not None
            ]
            if peer_times:
                best, best_key = min(peer_times)
                label = next(m.label for m in all_methods if m.key == best_key)
                line += (
                    f"; at 1,000 messages the fastest peer ({label}) takes "
                    f"{fmt_ratio(best / session[1_000].median)} as long"
                )
        target_lines.append(line + ".")
    for m in all_methods:
        if not m.available:
            target_lines.append(f"- {m.label}: not measured, {m.reason}.")
    skipped_notes = [
        f"{m.label} at {n:,} (~{results[m.key][n].estimate or 0:,.0f} s)"
        for m in all_methods
        for n in sizes
        if results[m.key][n].estimate is not None
    ]

    stats = outcome.get("text_stats", {})
    skipped_text = ": " + "; ".join(skipped_notes) if skipped_notes else ""

    def lengths(role: str) -> str:
        st = stats.get(role)
        if not st:
            return "varied length"
        return f"{st['min']}–{st['max']} tokens (median {st['median']})"

    versions = ", ".join(
        f"{p} {package_version(p)}" for p in ("tiktoken", "langchain-core", "llama-index-core")
    )
    md = f"""# Bookkeeping cost per turn as the history grows

Time to build the next request after appending one new user message, with a
{MAX_TOKENS:,}-token budget; the median of several runs (min in brackets), and for the
peers the ratio to chatmem's median (higher = slower than chatmem).
{"**Quick run (reduced sizes): not for publishing.**" if quick else ""}

{table}

Messages in the request each method built (system prompt included where the method keeps it):

{kept_table}

Targets:
{chr(10).join(target_lines)}

How it was measured: every method counts with tiktoken `{ENCODING}` (loaded offline via
`chatmem.tokens.get_encoding`). The history is deterministic generated text (common words
plus a long tail of made-up names, numbers, some lists and code blocks): user messages of
{lengths("user")}, assistant replies of {lengths("assistant")}.
chatmem: a `Memory(max_tokens={MAX_TOKENS})` holding the whole history (no
summary), so `add()` counts only the new message and `context()` walks back from the
newest message. Seed recipe: `while count_tokens(messages) > max_tokens: messages.pop(1)`
on a copy of the full history (the copy is not timed), re-encoding every message each time.
LangChain: `trim_messages(strategy="last", include_system=True, start_on="human")` with a
counter in the OpenAI chat format over the same encoding. LlamaIndex: `ChatMemoryBuffer`
(`token_limit={MAX_TOKENS}`, `tokenizer_fn` = the same encoder; it counts message text only,
no per-message framing, and keeps no system prompt) with `put()` then `get()`. Each run
removes the appended message afterwards (untimed) so all runs see the same history; the
garbage collector is paused during a timed call, as `timeit` does. A method whose one call
is predicted (from the growth of its fastest run at the smaller sizes) to take more than
{SKIP_SECONDS:g} s is skipped at that size{skipped_text}. "chatmem after folds" is the
same `Memory` as a `ChatMemory` leaves it after folding: a summary covers all but the
newest {FOLDED_TAIL} messages. "chatmem ChatMemory turn" is the whole per-turn bookkeeping of
a `ChatMemory` with its defaults in that folded state:
`add_user_message()` + `context()`, which includes the recall tier (a BM25 search of every
earlier message in SQLite FTS5, and fitting the hits into the budget). The targets are
judged on the first (plain `Memory`) column, as specified; the other two chatmem columns
are there so the cost of the whole product path is visible too.

{machine_line()}
Versions: {versions}.
"""
    data: dict[str, Any] = {
        "max_tokens": MAX_TOKENS,
        "encoding": ENCODING,
        "sizes": sizes,
        "machine": machine_line(),
        "results": {
            m.key: {
                str(n): {
                    "times": results[m.key][n].times,
                    "min": results[m.key][n].min,
                    "median": results[m.key][n].median,
                    "kept": results[m.key][n].kept,
                    "skipped": results[m.key][n].skipped,
                    "setup_seconds": results[m.key][n].setup_seconds,
                }
                for n in sizes
            }
            for m in all_methods
        },
    }
    return md, data


def chart(outcome: dict[str, Any], path: Path) -> Path:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 6.2), dpi=120)
    markers = {
        "chatmem": "o",
        "chatmem_folded": "P",
        "chatmem_session": "X",
        "seed": "s",
        "langchain": "^",
        "llamaindex": "D",
    }
    for m in outcome["methods"]:
        pts = [
            (n, cell.median)
            for n, cell in outcome["results"][m.key].items()
            if cell.median is not None
        ]
        if not pts:
            continue
        xs, ys = zip(*pts, strict=True)
        ax.plot(xs, ys, marker=markers.get(m.key, "o"), label=m.label, linewidth=2)
        skipped = [n for n, c in outcome["results"][m.key].items() if c.skipped and not c.times]
        if skipped and m.available:
            ax.annotate(
                f"skipped beyond {xs[-1]:,} (>{SKIP_SECONDS:g} s)",
                (xs[-1], ys[-1]),
                textcoords="offset points",
                xytext=(6, -12),
                fontsize=8,
            )
    ax.axhline(SKIP_SECONDS, color="gray", linestyle=":", linewidth=1)
    ax.annotate(
        f"skip threshold ({SKIP_SECONDS:g} s a call)",
        (outcome["sizes"][0], SKIP_SECONDS),
        textcoords="offset points",
        xytext=(0, 4),
        fontsize=8,
        color="gray",
    )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks(outcome["sizes"], [f"{n:,}" for n in outcome["sizes"]])
    ax.minorticks_off()
    ax.set_xlabel("messages in the history")
    ax.set_ylabel("time per turn (median, seconds)")
    ax.set_title(f"Building the next request within {MAX_TOKENS:,} tokens")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2, fontsize=8)
    return save_chart(fig, path)


def profile_chatmem(n: int, turns: int = 200, *, session: bool = False) -> str:
    """cProfile of chatmem's per-turn work at ``n`` messages: the top functions.

    ``session=True`` profiles the whole ``ChatMemory`` turn (recall included) instead of
    the plain ``Memory``.
    """
    method = _chatmem_session_method() if session else _chatmem_method()
    state = method.setup(conversation(n, seed=1234))
    rng = random.Random(7)
    texts = [user_text(rng) for _ in range(turns)]
    profiler = cProfile.Profile()
    for text in texts:
        run = method.turn(state, text)
        profiler.enable()
        run()
        profiler.disable()
        method.undo(state)
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(12)
    return out.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = script_parser(NAME, __doc__)
    parser.add_argument(
        "--profile", action="store_true", help="also print a cProfile of chatmem's turn"
    )
    args = parser.parse_args(argv)
    report = run_bench(args)
    print(report.markdown)
    if args.profile:
        n = max(QUICK_SIZES if args.quick else SIZES)
        print(f"cProfile of chatmem's Memory.add + context() at {n:,} messages (200 turns):")
        print(profile_chatmem(n))
        print(f"cProfile of a ChatMemory turn (defaults) at {n:,} messages (50 turns):")
        print(profile_chatmem(n, 50, session=True))
    return 0


def run_bench(args: argparse.Namespace) -> Report:
    sizes = QUICK_SIZES if args.quick else SIZES
    max_reps = 8 if args.quick else 40
    budget = 1.0 if args.quick else 12.0
    print(f"{NAME}: sizes {', '.join(f'{n:,}' for n in sizes)}", flush=True)
    outcome = run(sizes, max_reps=max_reps, budget=budget)
    markdown, data = build_markdown(outcome, args.quick)
    return finish_report(
        args, NAME, markdown, data, partial(chart, outcome), "time per turn vs history length"
    )


if __name__ == "__main__":
    sys.exit(main())

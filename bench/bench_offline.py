"""Offline memory with the bundled model: facts in the prompt, answered, kept by summaries;
tokens per second; time to first token during a fold against an ordinary turn.

The shipped 30-turn chat (``bench/offline_script.py``: six facts in the first eleven turns,
then chit-chat) runs through ``ChatMemory`` on the real ``LocalChat`` (SmolLM2-135M, or the
GGUF given by ``--model``) with ``max_tokens`` 800, so it folds several times; folds run on
the background worker, as in the app; recall is BM25 over the SQLite store (embeddings off).
Then, from that same end state (a copy of the database per question), each fact's question is
asked in a resumed session:

* facts in the prompt: the fact's word is in the prompt text the model received
  (``LocalChat.last_prompt`` when it has one, else the request's messages);
* facts answered: the reply contains it, and not as the model's own ("I'm Sam"), over three
  sampling seeds; side by side, the same questions with the recap's fact notes left in the
  recap rather than sent last (``chatmem.prompting.facts_last``);
* facts kept by summaries: the newest summary contains it.

Time to first token (TTFT), side by side in one run: the end state's last request, with a new
word each time (so llama.cpp evaluates a new tail, as in a turn), timed in turn with nothing
else running ("ordinary"), with a fold of the whole held history started on another thread at
the same instant ("during a fold"), and with such folds run back to back until the first token
(a stress case). The chat's own turns are timed too: a turn sent while
a fold was in progress, the turn after a fold landed (the recap changed, so the prompt is
evaluated anew), and the others.

Run: ``python -m bench.bench_offline [--model PATH] [--quick] [--no-chart] [--out DIR]``.
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from bench._common import (
    Report,
    finish_report,
    fmt_ratio,
    fmt_seconds,
    machine_line,
    markdown_table,
    pyplot,
    run_main,
    save_chart,
    script_parser,
)
from bench.offline_script import FACTS, SYSTEM, TURNS
from chatmem import ChatMemory, LocalChat, Settings
from chatmem.events import EventKind
from chatmem.local import LOCAL_THREADS
from chatmem.models import ReplyStream
from chatmem.store import Store

NAME = "bench_offline"
MAX_TOKENS = 800
REPLY_RESERVE = 64


class _Timed:
    """Wraps a model's ``stream``: per call, the thread, time to first chunk and after it."""

    def __init__(self, model: LocalChat) -> None:
        self.model = model
        self.inner = model.stream
        self.calls: list[dict[str, Any]] = []

    def __call__(self, messages: list[dict[str, Any]], *, max_reply_tokens: int) -> ReplyStream:
        record: dict[str, Any] = {"thread": threading.current_thread().name}
        self.calls.append(record)
        start = time.perf_counter()
        reply = self.inner(messages, max_reply_tokens=max_reply_tokens)

        def events() -> Iterator[Any]:
            first = None
            chunks = 0
            for chunk in reply:
                if first is None:
                    first = time.perf_counter()
                    record["ttft"] = first - start
                chunks += 1
                yield chunk
            record["decode_s"] = time.perf_counter() - (first or start)
            record["chunks"] = chunks
            if reply.usage is not None:
                record["completion_tokens"] = reply.usage.completion_tokens
                yield reply.usage

        return ReplyStream(events())


def _prompt_text(model: LocalChat, messages: list[dict[str, Any]]) -> str:
    prompt = getattr(model, "last_prompt", None)
    if prompt:
        return str(prompt)
    return "\n".join(str(m.get("content", "")) for m in messages)


def _chat(bot: ChatMemory, turns: tuple[str, ...]) -> list[dict[str, Any]]:
    """Send every turn at once after the last reply (the worst case for a background fold)."""
    rows = []
    folds_before = 0
    for i, text in enumerate(turns, 1):
        folding = bot.folding
        folds = len([e for e in bot.events if e.kind == EventKind.FOLD])
        landed = folds > folds_before
        folds_before = folds
        start = time.perf_counter()
        stream = bot.ask_stream(text)
        next(stream)
        ttft = time.perf_counter() - start
        for _ in stream:
            pass
        kind = "during a fold" if folding else ("after a fold" if landed else "ordinary")
        rows.append({"turn": i, "kind": kind, "ttft": ttft})
    bot.wait_for_fold()
    return rows


SEEDS = (0, 1, 2)  # each question is asked once per sampling seed


def answers(reply: str, expected: str) -> bool:
    """The reply says the fact, and not as the model's own ("I'm Sam" to "What is my name?")."""
    text, want = reply.lower(), re.escape(expected.lower())
    own = re.search(rf"\b(?:my name is|i'm|i am|call me)\s+{want}\b", text)
    return want in text and own is None


def _ask_facts(
    db: Path, cid: str, model: LocalChat, tmp: Path, reserve: int, seeds: tuple[int, ...]
) -> list[dict[str, Any]]:
    """Each fact's question from the same end state (a copy of the database per question),
    once per sampling seed."""
    out = []
    for n, fact in enumerate(FACTS):
        replies, prompt = [], ""
        for seed in seeds:
            copy = tmp / f"q{n}.db"
            shutil.copy(db, copy)
            model.sampling["seed"] = seed
            with Store(f"sqlite:///{copy}") as store:
                bot = ChatMemory.resume(
                    store,
                    cid,
                    model=model,
                    background=False,
                    reply_reserve=reserve,
                    settings=Settings(embedding_model="off"),
                )
                replies.append(bot.ask(fact.question))
                assert bot.last_context is not None
                prompt = prompt or _prompt_text(model, bot.last_context.messages)
                bot.close()
        out.append(
            {
                "fact": fact.label,
                "expected": fact.expected,
                "in_prompt": fact.expected.lower() in prompt.lower(),
                "answered": sum(answers(r, fact.expected) for r in replies),
                "answers": [" ".join(r.split())[:80] for r in replies],
            }
        )
    model.sampling["seed"] = SEEDS[0]
    return out


CONDITIONS = ("ordinary", "during a fold", "folds back to back")


def _ttft_pairs(bot: ChatMemory, timed: _Timed, reps: int) -> dict[str, list[float]]:
    """The last request with a new word each time, in turn: alone; with one fold of the whole
    held history started on another thread at the same instant (what a reply sent as a fold
    starts meets); with folds run back to back on that thread until the first token (a
    stress case: a real fold runs once)."""
    assert bot.last_context is not None
    base = [dict(m) for m in bot.last_context.messages]
    held = list(bot.memory.messages)
    previous = bot.summary or None
    cap = bot.memory.summary_cap
    out: dict[str, list[float]] = {name: [] for name in CONDITIONS}
    out["fold_s"] = []
    words = ["apples", "rivers", "lamps", "boots", "clouds", "violins", "maps", "kites"]
    for i in range(reps * len(CONDITIONS)):
        condition = CONDITIONS[i % len(CONDITIONS)]
        messages = [dict(m) for m in base]
        messages[-1]["content"] += f" (Answer about {words[i % len(words)]} {i}.)"
        stop = threading.Event()
        fold_times: list[float] = []

        def fold(
            stop: threading.Event = stop,
            fold_times: list[float] = fold_times,
            again: bool = condition == "folds back to back",
        ) -> None:
            while True:
                t = time.perf_counter()
                bot.summarizer.summarize(previous, held, cap)
                fold_times.append(time.perf_counter() - t)
                if not again or stop.is_set():
                    return

        worker = threading.Thread(target=fold, name="chatmem-fold-bench")
        if condition != "ordinary":
            worker.start()
        timed(messages, max_reply_tokens=8).read()
        stop.set()
        if condition != "ordinary":
            worker.join()
            out["fold_s"] += fold_times
        out[condition].append(timed.calls[-1]["ttft"])
    return out


def run_bench(args: argparse.Namespace) -> Report:
    model = LocalChat(args.model)
    rules_note = "folds by rules (LocalChat.summarizes_by_rules)"
    timed = _Timed(model)
    model.stream = timed  # type: ignore[method-assign]
    turns = TURNS[:14] if args.quick else TURNS
    reserve = 32 if args.quick else REPLY_RESERVE
    reps = 2 if args.quick else 5
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        db = tmp / "chat.db"
        with Store(f"sqlite:///{db}") as store:
            bot = ChatMemory(
                system=SYSTEM,
                max_tokens=MAX_TOKENS,
                model=model,
                reply_reserve=reserve,
                background=True,
                settings=Settings(embedding_model="off"),
                store=store,
            )
            started = time.perf_counter()
            turn_rows = _chat(bot, turns)
            chat_s = time.perf_counter() - started
            chat_calls = list(timed.calls)
            pairs = _ttft_pairs(bot, timed, reps)
            summary = bot.summary
            events = bot.events
            cid = bot.conversation_id
            bot.close()
        assert cid is not None
        seeds = SEEDS[:1] if args.quick else SEEDS
        facts = _ask_facts(db, cid, model, tmp, reserve, seeds)
        # the same questions with the recap's fact notes left inside it (chatmem.prompting)
        in_recap = LocalChat(args.model, prompt_format=replace(model.format, notes_last=False))
        facts_in_recap = _ask_facts(db, cid, in_recap, tmp, reserve, seeds)

    folds = [e for e in events if e.kind == EventKind.FOLD]
    failed = [e for e in events if e.kind == EventKind.FOLD_FAILED]
    fold_calls = [c for c in chat_calls if c["thread"].startswith("chatmem-fold")]
    replies = [c for c in chat_calls if "completion_tokens" in c and c.get("decode_s")]
    tokens = sum((c["completion_tokens"] or 0) - 1 for c in replies)
    tps = tokens / sum(c["decode_s"] for c in replies) if replies else 0.0
    kept = [f for f in FACTS if f.expected.lower() in summary.lower()]
    ordinary = statistics.median(pairs["ordinary"])
    during = statistics.median(pairs["during a fold"])
    ratio = during / ordinary if ordinary else None
    stress = statistics.median(pairs["folds back to back"])
    by_kind: dict[str, list[float]] = {}
    for row in turn_rows:
        by_kind.setdefault(row["kind"], []).append(row["ttft"])

    n = len(FACTS)
    asked = n * len(seeds)
    answered = sum(f["answered"] for f in facts)
    answered_in_recap = sum(f["answered"] for f in facts_in_recap)
    summary_rows = [
        ["facts in the prompt the model received", f"{sum(f['in_prompt'] for f in facts)}/{n}"],
        [f"facts answered (over {len(seeds)} seed(s))", f"{answered}/{asked}"],
        ["the same with the fact notes left in the recap", f"{answered_in_recap}/{asked}"],
        ["facts kept by the newest summary", f"{len(kept)}/{n}"],
        ["folds (failed)", f"{len(folds)} ({len(failed)})"],
        ["model calls made by folds", str(len(fold_calls))],
        ["fold time, median", fmt_seconds(statistics.median(pairs["fold_s"] or [0.0]))],
        ["reply tokens per second", f"{tps:.1f}"],
        ["TTFT ordinary, median", fmt_seconds(ordinary)],
        ["TTFT during a fold, median", fmt_seconds(during)],
        ["TTFT during a fold / ordinary", fmt_ratio(ratio)],
        ["TTFT with folds back to back, median", fmt_seconds(stress)],
        ["TTFT with folds back to back / ordinary", fmt_ratio(stress / ordinary)],
    ]

    def yes(flag: bool) -> str:
        return "yes" if flag else "no"

    fact_rows = [
        [
            f["fact"],
            f["expected"],
            yes(f["in_prompt"]),
            f"{f['answered']}/{len(seeds)}",
            f"{r['answered']}/{len(seeds)}",
            yes(f["expected"].lower() in summary.lower()),
            f["answers"][0],
        ]
        for f, r in zip(facts, facts_in_recap, strict=True)
    ]
    turn_table = [
        [kind, len(v), fmt_seconds(statistics.median(v)), fmt_seconds(max(v))]
        for kind, v in sorted(by_kind.items())
    ]
    threads = f"{LOCAL_THREADS} llama.cpp thread(s)"
    markdown = "\n\n".join(
        [
            f"# Offline memory with the bundled model ({Path(str(model.path)).name})",
            f"{len(turns)} turns, max_tokens {MAX_TOKENS}, reply reserve {reserve}, "
            f"{rules_note}, {threads}; the chat took {chat_s:.0f} s.",
            markdown_table(["figure", "value"], summary_rows),
            "Per fact, asked from the same end state, once per seed; an answer counts when it "
            "says the fact and does not claim it as the model's own (\"I'm Sam\"). *Notes in "
            "the recap*: the same questions with the recap's fact notes left where the recap "
            "holds them instead of sent last (`PromptFormat.notes_last`).",
            markdown_table(
                [
                    "fact",
                    "expected",
                    "in prompt",
                    "answered",
                    "answered, notes in the recap",
                    "in summary",
                    "answer (seed 0)",
                ],
                fact_rows,
            ),
            f"TTFT, {reps} of each, taken in turn (the end state's last request with a new "
            "word): "
            + "; ".join(f"{c} {[round(x, 3) for x in pairs[c]]} s" for c in CONDITIONS)
            + ".",
            "The chat's own turns (sent right after the previous reply):",
            markdown_table(["turn", "count", "TTFT median", "TTFT max"], turn_table),
            "Newest summary:\n\n```\n" + summary + "\n```",
            machine_line(),
        ]
    )
    data = {
        "turns": turn_rows,
        "facts": facts,
        "facts_notes_in_recap": facts_in_recap,
        "seeds": list(seeds),
        "pairs": pairs,
        "summary": summary,
        "folds": len(folds),
        "fold_failed": [e.message for e in failed],
        "fold_model_calls": len(fold_calls),
        "tokens_per_second": tps,
        "ttft_ratio": ratio,
        "ttft_ratio_folds_back_to_back": stress / ordinary,
    }

    def chart(path: Path) -> Path:
        plt = pyplot()
        fig, ax = plt.subplots(figsize=(5, 3))
        ax.bar(["ordinary", "during a fold"], [ordinary, during], color=["#888", "#2a7"])
        ax.set_ylabel("time to first token, s (median)")
        ax.set_title(f"TTFT during a fold: {fmt_ratio(ratio)}")
        return save_chart(fig, path)

    return finish_report(args, NAME, markdown, data, chart, "TTFT ordinary vs during a fold")


def main(argv: list[str] | None = None) -> int:
    parser = script_parser(NAME, __doc__)
    parser.add_argument("--model", default=None, help="a GGUF file (default: the bundled one)")
    return run_main(parser, run_bench, argv)


if __name__ == "__main__":
    raise SystemExit(main())

"""Cost of building a request with recall as the conversation grows: bounded vs unbounded.

For each history length (1,000 ... 100,000 messages of varied, realistic length) this times
one ``ChatMemory`` turn's bookkeeping with recall on: ``add_user_message()`` then
``context()`` (what ``reply_stream()`` sends), in the state folds leave (a summary covers all
but the newest messages), every message in the recall index. Side by side in one run:

* BM25, unbounded: every message that holds any query word is ranked (the earlier search).
* BM25, bounded (the default without embeddings): words in more than ``COMMON_TERM``
  messages are left out of the search when the query has a rarer one, a query of common
  words alone searches the newest ``RECENT_WINDOW`` messages.
* hybrid, unbounded: BM25 unbounded plus a cosine search over every stored vector.
* hybrid, bounded (the default): BM25 bounded plus a cosine search over the newest
  ``DENSE_WINDOW`` vectors and those of the keyword hits.

The stored vectors are random unit vectors of the offline model's size (384): the cost of a
search does not depend on what they say. The query's own embedding (the offline e5 model,
in-process) costs the same at every length; it is timed on its own and shown separately.

Run: ``python -m bench.bench_recall_cost [--quick] [--no-chart] [--out DIR] [--blas]``.
"""

from __future__ import annotations

import gc
import random
import time
import zlib
from array import array
from collections.abc import Sequence
from typing import Any

from bench._common import (
    conversation,
    finish_report,
    fmt_ratio,
    fmt_seconds,
    machine_line,
    markdown_table,
    median,
    pyplot,
    save_chart,
    script_parser,
    user_text,
)
from bench.bench_context import MAX_TOKENS, MODEL, SYSTEM, drop_last, fold_all_but_tail

NAME = "bench_recall_cost"
SIZES = (1_000, 10_000, 100_000)
QUICK_SIZES = (100, 200)
TURNS = 15  # timed turns per cell (distinct messages)
QUICK_TURNS = 3
DIMS = 384  # multilingual-e5-small
TARGET = 0.010  # seconds: the median turn at 100,000 messages, bounded hybrid
METHODS = (
    ("bm25_unbounded", "BM25, unbounded"),
    ("bm25_bounded", "BM25, bounded (default without embeddings)"),
    ("hybrid_unbounded", "hybrid, unbounded"),
    ("hybrid_bounded", "hybrid, bounded (default)"),
)


class StubEmbedder:
    """Random unit vectors of the model's size, one per text (the same text, the same one)."""

    name = "bench-stub"
    batch_size = 32

    def _vector(self, text: str) -> array:
        import numpy as np

        seed = zlib.crc32(text.encode("utf-8"))
        values = np.random.default_rng(seed).standard_normal(DIMS).astype(np.float32)
        return array("f", (values / np.linalg.norm(values)).tobytes())

    def embed(self, texts: Sequence[str], **_: Any) -> list[array]:
        return [self._vector(t) for t in texts]

    def embed_query(self, text: str, **_: Any) -> array:
        return self._vector("query: " + text)


def _random_vectors(count: int, seed: int = 5) -> Any:
    import numpy as np

    matrix = np.random.default_rng(seed).standard_normal((count, DIMS)).astype(np.float32)
    matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix


def build(history: list[tuple[str, str]]) -> tuple[Any, Any, Any]:
    """A folded ``ChatMemory`` holding ``history``, its FTS index and a hybrid over it."""
    from chatmem import ChatMemory, Settings
    from chatmem.models import OpenAIChat
    from chatmem.recall import FtsIndex, HybridRecall

    class UndoableIndex(FtsIndex):
        def remove(self, seq: int) -> None:
            with self._lock:
                self._db.execute("DELETE FROM messages WHERE rowid = ?", (seq,))

    never_called = "http://127.0.0.1:9/v1"  # the model is never asked: no request is sent
    fts = UndoableIndex()
    bot = ChatMemory(
        system=SYSTEM,
        max_tokens=MAX_TOKENS,
        model=OpenAIChat(MODEL, base_url=never_called, max_retries=0),
        settings=Settings(base_url=never_called, model=MODEL, embedding_model="off"),
        recall_index=fts,
        background=False,
    )
    hybrid = HybridRecall(fts, StubEmbedder(), background=False)  # type: ignore[arg-type]
    vectors = _random_vectors(len(history))
    for (role, text), vector in zip(history, vectors, strict=True):
        message = bot.memory.add(role, text)
        fts.add(message.seq, role, text)
        hybrid.vectors.add(message.seq, array("f", vector.tobytes()))
        hybrid._texts[message.seq] = (role, text)
    fold_all_but_tail(bot.memory)
    bot.context()
    return bot, fts, hybrid


def configure(method: str, bot: Any, fts: Any, hybrid: Any) -> None:
    from chatmem.embeddings import DENSE_WINDOW

    bounded = method.endswith("_bounded")
    fts.bounded = bounded
    hybrid.dense_window = DENSE_WINDOW if bounded else None
    bot.recall_index = hybrid if method.startswith("hybrid") else fts


def time_turns(bot: Any, fts: Any, hybrid: Any, texts: Sequence[str]) -> list[float]:
    times = []
    bot.add_user_message(texts[-1])  # warm-up: lazy imports, caches
    bot.context()
    _undo(bot, fts, hybrid)
    for text in texts:
        gc.disable()
        try:
            start = time.perf_counter()
            bot.add_user_message(text)
            bot.context()
            times.append(time.perf_counter() - start)
        finally:
            gc.enable()
        _undo(bot, fts, hybrid)
    return times


def _undo(bot: Any, fts: Any, hybrid: Any) -> None:
    message = drop_last(bot.memory)
    fts.remove(message.seq)
    hybrid._pending.pop(message.seq, None)
    hybrid._texts.pop(message.seq, None)


def query_embedding_seconds(count: int = 10) -> float | None:
    """Median time of one query embedding by the offline model, in-process (None: absent)."""
    try:
        from chatmem.embeddings import LocalEmbedder

        embedder = LocalEmbedder()
        embedder.embed_query("warm up the model")
    except Exception:
        return None
    rng = random.Random(11)
    times = []
    for _ in range(count):
        text = user_text(rng)
        start = time.perf_counter()
        embedder.embed_query(text)
        times.append(time.perf_counter() - start)
    return median(times)


def run(sizes: Sequence[int], turns: int, embed: bool) -> dict[str, Any]:
    rng = random.Random(99)
    texts = [user_text(rng) for _ in range(turns)]
    results: dict[str, Any] = {"sizes": list(sizes), "cells": {}}
    for n in sizes:
        bot, fts, hybrid = build(conversation(n))
        for key, _label in METHODS:
            configure(key, bot, fts, hybrid)
            times = time_turns(bot, fts, hybrid, texts)
            results["cells"][f"{key}@{n}"] = {"median": median(times), "min": min(times)}
        fts.close()
        del bot, fts, hybrid
        gc.collect()
    results["query_embedding"] = query_embedding_seconds() if embed else None
    return results


def build_markdown(results: dict[str, Any]) -> str:
    sizes = results["sizes"]
    cells = results["cells"]
    rows = []
    for n in sizes:
        row: list[Any] = [f"{n:,}"]
        for key, _ in METHODS:
            cell = cells[f"{key}@{n}"]
            row.append(f"{fmt_seconds(cell['median'])} (min {fmt_seconds(cell['min'])})")
        bm25 = cells[f"bm25_unbounded@{n}"]["median"] / cells[f"bm25_bounded@{n}"]["median"]
        hyb = cells[f"hybrid_unbounded@{n}"]["median"] / cells[f"hybrid_bounded@{n}"]["median"]
        row.append(f"{fmt_ratio(bm25)} / {fmt_ratio(hyb)}")
        rows.append(row)
    headers = ["history (messages)", *(label for _, label in METHODS), "unbounded ÷ bounded"]
    largest = sizes[-1]
    best = cells[f"hybrid_bounded@{largest}"]["median"]
    bm25_best = cells[f"bm25_bounded@{largest}"]["median"]
    embed = results.get("query_embedding")
    verdict = "met" if best < TARGET else "not met"
    lines = [
        "# Building a request with recall, as the conversation grows",
        "",
        "One `ChatMemory` turn's bookkeeping (`add_user_message()` + `context()`, recall on, "
        f"a {MAX_TOKENS:,}-token budget, after folds); median of the turns (min in brackets).",
        "",
        markdown_table(headers, rows),
        "",
        "Targets:",
        f"- under 10 ms median at {largest:,} messages (hybrid, bounded, without the query's "
        f"embedding): {verdict} ({fmt_seconds(best)}; BM25 alone {fmt_seconds(bm25_best)}).",
        "- the query's own embedding by the offline model, in-process, the same at every "
        "length: "
        + (f"{fmt_seconds(embed)} median." if embed is not None else "not measured here."),
        "",
        "How it was measured: the history is the deterministic generated text of "
        "`bench_context` (common words plus a long tail of made-up names); the stored "
        f"vectors are random unit vectors of {DIMS} dimensions and the query's vector comes "
        "from a stub (a search costs the same whatever the vectors say), so the embedding "
        "model is timed apart. Bounded and unbounded share one index and one memory, and "
        "each turn's message is taken out again (untimed) so every turn sees the same "
        "history; the garbage collector is paused during a timed turn.",
        "",
        machine_line(),
    ]
    return "\n".join(lines) + "\n"


def chart(results: dict[str, Any], path: Any) -> Any:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    sizes = results["sizes"]
    for key, label in METHODS:
        ax.plot(
            sizes,
            [results["cells"][f"{key}@{n}"]["median"] * 1e3 for n in sizes],
            marker="o",
            label=label,
        )
    ax.axhline(TARGET * 1e3, color="grey", linestyle=":", label="10 ms")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("messages in the conversation")
    ax.set_ylabel("median ms per turn")
    ax.legend(fontsize=8)
    return save_chart(fig, path)


def main(argv: Sequence[str] | None = None) -> int:
    parser = script_parser(NAME, __doc__)
    parser.add_argument(
        "--blas",
        action="store_true",
        help="the earlier cosine search (numpy's @, which OpenBLAS may spread over threads), "
        "for a before/after comparison",
    )
    args = parser.parse_args(argv)
    if args.blas:
        from chatmem import embeddings

        embeddings._dot = lambda matrix, query: matrix @ query  # type: ignore[assignment]
    sizes = QUICK_SIZES if args.quick else SIZES
    results = run(sizes, QUICK_TURNS if args.quick else TURNS, embed=not args.quick)
    markdown = build_markdown(results)
    report = finish_report(
        args,
        NAME,
        markdown,
        results,
        lambda path: chart(results, path),
        "recall turn cost vs history length",
    )
    print(report.markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

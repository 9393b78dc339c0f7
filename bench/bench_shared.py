"""Many sessions, one conversation: catching up with new rows, and a fold commit under contention.

For each history length (default 1,000, 10,000 and 100,000 messages; ``--quick``: 1,000 and
5,000), on SQLite and, when ``CHATMEM_TEST_DATABASE_URL`` (or ``--postgres-url``) is set, on
PostgreSQL, one conversation is built (``Store._bulk_append``) with a summary covering all but
the newest 20 messages, and a session (``ChatMemory.resume``) is opened on it. Then:

* **catch-up**: another writer (its own ``Store``, as another process or replica would have)
  appends 10 messages, and the session's ``catch_up()`` reads them into its memory (what every
  request does first); median and best of ``--runs``;
* **fold commit under contention**: 4 threads, each a session folding on its own, commit
  summary versions by compare-and-set (``add_summary(extends=...)``, after reading the newest
  version with ``changes``) while 2 more threads append messages to the same conversation.
  Each commit that loses the race reads the newer version and tries again; the time is per
  landed version, retries included.

Flat in history length means: the time at the largest size over the time at the smallest
stays near 1 (both reads are index range reads of the new rows; nothing scans the history).
The PostgreSQL conversations are deleted afterwards; nothing else in that database is touched.

Run: ``python -m bench.bench_shared [--sizes N ...] [--runs R] [--quick] [--no-chart] [--out DIR]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench._common import (
    Report,
    base_parser,
    conversation,
    database_line,
    finish_report,
    fmt_ratio,
    fmt_seconds,
    machine_line,
    markdown_table,
    pyplot,
    save_chart,
)
from chatmem import ChatMemory, OpenAIChat, Settings
from chatmem.errors import SummaryConflict
from chatmem.store import Store, mask_url

NAME = "bench_shared"
DEFAULT_SIZES = (1_000, 10_000, 100_000)
QUICK_SIZES = (1_000, 5_000)
NEW_ROWS = 10
TAIL = 20
BATCH = 10_000
FOLDERS = 4  # threads committing summary versions
APPENDERS = 2  # threads appending while they do
COMMITS = 10  # versions each folding thread lands


def build(store: Store, n: int) -> str:
    texts = conversation(min(n, 2_000))
    cid = store.create_conversation(f"bench_shared {n:,} messages").id
    for first in range(0, n, BATCH):
        store._bulk_append(
            cid,
            [
                {"role": texts[i % len(texts)][0], "content": texts[i % len(texts)][1]}
                for i in range(first, min(n, first + BATCH))
            ],
        )
    store.add_summary(cid, "Summary so far.", 4, n - TAIL, model="bench")
    return cid


def session(store: Store, cid: str) -> ChatMemory:
    """A session on the conversation (its model is never called here)."""
    model = OpenAIChat("gpt-4o-mini", api_key="unused", base_url="http://127.0.0.1:9/v1")
    return ChatMemory.resume(
        store, cid, model=model, settings=Settings(), background=False, recall=False
    )


def catch_up_times(url: str, store: Store, cid: str, runs: int) -> list[float]:
    bot = session(store, cid)
    times = []
    with Store(url) as other:
        for run in range(runs):
            other._bulk_append(
                cid, [{"role": "user", "content": f"new {run}-{i}"} for i in range(NEW_ROWS)]
            )
            started = time.perf_counter()
            read = bot.catch_up()
            times.append(time.perf_counter() - started)
            assert read == NEW_ROWS, read
    bot.close()
    return times


def commit_times(store: Store, cid: str) -> tuple[list[float], int]:
    """Per landed version (retries included), and how many commits lost the race."""
    times: list[float] = []
    conflicts = 0
    lock = threading.Lock()
    stop = threading.Event()
    barrier = threading.Barrier(FOLDERS + APPENDERS)

    def fold() -> None:
        nonlocal conflicts
        barrier.wait()
        for _ in range(COMMITS):
            started = time.perf_counter()
            lost = 0
            while True:
                seen = store.changes(cid, 2**31 - 1, None)  # the newest version only
                newest = seen.summary
                assert newest is not None
                covers = newest.covers_seq + 1
                try:
                    store.add_summary(
                        cid,
                        "Summary so far.",
                        4,
                        covers,
                        model="bench",
                        extends=newest.id,
                        input_seqs=[covers],
                    )
                    break
                except SummaryConflict:
                    lost += 1
            with lock:
                times.append(time.perf_counter() - started)
                conflicts += lost

    def append() -> None:
        barrier.wait()
        while not stop.is_set():
            store.append_message(cid, "user", "meanwhile")

    folders = [threading.Thread(target=fold) for _ in range(FOLDERS)]
    appenders = [threading.Thread(target=append) for _ in range(APPENDERS)]
    for thread in folders + appenders:
        thread.start()
    for thread in folders:
        thread.join()
    stop.set()
    for thread in appenders:
        thread.join()
    return times, conflicts


def run_backend(
    label: str, url: str, sizes: tuple[int, ...], runs: int, log: Callable[[str], None]
) -> list[dict[str, Any]]:
    log(f"{label}: {mask_url(url)}")
    rows = []
    with Store(url) as store:
        for n in sizes:
            started = time.perf_counter()
            cid = build(store, n)
            log(f"  built {n:,} messages in {time.perf_counter() - started:.1f} s")
            try:
                catch_up = catch_up_times(url, store, cid, runs)
                commits, conflicts = commit_times(store, cid)
            finally:
                if label == "postgresql":
                    store.delete_conversation(cid)
            rows.append(
                {
                    "backend": label,
                    "messages": n,
                    "catch_up": catch_up,
                    "commit": commits,
                    "conflicts": conflicts,
                }
            )
    return rows


def build_markdown(results: list[dict[str, Any]], runs: int) -> str:
    table_rows = []
    for row in results:
        first = next(r for r in results if r["backend"] == row["backend"])
        table_rows.append(
            [
                row["backend"],
                f"{row['messages']:,}",
                f"{fmt_seconds(min(row['catch_up']))} / "
                f"{fmt_seconds(statistics.median(row['catch_up']))}",
                fmt_ratio(
                    statistics.median(row["catch_up"]) / statistics.median(first["catch_up"])
                ),
                f"{fmt_seconds(statistics.median(row['commit']))}",
                fmt_ratio(statistics.median(row["commit"]) / statistics.median(first["commit"])),
                f"{row['conflicts']} of {row['conflicts'] + len(row['commit'])}",
            ]
        )
    table = markdown_table(
        [
            "backend",
            "history (messages)",
            f"catch-up of {NEW_ROWS} rows best / median",
            "vs smallest",
            "fold commit (median)",
            "vs smallest",
            "commits that lost the race",
        ],
        table_rows,
    )
    return "\n".join(
        [
            f"# {NAME}: catching up and committing folds, by history length",
            "",
            f"Catch-up: another `Store` appends {NEW_ROWS} messages, then a resumed session's "
            f"`catch_up()` reads them into memory (best and median of {runs} runs). Fold "
            f"commit: {FOLDERS} threads land {COMMITS} summary versions each by "
            f"compare-and-set while {APPENDERS} threads append; the time is per landed "
            "version, lost races and retries included. *vs smallest*: the median over the "
            "median at the smallest history of the same backend (flat = near 1×).",
            "",
            table,
            "",
            machine_line(),
            database_line(),
        ]
    )


def chart(results: list[dict[str, Any]], path: Path) -> Path:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.8))
    for backend in dict.fromkeys(r["backend"] for r in results):
        rows = [r for r in results if r["backend"] == backend]
        sizes = [r["messages"] for r in rows]
        ax.plot(
            sizes,
            [statistics.median(r["catch_up"]) * 1e3 for r in rows],
            "o-",
            label=f"{backend}: catch-up of {NEW_ROWS} rows",
        )
        ax.plot(
            sizes,
            [statistics.median(r["commit"]) * 1e3 for r in rows],
            "s--",
            label=f"{backend}: fold commit under contention",
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    top = max(statistics.median(r[k]) for r in results for k in ("catch_up", "commit"))
    ax.set_ylim(top=top * 1e3 * 20)  # ms; room for the legend above the lines
    ax.set_xlabel("messages in the conversation")
    ax.set_ylabel("median ms")
    ax.set_title("Flat in history length")
    ax.legend(fontsize=8)
    return save_chart(fig, path, dpi=120)


def run_bench(args: argparse.Namespace, log: Callable[[str], None] = print) -> Report:
    sizes = tuple(args.sizes or (QUICK_SIZES if args.quick else DEFAULT_SIZES))
    runs = args.runs if args.runs is not None else (5 if args.quick else 20)
    results = []
    with tempfile.TemporaryDirectory(prefix="chatmem-bench-") as folder:
        url = f"sqlite:///{Path(folder) / 'bench.db'}"
        results += run_backend("sqlite", url, sizes, runs, log)
    if args.postgres_url:
        results += run_backend("postgresql", args.postgres_url, sizes, runs, log)
    else:
        log("postgresql: skipped (set CHATMEM_TEST_DATABASE_URL or pass --postgres-url)")
    markdown = build_markdown(results, runs)
    data = {
        "name": NAME,
        "sizes": sizes,
        "runs": runs,
        "machine": machine_line(),
        "results": results,
    }
    return finish_report(
        args,
        NAME,
        markdown,
        data,
        lambda p: chart(results, p),
        "catch-up and fold commit by history length",
    )


def main(argv: list[str] | None = None) -> int:
    parser = base_parser("python -m bench.bench_shared", (__doc__ or NAME).splitlines()[0])
    parser.add_argument(
        "--sizes",
        type=int,
        nargs="+",
        default=None,
        help="history lengths (default 1,000 10,000 100,000)",
    )
    parser.add_argument("--runs", type=int, default=None, help="catch-up runs per size")
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("CHATMEM_TEST_DATABASE_URL") or None,
        help="also measure PostgreSQL (default: $CHATMEM_TEST_DATABASE_URL)",
    )
    args = parser.parse_args(argv)
    print(run_bench(args).markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())

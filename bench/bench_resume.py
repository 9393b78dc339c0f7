"""Resuming a long conversation: ``Store.load()`` (summary + unfolded tail) vs reading it all.

Builds one conversation of ``--messages`` messages (default 100,000; realistic user/assistant
texts) in a fresh SQLite file and, when ``CHATMEM_TEST_DATABASE_URL`` (or ``--postgres-url``)
is set, in PostgreSQL too. Setup writes through ``Store._bulk_append`` (executemany, in batches,
through the same tables, constraints and validation as ``append_message``), then stores a
summary covering all but the last 20 messages.

It then times, best and median of ``--runs`` (default 5):

* ``Store(url).load(cid)``: a fresh Store each time (engine, connection, schema check, the
  query), which is what a new app process or a page reload pays;
* ``Store(url).messages(cid)``: the same, but reading every message;
* both again on one already-open Store (``warm``), the steady state of a running app.

The PostgreSQL conversation is deleted afterwards; nothing else in that database is touched.

Run: ``python -m bench.bench_resume [--messages N] [--runs R] [--quick] [--no-chart] [--out DIR]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench._common import (
    Report,
    base_parser,
    conversation,
    database_line,
    fmt_ratio,
    fmt_seconds,
    machine_line,
    markdown_table,
    out_dir,
    pyplot,
    write_report,
)
from chatmem.store import Store, mask_url

NAME = "bench_resume"
DEFAULT_MESSAGES = 100_000
QUICK_MESSAGES = 10_000
TAIL = 20
BATCH = 10_000
DISTINCT_TEXTS = 2_000  # generated once, then cycled: setup speed does not matter


def build(url: str, n: int, log: Callable[[str], None]) -> str:
    """One conversation of ``n`` messages plus a summary covering all but the last TAIL."""
    texts = conversation(min(n, DISTINCT_TEXTS))
    started = time.perf_counter()
    with Store(url) as store:
        cid = store.create_conversation(f"bench_resume {n:,} messages").id
        for first in range(0, n, BATCH):
            batch = [
                {"role": texts[i % len(texts)][0], "content": texts[i % len(texts)][1]}
                for i in range(first, min(n, first + BATCH))
            ]
            store._bulk_append(cid, batch)
        covers = max(n - TAIL, 1)
        store.add_summary(cid, "Summary of the conversation so far.", 8, covers, model="bench")
        assert store.count_messages(cid) == n
    log(f"  {store.backend}: built {n:,} messages in {time.perf_counter() - started:.1f} s")
    return cid


def timed(runs: int, action: Callable[[], int]) -> tuple[list[float], int]:
    times, rows = [], 0
    for _ in range(runs):
        started = time.perf_counter()
        rows = action()
        times.append(time.perf_counter() - started)
    return times, rows


def measure(url: str, cid: str, runs: int) -> dict[str, Any]:
    def fresh_load() -> int:
        with Store(url) as store:
            return len(store.load(cid).messages)

    def fresh_all() -> int:
        with Store(url) as store:
            return len(store.messages(cid))

    out: dict[str, Any] = {}
    out["fresh_load"], out["load_rows"] = timed(runs, fresh_load)
    out["fresh_all"], out["all_rows"] = timed(runs, fresh_all)
    with Store(url) as store:
        store.load(cid)  # connect once before timing
        out["warm_load"], _ = timed(runs, lambda: len(store.load(cid).messages))
        out["warm_all"], _ = timed(runs, lambda: len(store.messages(cid)))
    return out


def run_backend(
    label: str, url: str, n: int, runs: int, log: Callable[[str], None], cleanup: bool
) -> dict[str, Any]:
    log(f"{label}: {mask_url(url)}")
    cid = build(url, n, log)
    try:
        result = measure(url, cid, runs)
    finally:
        if cleanup:
            with Store(url) as store:
                store.delete_conversation(cid)
    result["backend"] = label
    return result


def build_markdown(results: list[dict[str, Any]], n: int, runs: int) -> str:
    rows = []
    for result in results:
        for mode in ("fresh", "warm"):
            load, full = result[f"{mode}_load"], result[f"{mode}_all"]
            rows.append(
                [
                    f"{result['backend']}, "
                    + ("new Store each time" if mode == "fresh" else "one open Store"),
                    f"{result['load_rows']:,}",
                    f"{fmt_seconds(min(load))} / {fmt_seconds(statistics.median(load))}",
                    f"{result['all_rows']:,}",
                    f"{fmt_seconds(min(full))} / {fmt_seconds(statistics.median(full))}",
                    fmt_ratio(statistics.median(full) / statistics.median(load)),
                ]
            )
    table = markdown_table(
        [
            "backend, store",
            "load() rows",
            "load() best / median",
            "messages() rows",
            "messages() best / median",
            "ratio (median)",
        ],
        rows,
    )
    return "\n".join(
        [
            f"# {NAME}: resume a {n:,}-message conversation",
            "",
            f"A summary covers all but the last {TAIL} messages. `load()` reads the conversation,"
            " the latest summary and the unfolded tail by index range; `messages()` reads the"
            f" whole history. Best and median of {runs} runs.",
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
    labels, load, full = [], [], []
    for result in results:
        for mode in ("fresh", "warm"):
            labels.append(f"{result['backend']}\n{mode}")
            load.append(statistics.median(result[f"{mode}_load"]) * 1e3)
            full.append(statistics.median(result[f"{mode}_all"]) * 1e3)
    xs = range(len(labels))
    ax.bar([x - 0.2 for x in xs], load, width=0.4, label="load(): summary + tail")
    ax.bar([x + 0.2 for x in xs], full, width=0.4, label="messages(): whole history")
    ax.set_xticks(list(xs), labels)
    ax.set_yscale("log")
    ax.set_ylabel("median ms (log scale)")
    ax.set_title("Resuming a long conversation")
    ax.set_ylim(top=max(full) * 12)  # room for the legend above the bars
    ax.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def run_bench(args: argparse.Namespace, log: Callable[[str], None] = print) -> Report:
    n = (
        args.messages
        if args.messages is not None
        else (QUICK_MESSAGES if args.quick else DEFAULT_MESSAGES)
    )
    if n < TAIL + 1:
        raise SystemExit(f"--messages must be at least {TAIL + 1}")
    results = []
    with tempfile.TemporaryDirectory(prefix="chatmem-bench-") as folder:
        sqlite_url = f"sqlite:///{Path(folder) / 'bench.db'}"
        results.append(run_backend("sqlite", sqlite_url, n, args.runs, log, cleanup=False))
    if args.postgres_url:
        results.append(
            run_backend("postgresql", args.postgres_url, n, args.runs, log, cleanup=True)
        )
    else:
        log("postgresql: skipped (set CHATMEM_TEST_DATABASE_URL or pass --postgres-url)")
    markdown = build_markdown(results, n, args.runs)
    data = {
        "name": NAME,
        "messages": n,
        "tail": TAIL,
        "runs": args.runs,
        "machine": machine_line(),
        "results": results,
    }
    folder_out = out_dir(args)
    png = None
    if not args.no_chart:
        png = chart(results, folder_out / f"{NAME}.png")
        markdown += f"\n\n![load() vs messages()]({NAME}.png)\n"
    return write_report(folder_out, NAME, markdown, data, png)


def main(argv: list[str] | None = None) -> int:
    parser = base_parser("python -m bench.bench_resume", __doc__.splitlines()[0])
    parser.add_argument(
        "--messages",
        type=int,
        default=None,
        help=f"messages in the conversation (default {DEFAULT_MESSAGES:,}; "
        f"{QUICK_MESSAGES:,} with --quick)",
    )
    parser.add_argument("--runs", type=int, default=5, help="timed runs per measurement")
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("CHATMEM_TEST_DATABASE_URL") or None,
        help="also measure PostgreSQL (default: $CHATMEM_TEST_DATABASE_URL)",
    )
    args = parser.parse_args(argv)
    report = run_bench(args)
    print(report.markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())

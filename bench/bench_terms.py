"""Query terms: the time to pick a message's search terms, by message length.

Recall turns the newest message into at most eight telling words (``chatmem.text.
query_terms``) before every request. A first version de-duplicated words by searching the
list of words kept so far, which is quadratic in the number of distinct words; chatmem now
keeps them in a dict (linear) and reads only the first ``MAX_QUERY_CHARS`` characters. Both
run here side by side on the same random messages; the reference is this file's copy of the
list-based de-duplication (it picks the same terms, which the run checks).

Run: ``python -m bench.bench_terms [--quick] [--no-chart] [--out DIR]``.
"""

from __future__ import annotations

import argparse
import random
import re
import string
import time
from collections.abc import Callable, Sequence
from pathlib import Path

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
from chatmem.text import MAX_QUERY_CHARS, MAX_TERMS, STOPWORDS, query_terms

NAME = "bench_terms"
SIZES = (1_000, 10_000, 60_000)  # words per message
QUICK_SIZES = (500, 2_000)
REFERENCE_LIMIT = 10.0  # seconds: a slower reference run is reported, not repeated


def list_dedup_terms(text: str, limit: int = MAX_TERMS) -> list[str]:
    """The list-based de-duplication of the first version (quadratic), for comparison."""
    words: list[str] = []
    for word in re.findall(r"\w+", text.lower()):
        if len(word) >= 2 and word not in STOPWORDS and word not in words:
            words.append(word)
    if len(words) > limit:
        keep = set(sorted(words, key=len, reverse=True)[:limit])
        words = [w for w in words if w in keep][:limit]
    return words


def message(words: int, seed: int) -> str:
    rng = random.Random(seed)
    return " ".join(
        "".join(rng.choices(string.ascii_lowercase, k=rng.randint(3, 10))) for _ in range(words)
    )


def best_of(fn: Callable[[str], list[str]], text: str, reps: int) -> tuple[float, list[str]]:
    best, result = float("inf"), []
    for _ in range(reps):
        start = time.perf_counter()
        result = fn(text)
        best = min(best, time.perf_counter() - start)
        if best > REFERENCE_LIMIT:
            break
    return best, result


def run(sizes: Sequence[int]) -> list[dict[str, object]]:
    rows = []
    for n in sizes:
        text = message(n, seed=n)
        ours, got = best_of(query_terms, text, reps=5)
        ref, _ = best_of(list_dedup_terms, text, reps=3 if n <= 10_000 else 1)
        same = got == list_dedup_terms(text[:MAX_QUERY_CHARS])
        rows.append(
            {"words": n, "chars": len(text), "chatmem": ours, "list": ref, "same_terms": same}
        )
        print(f"  {n:>7,} words: chatmem {ours * 1e3:.2f} ms, list {ref * 1e3:.1f} ms", flush=True)
    return rows


def chart(rows: list[dict[str, object]], path: Path) -> Path:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    xs = [r["words"] for r in rows]
    ax.plot(xs, [r["chatmem"] for r in rows], marker="o", label="chatmem (dict, bounded)")
    ax.plot(xs, [r["list"] for r in rows], marker="s", label="list de-duplication")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("words in the message")
    ax.set_ylabel("seconds to pick the terms")
    ax.legend()
    return save_chart(fig, path)


def run_bench(args: argparse.Namespace) -> Report:
    sizes = QUICK_SIZES if args.quick else SIZES
    print(f"{NAME}: sizes {', '.join(f'{n:,}' for n in sizes)} words", flush=True)
    rows = run(sizes)
    table = markdown_table(
        ["words", "characters", "chatmem", "list de-duplication", "list / chatmem", "same terms"],
        [
            [
                f"{r['words']:,}",
                f"{r['chars']:,}",
                fmt_seconds(r["chatmem"]),  # type: ignore[arg-type]
                fmt_seconds(r["list"]),  # type: ignore[arg-type]
                fmt_ratio(r["list"] / r["chatmem"]),  # type: ignore[operator]
                "yes" if r["same_terms"] else "no",
            ]
            for r in rows
        ],
    )
    markdown = (
        f"# Query terms by message length\n\n{table}\n\nBest of several runs each; chatmem "
        f"reads the first {MAX_QUERY_CHARS:,} characters of a message, the list version all "
        f"of it. \"Same terms\": chatmem's terms equal the list version's on that prefix.\n\n"
        f"{machine_line()}\n"
    )
    return finish_report(
        args, NAME, markdown, {"rows": rows}, lambda p: chart(rows, p), "query terms time"
    )


def main(argv: list[str] | None = None) -> int:
    return run_main(script_parser(NAME, __doc__), run_bench, argv)


if __name__ == "__main__":
    raise SystemExit(main())

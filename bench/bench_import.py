"""Imports and long resumes: the streamed import and the bounded resume vs the old code paths.

Three scenarios, each measured twice in one run, the old way ("before") and as shipped
("after"), every measurement in a fresh Python process (``python -m bench.bench_import
--child ...``) so that its peak resident memory (``getrusage().ru_maxrss``) is its own:

* **refuse**: an upload of ``--oversize`` tiny messages (default 2,000,000, ~80 MB; the limit is
  250,000), already in memory as the app holds it (a ``BytesIO``, like Streamlit's
  ``UploadedFile``). Before: the bytes parsed whole with ``json`` (``parse_import``), then
  checked (``validate_import``). After: ``Store.import_json(file)``, which reads the stream and
  stops at the 250,001st entry. Time to the refusal and memory added over the upload itself.
* **import**: a legal file of ``--messages`` messages (default 250,000), the same two ways;
  before also writes the way it did (every row built, then one insert). After, rows this many
  are not kept from the check: the file is read a second time, inside the transaction.
* **import_small**: the same with 20,000 messages, whose checked rows are kept (one reading).
* **resume**: ``ChatMemory.resume`` of that conversation (no summary: all of it unfolded).
  Before: the old ``_load`` (``Store.load``: every unfolded message read, each token-counted
  and added to the memory). After: ``_load`` reads the newest messages that two budgets hold
  (the rest is left to recall).

The "before" code is a copy of what the repository ran before this change, kept here (and
only here) so that both sides come from the same run on the same machine. SQLite, in a
temporary folder.

Run: ``python -m bench.bench_import [--oversize N] [--messages N] [--quick] [--no-chart]
[--out DIR]``.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench._common import (
    REPO_ROOT,
    Report,
    finish_report,
    fmt_ratio,
    fmt_seconds,
    machine_line,
    markdown_table,
    package_version,
    pyplot,
    run_main,
    save_chart,
    script_parser,
)

NAME = "bench_import"
OVERSIZE = 2_000_000
MESSAGES = 250_000
QUICK_OVERSIZE = 260_000
QUICK_MESSAGES = 5_000
SMALL = 20_000
QUICK_SMALL = 2_000
SCENARIOS = ("refuse", "import", "import_small", "resume")
MODES = ("before", "after")


# ------------------------------------------------------------------------------ the files
def write_file(path: Path, n: int) -> int:
    """An export of ``n`` tiny messages, no summary (``{"seq":1,"role":"user","content":"m1"}``,
    about 40 bytes each); returns its size in bytes."""
    with path.open("wb") as out:
        out.write(b'{"format":"chatmem.conversation","version":1,')
        out.write(b'"conversation":{"title":"bench_import"},"messages":[')
        for first in range(1, n + 1, 10_000):
            out.write(
                b",".join(
                    b'{"seq":%d,"role":"%s","content":"m%d"}'
                    % (i, b"user" if i % 2 else b"assistant", i)
                    for i in range(first, min(n, first + 9_999) + 1)
                )
            )
            if first + 10_000 <= n:
                out.write(b",")
        out.write(b"]}")
    return path.stat().st_size


# ------------------------------------------------------------------------------ the old code
def import_before(store: Any, raw: bytes, owner: str | None = None) -> Any:
    """``Store.import_json`` as it was: parse all, check all, build every row, insert."""
    from chatmem.store.queries import get_conversation, insert_messages
    from chatmem.store.records import dumps, dumps_or_none, now
    from chatmem.store.schema import conversations_table
    from chatmem.store.validate import parse_import, validate_import

    valid = validate_import(parse_import(raw))
    created = now()
    cid = uuid.uuid4().hex
    conv = valid.conversation
    with store._tx(write=True) as conn:
        conn.execute(
            conversations_table.insert().values(
                id=cid,
                title=conv["title"],
                created_at=conv["created_at"] or created,
                updated_at=created,
                settings=dumps(conv["settings"]),
                owner=owner,
            )
        )
        if valid.messages:
            insert_messages(
                conn,
                [
                    {
                        **msg,
                        "conversation_id": cid,
                        "usage": dumps_or_none(msg["usage"]),
                        "created_at": msg["created_at"] or created,
                    }
                    for msg in valid.messages
                ],
            )
        info = get_conversation(conn, cid)
    return info


def resume_before_class() -> type:
    """``ChatMemory`` with ``_load`` as it was: every unfolded message read and counted."""
    from chatmem import ChatMemory

    class ResumeBefore(ChatMemory):
        def _load(self) -> None:
            loaded = self._journal.load()
            assert loaded is not None
            if loaded.summary is not None:
                self.memory.summary = self._summary(
                    loaded.summary.text,
                    loaded.summary.covers_seq,
                    loaded.summary.model,
                    loaded.summary.created_at.timestamp(),
                )
            for m in loaded.messages:
                if m.status != "ok":
                    continue
                msg = self.memory.add(
                    m.role, m.content, name=m.name, usage=m.usage, seq=m.seq, id=m.id
                )
                self.recall_index.add(msg.seq, m.name or m.role, m.content)
            self.title = loaded.info.title

    return ResumeBefore


# ------------------------------------------------------------------------------ one child
def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def child(scenario: str, mode: str, path: str, url: str, cid: str | None) -> dict[str, Any]:
    """One measurement, in this (fresh) process; what happened, as JSON-ready numbers."""
    import io

    from chatmem import ChatMemory, OpenAIChat, Settings
    from chatmem.store import ImportValidationError, Store

    with Store(url) as store:
        if scenario == "resume":
            assert cid is not None
            model = OpenAIChat("gpt-4o-mini", api_key="bench", base_url="http://127.0.0.1:9/v1")
            model.counter.message({"role": "user", "content": "warm the tokenizer up"})
            kind = resume_before_class() if mode == "before" else ChatMemory
            baseline = peak_mb()
            started = time.perf_counter()
            bot = kind.resume(store, cid, model=model, settings=Settings(), background=False)
            seconds = time.perf_counter() - started
            outcome = f"{bot.message_count:,} messages in memory"
            held = bot.message_count
        else:
            upload = io.BytesIO(Path(path).read_bytes())  # the upload, as the app holds it
            baseline = peak_mb()
            started = time.perf_counter()
            try:
                if mode == "before":
                    info = import_before(store, upload.getvalue())  # the old app: getvalue()
                else:
                    info = store.import_json(upload)  # type: ignore[arg-type]
                outcome = f"imported {store.count_messages(info.id):,} messages"
            except ImportValidationError as exc:
                outcome = f"refused: {exc}"
            seconds = time.perf_counter() - started
            held = None
    return {
        "scenario": scenario,
        "mode": mode,
        "seconds": seconds,
        "baseline_mb": baseline,
        "peak_mb": peak_mb(),
        "added_mb": peak_mb() - baseline,
        "outcome": outcome,
        "held": held,
    }


def run_child(scenario: str, mode: str, path: Path, url: str, cid: str | None) -> dict[str, Any]:
    command = [
        sys.executable,
        "-m",
        "bench.bench_import",
        "--child",
        json.dumps({"scenario": scenario, "mode": mode, "path": str(path), "url": url, "cid": cid}),
    ]
    done = subprocess.run(
        command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=1800, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"{scenario}/{mode} failed:\n{done.stderr[-4000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


# ------------------------------------------------------------------------------ the report
LABELS = {
    "refuse": "refuse an upload of {oversize:,} messages ({oversize_mb:.0f} MB)",
    "import": "import {messages:,} messages ({messages_mb:.1f} MB)",
    "import_small": "import {small:,} messages ({small_mb:.1f} MB)",
    "resume": "resume {messages:,} messages, no summary",
}


def build_markdown(results: dict[str, dict[str, dict[str, Any]]], sizes: dict[str, Any]) -> str:
    rows = []
    for scenario in SCENARIOS:
        before, after = results[scenario]["before"], results[scenario]["after"]
        rows.append(
            [
                LABELS[scenario].format(**sizes),
                fmt_seconds(before["seconds"]),
                f"{before['added_mb']:,.0f} MB",
                fmt_seconds(after["seconds"]),
                f"{after['added_mb']:,.0f} MB",
                fmt_ratio(before["seconds"] / max(after["seconds"], 1e-9)),
                fmt_ratio(before["added_mb"] / max(after["added_mb"], 1.0)),
            ]
        )
    table = markdown_table(
        [
            "scenario",
            "before: time",
            "before: peak memory added",
            "after: time",
            "after: peak memory added",
            "time, before / after",
            "memory, before / after",
        ],
        rows,
    )
    outcomes = [
        f"- {scenario}, {mode}: {results[scenario][mode]['outcome']} "
        f"(peak {results[scenario][mode]['peak_mb']:,.0f} MB, of which "
        f"{results[scenario][mode]['baseline_mb']:,.0f} MB before it started)"
        for scenario in SCENARIOS
        for mode in MODES
    ]
    return "\n".join(
        [
            f"# {NAME}: streamed import and bounded resume, before and after",
            "",
            "Each figure comes from its own fresh process: time of the operation, and how far "
            "it raised the process's peak resident memory above where it stood just before "
            "(the upload already in memory, Python and chatmem imported). Memory ratios count "
            "at least 1 MB on the after side. SQLite.",
            "",
            table,
            "",
            "What each run did:",
            "",
            *outcomes,
            "",
            machine_line(),
            f"ijson {package_version('ijson')}, SQLAlchemy {package_version('sqlalchemy')}.",
        ]
    )


def chart(results: dict[str, dict[str, dict[str, Any]]], path: Path) -> Path:
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    xs = range(len(SCENARIOS))
    for ax, key, label in (
        (axes[0], "seconds", "seconds"),
        (axes[1], "added_mb", "peak memory added, MB"),
    ):
        highest = 1e-3
        for offset, mode in ((-0.2, "before"), (0.2, "after")):
            values = [max(results[s][mode][key], 1e-3) for s in SCENARIOS]
            highest = max(highest, *values)
            ax.bar([x + offset for x in xs], values, width=0.4, label=mode)
        ax.set_xticks(list(xs), list(SCENARIOS))
        ax.set_yscale("log")
        ax.set_ylim(top=highest * 30)  # room for the legend above the bars
        ax.set_ylabel(f"{label} (log scale)")
        ax.legend(loc="upper right", ncol=2)
    fig.suptitle("Imports and long resumes: before vs after")
    return save_chart(fig, path, dpi=120)


def run_bench(args: argparse.Namespace, log: Callable[[str], None] = print) -> Report:
    oversize = args.oversize or (QUICK_OVERSIZE if args.quick else OVERSIZE)
    messages = args.messages or (QUICK_MESSAGES if args.quick else MESSAGES)
    results: dict[str, dict[str, dict[str, Any]]] = {s: {} for s in SCENARIOS}
    with tempfile.TemporaryDirectory(prefix="chatmem-bench-import-") as folder:
        big, legal = Path(folder) / "oversize.json", Path(folder) / "legal.json"
        small_file = Path(folder) / "small.json"
        small = QUICK_SMALL if args.quick else SMALL
        sizes = {
            "oversize": oversize,
            "oversize_mb": write_file(big, oversize) / 1e6,
            "messages": messages,
            "messages_mb": write_file(legal, messages) / 1e6,
            "small": small,
            "small_mb": write_file(small_file, small) / 1e6,
        }

        def url(name: str) -> str:  # a fresh database for each import: none starts fuller
            return f"sqlite:///{Path(folder) / name}.db"

        for mode in MODES:
            log(f"refuse, {mode}: {oversize:,} messages")
            results["refuse"][mode] = run_child("refuse", mode, big, url(f"refuse-{mode}"), None)
            log(f"import, {mode}: {messages:,} messages")
            results["import"][mode] = run_child("import", mode, legal, url(f"import-{mode}"), None)
            log(f"import, {mode}: {small:,} messages")
            results["import_small"][mode] = run_child(
                "import", mode, small_file, url(f"small-{mode}"), None
            )
        from chatmem.store import Store

        with Store(url("import-after")) as store:  # the conversation to resume
            cid = store.list_conversations(limit=1)[0].id
        for mode in MODES:
            log(f"resume, {mode}: {messages:,} messages")
            results["resume"][mode] = run_child("resume", mode, legal, url("import-after"), cid)
    markdown = build_markdown(results, sizes)
    data = {"name": NAME, "sizes": sizes, "machine": machine_line(), "results": results}
    return finish_report(args, NAME, markdown, data, lambda p: chart(results, p), "before vs after")


def main(argv: Sequence[str] | None = None) -> int:
    parser = script_parser(NAME, __doc__)
    parser.add_argument(
        "--oversize",
        type=int,
        default=None,
        help=f"messages in the file to refuse (default {OVERSIZE:,}; {QUICK_OVERSIZE:,} quick)",
    )
    parser.add_argument(
        "--messages",
        type=int,
        default=None,
        help=f"messages to import and resume (default {MESSAGES:,}; {QUICK_MESSAGES:,} quick)",
    )
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        print(json.dumps(child(**json.loads(args.child))))
        return 0
    return run_main(parser, run_bench, argv)


if __name__ == "__main__":
    sys.exit(main())

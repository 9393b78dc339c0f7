"""A process that chats in a shared conversation, for the tests of many processes on one store.

``python -m tests.unit.shared_worker chat URL CID SIDE FAKE_URL FACTS READY_DIR``: tells the
fake model ``FACTS`` facts (``my <side><word> is <value>``) with folds along the way, waits
until every side has (a file per side in ``READY_DIR``), then a few more turns so the facts
fold. Prints one JSON line: its fold events.

``python -m tests.unit.shared_worker append URL CID SIDE THREADS COUNT``: ``THREADS`` threads
append ``COUNT`` messages each (``<side>-<thread>-<n>``), released together. Prints the
failures as JSON.
"""

from __future__ import annotations

import json
import random
import sys
import threading
import time
from pathlib import Path

WORDS = [
    "alpha",
    "bravo",
    "charlie",
    "delta",
    "echo",
    "foxtrot",
    "golf",
    "hotel",
    "india",
    "juliet",
    "kilo",
    "lima",
    "mike",
    "november",
    "oscar",
    "papa",
    "quebec",
    "romeo",
    "sierra",
    "tango",
    "uniform",
    "victor",
    "whiskey",
    "xray",
    "yankee",
    "zulu",
]
FILLER = "gardens rivers trains old maps towers tall ships harbours lanterns " * 9


def fact(side: str, i: int) -> tuple[str, str]:
    """The key and value of fact ``i`` of ``side`` (keys are letters only, as the fake reads)."""
    return f"{side}{WORDS[i]}", f"{side.upper()}{i}v"


def chat(url: str, cid: str, side: str, fake_url: str, facts: int, ready: str) -> None:
    from chatmem import ChatMemory, OpenAIChat, Settings
    from chatmem.store import Store

    store = Store(url)
    model = OpenAIChat("gpt-4o-mini", api_key="k", base_url=fake_url, max_retries=2)
    bot = ChatMemory.resume(
        store,
        cid,
        model=model,
        settings=Settings(),
        max_tokens=1800,
        keep_recent=2,
        summary_max_tokens=600,
        background=False,
        recall=False,
    )
    rng = random.Random(side)
    for i in range(facts):
        key, value = fact(side, i)
        bot.ask(f"Note {i}: my {key} is {value}. {FILLER}")
        time.sleep(rng.uniform(0, 0.02))
    Path(ready, side).touch()
    deadline = time.monotonic() + 120
    while len(list(Path(ready).iterdir())) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    for i in range(8):
        bot.ask(f"Closing remark {i} from {side}: {FILLER}")
    bot.close()
    store.close()
    print(json.dumps([e.data for e in bot.events if e.kind in ("fold", "fold_failed")]))


def append(url: str, cid: str, side: str, threads: int, count: int) -> None:
    from chatmem.store import Store

    store = Store(url)
    barrier = threading.Barrier(threads)
    failures: list[str] = []

    def run(t: int) -> None:
        barrier.wait()
        for n in range(count):
            try:
                store.append_message(cid, "user", f"{side}-{t}-{n}")
            except Exception as exc:  # reported, and the test fails on it
                failures.append(f"{type(exc).__name__}: {exc}")

    workers = [threading.Thread(target=run, args=(t,)) for t in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    store.close()
    print(json.dumps(failures))


if __name__ == "__main__":
    job, *args = sys.argv[1:]
    if job == "chat":
        chat(args[0], args[1], args[2], args[3], int(args[4]), args[5])
    else:
        append(args[0], args[1], args[2], int(args[3]), int(args[4]))

"""Many OS processes on one conversation, on SQLite and the real PostgreSQL.

The fold race: two processes tell the model facts and fold as they go; afterwards every
summary version's coverage was read (the invariant), the versions form one line, and a
resumed session's newest summary holds every fact of both sides. The append storm: two
processes of 16 threads append while the CPU is busy; every message is stored once, in order.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from chatmem import ChatMemory, OpenAIChat, Settings
from chatmem.store import Store
from tests.unit.shared_checks import invariant_violations, lineage_is_linear, read_by_version
from tests.unit.shared_worker import fact

ROOT = Path(__file__).parents[2]
FACTS = 25


def _run(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.unit.shared_worker", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finish(procs: list[subprocess.Popen[str]], timeout: float) -> list[object]:
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=timeout)
        assert proc.returncode == 0, err[-3000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    return results


def test_fold_race_between_two_processes(fake, store_url: str, tmp_path: Path) -> None:
    with Store(store_url) as store:
        cid = store.create_conversation(settings={"max_tokens": 1800}).id
    ready = tmp_path / "ready"
    ready.mkdir()
    procs = [_run("chat", store_url, cid, side, fake.url, str(FACTS), str(ready)) for side in "ab"]
    folds = _finish(procs, timeout=240)
    assert all(folds), "each process folded"
    lost = sum(f.get("rebuilt", 0) + bool(f.get("superseded")) for side in folds for f in side)
    print(f"folds per process: {[len(side) for side in folds]}; races lost and handled: {lost}")

    with Store(store_url) as store:
        assert invariant_violations(store, cid) == []
        assert lineage_is_linear(store, cid)
        versions = store.list_summaries(cid)
        assert len(versions) >= 4
        rows = store.messages(cid)
        fact_seqs = {
            (side, i): next(m.seq for m in rows if f"is {fact(side, i)[1]}." in m.content)
            for side in "ab"
            for i in range(FACTS)
        }
        resumed = ChatMemory.resume(
            store,
            cid,
            model=OpenAIChat("gpt-4o-mini", api_key="k", base_url=fake.url),
            settings=Settings(),
            background=False,
            recall=False,
        )
        newest = resumed.memory.summary
        assert newest is not None and newest.id == versions[-1].id
        covered = read_by_version(store, cid)[newest.id]
        assert set(fact_seqs.values()) <= covered, "every fact message was read by a fold"
        for side in "ab":
            for i in range(FACTS):
                key, value = fact(side, i)
                assert f"The user's {key} is {value}." in newest.text
        key, value = fact("a", 3)
        assert resumed.ask(f"What is my {key}?") == f"Your {key} is {value}."
        key, value = fact("b", 17)
        assert resumed.ask(f"What is my {key}?") == f"Your {key} is {value}."


@contextmanager
def busy_cpu(workers: int = 2) -> Iterator[None]:
    """Keep the CPU busy with spinning processes while the block runs."""
    spinners = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(workers)
    ]
    try:
        yield
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()


@pytest.mark.postgres
def test_appends_from_two_processes_of_16_threads_under_load(tmp_path: Path) -> None:
    from tests.unit.conftest import reset_postgres

    url = reset_postgres()
    threads, count = 16, 60
    with Store(url) as store:
        cid = store.create_conversation().id
    with busy_cpu():
        procs = [_run("append", url, cid, side, str(threads), str(count)) for side in "pq"]
        failures = _finish(procs, timeout=280)
    assert failures == [[], []]
    with Store(url) as store:
        rows = store.messages(cid)
    assert [m.seq for m in rows] == list(range(1, 2 * threads * count + 1))
    contents = [m.content for m in rows]
    assert len(set(contents)) == len(contents) == 2 * threads * count  # each exactly once
    for side in "pq":
        for t in range(threads):
            mine = [int(c.rsplit("-", 1)[1]) for c in contents if c.startswith(f"{side}-{t}-")]
            assert mine == list(range(count)), "a thread's messages are stored in its order"

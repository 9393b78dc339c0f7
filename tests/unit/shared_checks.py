"""Checks shared by the tests of many sessions on one conversation."""

from __future__ import annotations

from chatmem.store import Store


def read_by_version(store: Store, cid: str) -> dict[int, set[int]]:
    """For each summary version id: every seq read by it or a version it extends."""
    versions = {s.id: s for s in store.list_summaries(cid)}
    read: dict[int, set[int]] = {}
    for sid, summary in versions.items():
        seqs: set[int] = set()
        node = summary
        while node is not None:
            assert node.input_seqs is not None, f"version {node.id} does not record its input"
            seqs |= node.input_seqs
            node = versions.get(node.extends_id) if node.extends_id is not None else None
        read[sid] = seqs
    return read


def invariant_violations(store: Store, cid: str) -> list[tuple[int, list[int]]]:
    """(version id, seqs) for every summary version that covers ok messages that neither it
    nor a version it extends read. Empty when the invariant holds."""
    ok = [m.seq for m in store.messages(cid) if m.status == "ok"]
    bad = []
    summaries = {s.id: s for s in store.list_summaries(cid)}
    for sid, seqs in read_by_version(store, cid).items():
        missing = [q for q in ok if q <= summaries[sid].covers_seq and q not in seqs]
        if missing:
            bad.append((sid, missing))
    return bad


def lineage_is_linear(store: Store, cid: str) -> bool:
    """Each version extends the one before it (no two versions built on the same one)."""
    versions = store.list_summaries(cid)
    expected = [None, *(s.id for s in versions[:-1])]
    return [s.extends_id for s in versions] == expected

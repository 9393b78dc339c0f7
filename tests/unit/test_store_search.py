"""Store.search_messages: full-text search over stored messages, on SQLite and PostgreSQL.

SQLite uses the FTS5 table ``messages_fts`` (external content, kept in sync by triggers);
PostgreSQL a GIN index on ``to_tsvector('english', left(content, 100000))``. Both come from
migration 3; migration 5 bounded PostgreSQL's to the head of each message (long messages:
``test_store_long_messages.py``; a damaged index: ``test_store_damage.py``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from chatmem.store import MIGRATIONS, SCHEMA_VERSION, SearchHit, Store, StoreError, queries, search
from tests.unit.conftest import open_stores_at_once

# Filler so that the words of the tests are rare in the collection (BM25 gives words found in
# more than half of the messages no weight at all).
FILLER = [
    "We talked about the weather for a while.",
    "Dinner was pasta with tomato sauce.",
    "The meeting moved to Thursday afternoon.",
    "My sister lives in Lisbon now.",
    "Remind me to water the plants.",
    "The train was twenty minutes late.",
]


def _conversation(store: Store, contents: list[str], **kwargs) -> str:
    cid = store.create_conversation(**kwargs).id
    store._bulk_append(cid, [{"role": "user", "content": text} for text in contents])
    return cid


def _seqs(hits: list[SearchHit]) -> list[int]:
    return [hit.seq for hit in hits]


def _fts_rows(store: Store) -> int:
    """Documents in the SQLite FTS index (its own bookkeeping, not the content table)."""
    assert store._engine is not None
    with store._engine.connect() as conn:
        return int(conn.exec_driver_sql("SELECT count(*) FROM messages_fts_docsize").scalar())


def _fts_integrity_check(store: Store) -> None:
    """Raises if the FTS index disagrees with the messages table (rank=1: compare contents)."""
    assert store._engine is not None
    with store._engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO messages_fts (messages_fts, rank) VALUES ('integrity-check', 1)"
        )


def _versions(store: Store) -> list[int]:
    assert store._engine is not None
    with store._engine.connect() as conn:
        return list(conn.scalars(sa.text("SELECT version FROM schema_version ORDER BY version")))


class _StoreAtVersion2(Store):
    """A Store that migrates only up to schema version 2 (before the search index)."""

    def _migrate(self, target: int = 2) -> None:
        super()._migrate(target)


# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------


def test_the_message_sharing_the_most_words_comes_first(store: Store) -> None:
    cid = _conversation(
        store,
        [
            *FILLER,
            "The harbour was quiet this morning.",  # 7: one word
            "We rented a sailing boat at the harbour, the engine broke.",  # 8: three words
            "The engine of my car is making noise.",  # 9: one word
            "Sailing lessons start next week.",  # 10: one word
            *FILLER,
        ],
    )
    hits = store.search_messages(cid, "sailing boat engine harbour")
    assert hits[0].seq == 8
    assert sorted(_seqs(hits)) == [7, 8, 9, 10]
    assert [hit.score for hit in hits] == sorted((hit.score for hit in hits), reverse=True)
    assert hits[0].score > hits[1].score > 0
    first = hits[0]
    assert (first.role, first.name) == ("user", None)
    assert first.content.startswith("We rented a sailing boat")


def test_hits_carry_role_and_name(store: Store) -> None:
    cid = store.create_conversation().id
    store.append_message(cid, "user", "What is the capital of Australia?", name="sam")
    store.append_message(cid, "assistant", "Canberra is the capital of Australia.")
    store.append_message(cid, "tool", "population of Canberra: 460000", name="lookup")
    hits = {hit.seq: hit for hit in store.search_messages(cid, "Canberra")}
    assert set(hits) == {2, 3}
    assert (hits[2].role, hits[2].name) == ("assistant", None)
    assert (hits[3].role, hits[3].name, hits[3].content) == (
        "tool",
        "lookup",
        "population of Canberra: 460000",
    )


def test_rarer_words_count_more_on_sqlite(tmp_path: Path) -> None:
    """BM25 weighs a word by its rarity; PostgreSQL's ts_rank_cd has no such notion."""
    with Store(str(tmp_path / "idf.db")) as store:
        cid = _conversation(
            store,
            [
                *(f"{text} Budget notes." for text in FILLER),  # "budget" is common...
                "The budget for the trip.",  # 7
                "A zeppelin flew over the stadium.",  # 8: ...and "zeppelin" rare
                *FILLER,
            ],
        )
        assert _seqs(store.search_messages(cid, "budget zeppelin"))[0] == 8


def test_stems_match(store: Store) -> None:
    cid = _conversation(
        store,
        [*FILLER, "I own a small boat.", "She was running late.", "Two cats and a dog."],
    )
    assert _seqs(store.search_messages(cid, "boats")) == [7]
    assert _seqs(store.search_messages(cid, "runs")) == [8]
    assert _seqs(store.search_messages(cid, "cat")) == [9]


def test_before_seq_excludes_later_messages(store: Store) -> None:
    cid = _conversation(store, [f"note {i} about the garden" for i in range(1, 11)])
    assert sorted(_seqs(store.search_messages(cid, "garden"))) == list(range(1, 11))
    assert sorted(_seqs(store.search_messages(cid, "garden", before_seq=5))) == [1, 2, 3, 4]
    assert store.search_messages(cid, "garden", before_seq=1) == []
    assert store.search_messages(cid, "garden", before_seq=0) == []
    assert len(store.search_messages(cid, "garden", before_seq=2**40)) == 10


def test_limit(store: Store) -> None:
    cid = _conversation(store, [f"garden {i}" for i in range(30)])
    assert len(store.search_messages(cid, "garden")) == 20
    assert len(store.search_messages(cid, "garden", limit=3)) == 3
    assert store.search_messages(cid, "garden", limit=0) == []


@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [
        ({"limit": -1}, "limit"),
        ({"limit": "5"}, "limit"),
        ({"limit": True}, "limit"),
        ({"before_seq": "5"}, "before_seq"),
        ({"before_seq": 2.5}, "before_seq"),
        ({"query": None}, "query"),
        ({"query": "boat\x00"}, "query"),
        ({"cid": 5}, "cid"),
    ],
)
def test_bad_arguments_raise_store_error(store: Store, kwargs: dict, problem: str) -> None:
    cid = _conversation(store, ["boat"])
    args = {"cid": cid, "query": "boat", **kwargs}
    with pytest.raises(StoreError, match=problem):
        store.search_messages(args.pop("cid"), args.pop("query"), **args)


def test_other_conversations_never_appear(store: Store) -> None:
    mine = _conversation(store, [*FILLER, "My bicycle has a flat tyre."])
    theirs = _conversation(store, [f"bicycle tyre {i}" for i in range(50)])
    hits = store.search_messages(mine, "bicycle tyre")
    assert _seqs(hits) == [7]
    assert all(hit.content == "My bicycle has a flat tyre." for hit in hits)
    assert len(store.search_messages(theirs, "bicycle", limit=100)) == 50
    assert store.search_messages("no-such-conversation", "bicycle") == []
    assert store.search_messages('"quoted" id', "bicycle") == []


def test_failed_and_incomplete_messages_do_not_appear(store: Store) -> None:
    cid = store.create_conversation().id
    store.append_message(cid, "user", "Tell me about volcanoes.")
    store.append_message(cid, "assistant", "Volcanoes erupt (failed).", status="failed")
    streaming = store.append_message(cid, "assistant", "Volcanoes form where", status="incomplete")
    assert _seqs(store.search_messages(cid, "volcano")) == [1]

    store.update_message(
        streaming.id, content="Lava flows from the crater when magma rises.", status="ok"
    )
    assert _seqs(store.search_messages(cid, "lava crater")) == [3]
    assert _seqs(store.search_messages(cid, "volcano")) == [1]  # the old text is gone
    store.update_message(streaming.id, status="failed")
    assert store.search_messages(cid, "lava") == []
    if store.backend == "sqlite":
        _fts_integrity_check(store)


def test_deleting_a_conversation_removes_it_from_the_index(store: Store) -> None:
    keep = _conversation(store, ["the lighthouse keeper", "the keeper's cat"])
    gone = _conversation(store, [f"lighthouse {i}" for i in range(25)])
    if store.backend == "sqlite":
        assert _fts_rows(store) == 27
    assert store.delete_conversation(gone)
    assert store.search_messages(gone, "lighthouse") == []
    assert _seqs(store.search_messages(keep, "lighthouse")) == [1]
    if store.backend == "sqlite":
        assert _fts_rows(store) == 2
        _fts_integrity_check(store)
        # The index itself holds nothing of the deleted rows (no conversation filter here).
        assert store._engine is not None
        with store._engine.connect() as conn:
            rowids = conn.exec_driver_sql(
                "SELECT rowid FROM messages_fts WHERE messages_fts MATCH 'lighthouse'"
            ).all()
        assert len(rowids) == 1


def test_imported_conversations_are_searchable(store: Store) -> None:
    source = _conversation(store, [*FILLER, "The password hint is the dog's name: Biscuit."])
    doc = store.export_json(source)
    assert store.delete_conversation(source)
    copy = store.import_json(doc).id
    hits = store.search_messages(copy, "biscuit")
    assert _seqs(hits) == [7]
    assert hits[0].content.endswith("Biscuit.")
    if store.backend == "sqlite":
        assert _fts_rows(store) == 7
        _fts_integrity_check(store)


def test_unicode_words(store: Store) -> None:
    cid = _conversation(store, [*FILLER, "Wir treffen uns im Café über dem Bahnhof."])
    assert _seqs(store.search_messages(cid, "café")) == [7]
    assert _seqs(store.search_messages(cid, "Über")) == [7]


# --------------------------------------------------------------------------------------------
# Queries that find nothing, safely
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("query", ["", "   ", "the and of", "I would like to know", "?!", "a b c"])
def test_queries_without_content_words_do_not_touch_the_database(store: Store, query: str) -> None:
    cid = _conversation(store, ["the and of"])
    statements: list[str] = []
    assert store._engine is not None

    @sa.event.listens_for(store._engine, "before_cursor_execute")
    def capture(conn, cursor, statement, parameters, context, executemany):
        statements.append(statement)

    try:
        assert store.search_messages(cid, query) == []
    finally:
        sa.event.remove(store._engine, "before_cursor_execute", capture)
    assert statements == []


@pytest.mark.parametrize(
    "query",
    [
        'boat"',
        '"boat',
        '""',
        "boat*",
        "* boat",
        "NEAR(boat harbour)",
        "NEAR(boat harbour, 2)",
        "boat -harbour",
        "-boat",
        "content:boat",
        "conversation_id:boat",
        "{content}: boat",
        "boat AND OR NOT harbour",
        "^boat",
        "boat + harbour",
        "boat & harbour | !engine <-> x:* 'y'",
        "boat:*",
        "((boat",
        "rowid:1",
        "against",  # a PostgreSQL English stopword that query_terms keeps
        "__ boat",
        "boat\u200b harbour",
        "'; DROP TABLE messages; --",
        "boat " + "y" * 3000,
    ],
)
def test_query_syntax_characters_are_plain_text(store: Store, query: str) -> None:
    cid = _conversation(store, [*FILLER, "A boat in the harbour.", "Drop the table."])
    hits = store.search_messages(cid, query)
    assert all(isinstance(hit, SearchHit) for hit in hits)
    if "boat" in query:
        assert 7 in _seqs(hits)
    assert store.count_messages(cid) == 8


# --------------------------------------------------------------------------------------------
# Schema: migration 3, upgrade and backfill, index use
# --------------------------------------------------------------------------------------------


def test_migration_3_is_recorded(store: Store) -> None:
    assert MIGRATIONS[2].version == 3 and MIGRATIONS[-1].version == SCHEMA_VERSION
    assert _versions(store) == [m.version for m in MIGRATIONS]
    assert store.schema_version == SCHEMA_VERSION


def test_a_version_2_database_is_upgraded_and_backfilled(store_url: str) -> None:
    with _StoreAtVersion2(store_url) as old:
        assert _versions(old) == [1, 2]
        cid = _conversation(old, [*FILLER, "The hedgehog sleeps in the shed."])
        other = _conversation(old, ["A hedgehog in another chat."])
        old.append_message(cid, "assistant", "Hedgehog (cut off)", status="incomplete")
        if old.backend == "sqlite":
            assert old._engine is not None
            tables = set(sa.inspect(old._engine).get_table_names())
            assert "messages_fts" not in tables
    with Store(store_url) as store:
        assert _versions(store) == [m.version for m in MIGRATIONS]
        assert _seqs(store.search_messages(cid, "hedgehogs")) == [7]
        assert _seqs(store.search_messages(other, "hedgehog")) == [1]
        if store.backend == "sqlite":
            assert _fts_rows(store) == 9  # every stored message, whatever its status
            _fts_integrity_check(store)
        # New writes after the upgrade are indexed too.
        store.append_message(cid, "user", "Does the hedgehog eat snails?")
        assert sorted(_seqs(store.search_messages(cid, "hedgehog"))) == [7, 9]


def test_migration_3_is_idempotent(store_url: str) -> None:
    """A half-recorded migration 3 (index built, version row missing) re-applies cleanly:
    the backfill rebuilds the index rather than adding every row a second time."""
    with Store(store_url) as store:
        cid = _conversation(store, [*FILLER, "The owl hoots at night."])
        assert store._engine is not None
        with store._engine.begin() as conn:
            conn.execute(sa.text("DELETE FROM schema_version WHERE version >= 3"))
    with Store(store_url) as store:
        assert _versions(store) == [m.version for m in MIGRATIONS]
        assert _seqs(store.search_messages(cid, "owl")) == [7]
        if store.backend == "sqlite":
            assert _fts_rows(store) == 7
            _fts_integrity_check(store)


def test_concurrent_opens_of_a_version_2_database(store_url: str) -> None:
    with _StoreAtVersion2(store_url) as old:
        cid = _conversation(old, [*FILLER, "The walrus basks on the ice."])
    stores, errors = open_stores_at_once(store_url)
    try:
        assert errors == []
        assert _versions(stores[0]) == [m.version for m in MIGRATIONS]
        for opened in stores:
            assert _seqs(opened.search_messages(cid, "walrus")) == [7]
        if stores[0].backend == "sqlite":
            assert _fts_rows(stores[0]) == 7
    finally:
        for opened in stores:
            opened.close()


@pytest.fixture
def captured_search(store: Store) -> Iterator[list[tuple[str, object]]]:
    """The statements (and parameters) that search_messages sends, while the test runs."""
    statements: list[tuple[str, object]] = []
    assert store._engine is not None

    @sa.event.listens_for(store._engine, "before_cursor_execute")
    def capture(conn, cursor, statement, parameters, context, executemany):
        if "messages" in statement:
            statements.append((statement, parameters))

    yield statements
    sa.event.remove(store._engine, "before_cursor_execute", capture)


def test_bounded_search_leaves_common_terms_out(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Recall's search (bounded) on SQLite: a term in more than COMMON_TERM of the
    conversation's messages is left out when the query has a rarer one, and a query of
    common terms alone searches the newest RECENT_WINDOW messages; unbounded finds all."""
    monkeypatch.setattr(search, "COMMON_TERM", 5)
    monkeypatch.setattr(search, "RECENT_WINDOW", 4)
    cid = _conversation(
        store,
        ["My boat Gypsy is moored at Pier 39."] + [f"A sunny day, note {i}." for i in range(19)],
    )
    other = _conversation(store, ["Gypsy and a sunny day"] * 3)  # not counted for cid
    query = "sunny day: where is Gypsy?"
    everything = store.search_messages(cid, query, before_seq=21, limit=50)
    assert len(everything) == 20
    bounded = store.search_messages(cid, query, before_seq=21, limit=50, bounded=True)
    if store.backend == "sqlite":
        assert _seqs(bounded) == [1]
        recent = store.search_messages(cid, "sunny day", before_seq=21, limit=50, bounded=True)
        assert sorted(_seqs(recent)) == [17, 18, 19, 20]
        recent = store.search_messages(cid, "sunny day", limit=50, bounded=True)
        assert sorted(_seqs(recent)) == [17, 18, 19, 20]
    else:  # PostgreSQL searches every match
        assert _seqs(bounded) == _seqs(everything)
    assert len(store.search_messages(other, "sunny Gypsy", limit=50, bounded=True)) == 3


def test_search_uses_the_index(store: Store, captured_search: list) -> None:
    """SQLite: the FTS table drives the query and messages is only read by primary key.
    PostgreSQL: the planner can answer the match from the GIN expression index (seq scans
    are disabled for the check: on a table this small a scan would be the cheaper plan)."""
    cid = _conversation(store, [f"{text} {i}" for i in range(50) for text in FILLER])
    captured_search.clear()
    assert store.search_messages(cid, "plants train", before_seq=200)
    # the ranked search (on SQLite, after counting how common each term is)
    statement, parameters = next(
        (sql, params) for sql, params in captured_search if "bm25(" in sql or "ts_rank" in sql
    )
    assert store._engine is not None
    with store._engine.begin() as conn:
        if store.backend == "sqlite":
            rows = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters).all()
            plan = [str(row[-1]) for row in rows]
            assert plan[0].startswith("SCAN messages_fts VIRTUAL TABLE INDEX"), plan
            assert any("SEARCH m USING INTEGER PRIMARY KEY (rowid=?)" in p for p in plan), plan
            assert not any(p.split()[:2] == ["SCAN", "m"] for p in plan), plan
        else:
            conn.exec_driver_sql("ANALYZE messages")
            conn.exec_driver_sql("SET LOCAL enable_seqscan = off")
            plan = "\n".join(
                conn.exec_driver_sql("EXPLAIN " + statement, parameters).scalars().all()
            )
            assert "ix_messages_content_fts_head" in plan, plan


def test_search_stays_fast_with_a_long_history(store: Store) -> None:
    """Finding 3 messages among 20,000 costs a fraction of reading the conversation.

    PostgreSQL picks the GIN index from table statistics, which autovacuum gathers some time
    after a bulk write; the test gathers them at once (ANALYZE). Without them the planner
    takes the just-filled conversation for a small one and filters it row by row.
    """
    cid = store.create_conversation().id
    items = [{"role": "user", "content": f"{FILLER[i % 6]} {'x' * 150} {i}"} for i in range(20_000)]
    for i in (5, 9_000, 19_000):
        items[i] = {"role": "user", "content": f"The quokka number {i} smiled."}
    assert store._bulk_append(cid, items) == 20_000
    if store.backend == "postgresql":
        assert store._engine is not None
        with store._engine.begin() as conn:
            conn.exec_driver_sql("ANALYZE messages")
    started = time.perf_counter()
    everything = store.messages(cid)
    full = time.perf_counter() - started
    started = time.perf_counter()
    hits = store.search_messages(cid, "quokkas")
    search = time.perf_counter() - started
    assert len(everything) == 20_000
    assert sorted(_seqs(hits)) == [6, 9_001, 19_001]
    assert search < full / 5, (search, full)


def test_bulk_writes_are_indexed_across_insert_batches(store: Store) -> None:
    """_bulk_append and import_json insert in batches of _INSERT_CHUNK rows; none is lost."""
    count = 2 * queries._INSERT_CHUNK + 7
    cid = _conversation(store, [f"pebble {i}" for i in range(count)])
    assert [m.seq for m in store.messages(cid)] == list(range(1, count + 1))
    assert len(store.search_messages(cid, "pebble", limit=count + 10)) == count
    copy = store.import_json(store.export_json(cid)).id
    assert store.export_json(copy)["messages"] == store.export_json(cid)["messages"]
    assert len(store.search_messages(copy, "pebbles", limit=count + 10)) == count
    if store.backend == "sqlite":
        assert _fts_rows(store) == 2 * count
        _fts_integrity_check(store)

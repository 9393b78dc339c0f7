"""Long messages on both backends: what SQLite accepts, PostgreSQL stores too.

A tsvector holds at most 1 MB, so PostgreSQL used to refuse a long message of distinct words
("string is too long for tsvector") that SQLite and the importer accept. Since migration 5 its
index covers the first ``PG_INDEXED_CHARS`` characters of a message; the message is stored
and shown whole.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sqlalchemy as sa

from chatmem.store import MAX_CONTENT_CHARS, MIGRATIONS, PG_INDEXED_CHARS, Store
from tests.unit.conftest import reset_postgres


def distinct_words(chars: int, first: str = "zebra", last: str = "quokka") -> str:
    """``chars`` characters of words that are all different, ``first`` first, ``last`` last."""
    words, size, i = [first], len(first), 0
    while size < chars:
        word = f"w{i:x}"
        words.append(word)
        size += len(word) + 1
        i += 1
    return " ".join(words)[: chars - len(last) - 1] + " " + last


def worst_case_words(chars: int) -> str:
    """Text that makes about the biggest tsvector per character (7.75 bytes): hyphenated
    words of 4-byte letters, all different, each indexed whole and as its two parts."""
    words, size, i = [], 0, 0
    while size < chars:
        a, b, c, d, e, f = (
            chr(0x20000 + n % 42_000)
            for n in (i, i // 42_000, 3 * i + 1, i + 7, i // 42_000 + 3, 5 * i + 2)
        )
        word = f"{a}{b}{c}-{d}{e}{f}"
        words.append(word)
        size += len(word) + 1
        i += 1
    return " ".join(words)[:chars]


def test_a_message_of_a_million_distinct_words_is_stored_and_searched(store: Store) -> None:
    text = distinct_words(MAX_CONTENT_CHARS)
    assert len(text) == MAX_CONTENT_CHARS
    cid = store.create_conversation().id
    store.append_message(cid, "user", text)
    store.append_message(cid, "assistant", "A zebra and a quokka, noted.")
    assert store.messages(cid)[0].content == text
    assert sorted(hit.seq for hit in store.search_messages(cid, "zebra")) == [1, 2]
    # PostgreSQL's index covers the head of a message; SQLite's FTS5 all of it.
    tail = [1, 2] if store.backend == "sqlite" else [2]
    assert sorted(hit.seq for hit in store.search_messages(cid, "quokka")) == tail


def test_the_densest_text_fits_the_postgresql_index(store: Store) -> None:
    text = worst_case_words(MAX_CONTENT_CHARS)
    cid = store.create_conversation().id
    message = store.append_message(cid, "user", text)
    store.update_message(message.id, content=text[::-1])
    assert store.messages(cid)[0].content == text[::-1]
    store._bulk_append(cid, [{"role": "user", "content": text}])
    assert store.count_messages(cid) == 2


@pytest.mark.postgres
def test_densest_head_is_within_the_tsvector_limit() -> None:
    """What PostgreSQL computes for the indexed head of the densest text, with room to spare
    (the limit is 1 MB of lexemes, their positions and alignment)."""
    head = worst_case_words(PG_INDEXED_CHARS)
    with Store(reset_postgres()) as store:
        assert store._engine is not None
        with store._engine.connect() as conn:
            size = conn.scalar(
                sa.text(
                    "SELECT sum(((octet_length(lexeme) + 1) / 2) * 2 + 2 "
                    "+ 2 * coalesce(cardinality(positions), 0)) "
                    "FROM unnest(to_tsvector('english', :text))"
                ),
                {"text": head},
            )
    assert 700_000 < size < 1_048_575


@pytest.mark.postgres
def test_a_sqlite_export_of_long_messages_imports_into_postgresql(tmp_path: Path) -> None:
    long_texts = [distinct_words(MAX_CONTENT_CHARS), worst_case_words(MAX_CONTENT_CHARS)]
    with Store(str(tmp_path / "chatmem.db")) as lite:
        cid = lite.create_conversation("Long ones").id
        for text in long_texts:
            lite.append_message(cid, "user", text)
            lite.append_message(cid, "assistant", "Noted.")
        document = json.dumps(lite.export_json(cid))
    with Store(reset_postgres()) as pg:
        copy = pg.import_json(document)
        assert [m.content for m in pg.messages(copy.id)] == [
            long_texts[0],
            "Noted.",
            long_texts[1],
            "Noted.",
        ]
        assert [hit.seq for hit in pg.search_messages(copy.id, "zebra")] == [1]


class _StoreAtVersion4(Store):
    """A Store that migrates only up to schema version 4 (the unbounded PostgreSQL index)."""

    def _migrate(self, target: int = 4) -> None:
        super()._migrate(target)


def _indexes(store: Store) -> set[str]:
    assert store._engine is not None
    return {str(ix["name"]) for ix in sa.inspect(store._engine).get_indexes("messages")}


def test_migration_5_moves_postgresql_to_the_bounded_index(store_url: str) -> None:
    with _StoreAtVersion4(store_url) as old:
        cid = old.create_conversation().id
        old.append_message(cid, "user", "The heron stood in the reeds.")
        if old.backend == "postgresql":
            assert "ix_messages_content_fts" in _indexes(old)
    with Store(store_url) as store:
        assert store.schema_version == MIGRATIONS[-1].version >= 5
        if store.backend == "postgresql":
            names = _indexes(store)
            assert "ix_messages_content_fts_head" in names
            assert "ix_messages_content_fts" not in names
        assert [hit.seq for hit in store.search_messages(cid, "herons")] == [1]
        store.append_message(cid, "user", distinct_words(MAX_CONTENT_CHARS, first="heron"))
        assert sorted(hit.seq for hit in store.search_messages(cid, "heron")) == [1, 2]


class _StoreAtVersion2(Store):
    """A Store that migrates only up to schema version 2 (before any full-text index)."""

    def _migrate(self, target: int = 2) -> None:
        super()._migrate(target)


def test_a_version_2_database_with_a_long_message_upgrades(store_url: str) -> None:
    """Before version 3 nothing indexed messages, so one too long for a whole-text tsvector
    may be there; the upgrade builds the bounded index over it instead of failing."""
    text = distinct_words(MAX_CONTENT_CHARS)
    with _StoreAtVersion2(store_url) as old:
        cid = old.create_conversation().id
        old.append_message(cid, "user", text)
    with Store(store_url) as store:
        assert store.schema_version == MIGRATIONS[-1].version
        assert [hit.seq for hit in store.search_messages(cid, "zebra")] == [1]
        assert store.messages(cid)[0].content == text

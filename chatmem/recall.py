"""Recall: bring back older messages that matter to the current one.

Lexical search (BM25) with SQLite's built-in FTS5: no model, no download. The index holds
every message; the memory policy only uses hits that are not already sent verbatim.
"""

from __future__ import annotations

import re
import sqlite3
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from chatmem.store import Store

from chatmem.memory import Recalled

# Words too common to say anything about relevance.
_STOPWORDS_TEXT = """
a about above after again all am an and any are as at be because been before being below
between both but by can could did do does doing down during each few for from further
had has have having he her here hers herself him himself his how i if in into is it its
itself just me more most my myself no nor not now of off on once only or other our ours
ourselves out over own same she should so some such than that the their theirs them
themselves then there these they this those through to too under until up very was we
were what when where which while who whom why will with would you your yours yourself
yourselves tell know like get got also ok okay yes yeah hi hey hello thanks thank
"""
STOPWORDS = frozenset(_STOPWORDS_TEXT.split())

SNIPPET_CHARS = 1200
MAX_TERMS = 8


def query_terms(text: str, limit: int = MAX_TERMS) -> list[str]:
    """The distinct content words of ``text``, lower-cased, in order of appearance.

    With more than ``limit`` of them, the longest are kept: long words tend to be the
    rare, telling ones, and each extra term makes the search score more messages.
    """
    words: list[str] = []
    for word in re.findall(r"\w+", text.lower()):
        if len(word) >= 2 and word not in STOPWORDS and word not in words:
            words.append(word)
    if len(words) > limit:
        keep = set(sorted(words, key=len, reverse=True)[:limit])
        words = [w for w in words if w in keep][:limit]
    return words


def fts_query(text: str) -> str | None:
    """An FTS5 MATCH expression: any of the content words, each quoted."""
    terms = query_terms(text)
    if not terms:
        return None
    return " OR ".join('"' + t.replace('"', "") + '"' for t in terms)


def snippet(speaker: str, text: str) -> str:
    text = " ".join(text.split())
    if len(text) > SNIPPET_CHARS:
        text = text[:SNIPPET_CHARS].rsplit(" ", 1)[0] + " …"
    return f"{speaker}: {text}"


class RecallIndex(Protocol):
    """Where older messages are searched."""

    def add(self, seq: int, speaker: str, text: str) -> None: ...

    def search(self, query: str, *, before_seq: int, limit: int = 20) -> list[Recalled]: ...


class FtsIndex:
    """An FTS5 index of one conversation's messages, in memory (BM25 ranking)."""

    def __init__(self) -> None:
        self._db = sqlite3.connect(":memory:", check_same_thread=False)
        self._db.execute(
            "CREATE VIRTUAL TABLE messages USING fts5("
            "speaker UNINDEXED, body, tokenize = 'porter unicode61')"
        )
        self._lock = threading.Lock()
        self.size = 0

    def add(self, seq: int, speaker: str, text: str) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO messages(rowid, speaker, body) VALUES (?, ?, ?)", (seq, speaker, text)
            )
            self.size += 1

    def search(self, query: str, *, before_seq: int, limit: int = 20) -> list[Recalled]:
        match = fts_query(query)
        if match is None:
            return []
        with self._lock:
            rows = self._db.execute(
                "SELECT rowid, speaker, body, bm25(messages) AS rank FROM messages "
                "WHERE messages MATCH ? AND rowid < ? ORDER BY rank LIMIT ?",
                (match, before_seq, limit),
            ).fetchall()
        return [Recalled(snippet(speaker, body), seq, -rank) for seq, speaker, body, rank in rows]

    def close(self) -> None:
        self._db.close()


class StoreRecall:
    """Search the store's full-text index (FTS5 on SQLite, tsvector on PostgreSQL).

    The store already holds every message, so ``add`` has nothing to do, and a resumed
    conversation can recall messages folded away long before this process started.
    """

    def __init__(self, store: Store, conversation_id: Callable[[], str | None]) -> None:
        self.store = store
        self._cid = conversation_id

    def add(self, seq: int, speaker: str, text: str) -> None:
        return None

    def search(self, query: str, *, before_seq: int, limit: int = 20) -> list[Recalled]:
        cid = self._cid()
        if cid is None:
            return []
        hits = self.store.search_messages(cid, query, before_seq=before_seq, limit=limit)
        return [Recalled(snippet(h.name or h.role, h.content), h.seq, h.score) for h in hits]

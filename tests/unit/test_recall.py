"""Recall: older messages relevant to the current one come back into the request."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from chatmem import ChatMemory, OpenAIChat, Settings, recall
from chatmem.memory import RECALL_LABEL, Memory, Recalled
from chatmem.recall import FtsIndex, fts_query, query_terms
from chatmem.tokens import TokenCounter

FILLER = [
    "Let us plan the garden: tomatoes, basil and a row of sunflowers by the fence.",
    "The train to the coast leaves at nine, and the museum opens after lunch.",
    "I am reading a novel about a lighthouse keeper and her stubborn cat.",
    "Could you suggest a quick pasta recipe with spinach and lemon?",
]


def test_query_terms_drop_stopwords_and_repeats() -> None:
    assert query_terms("What is the name of my boat, the boat I bought?") == [
        "name",
        "boat",
        "bought",
    ]
    assert fts_query("what is it?") is None
    assert fts_query('say "hi" to boat') == '"say" OR "boat"'


def test_fts_index_ranks_relevant_first_and_respects_before_seq() -> None:
    index = FtsIndex()
    index.add(1, "user", "My sailing boat is called Saltwater Gypsy.")
    index.add(2, "assistant", "What a lovely name for a boat!")
    index.add(3, "user", "I also grow tomatoes.")
    index.add(9, "user", "Where is my boat moored?")
    hits = index.search("Tell me about my boat called Gypsy", before_seq=9)
    assert [h.seq for h in hits][:2] == [1, 2]
    assert hits[0].score >= hits[1].score > 0
    assert hits[0].text == "user: My sailing boat is called Saltwater Gypsy."
    assert all(h.seq < 9 for h in hits)


def test_fts_index_bounds_its_work_by_leaving_common_terms_out(monkeypatch) -> None:
    """A term in more than COMMON_TERM messages is left out when the query has a rarer one;
    a query of common terms alone searches only the newest RECENT_WINDOW messages."""
    monkeypatch.setattr(recall, "COMMON_TERM", 5)
    monkeypatch.setattr(recall, "RECENT_WINDOW", 4)
    index = FtsIndex()
    index.add(1, "user", "My boat Gypsy is moored at Pier 39.")
    for seq in range(2, 21):
        index.add(seq, "user", f"Another sunny day on the water, note {seq}.")
    hits = index.search("Another sunny day: where is Gypsy?", before_seq=21)
    assert [h.seq for h in hits] == [1]  # the common words would have matched 19 more
    hits = index.search("Another sunny day", before_seq=21)
    assert sorted(h.seq for h in hits) == [17, 18, 19, 20]
    monkeypatch.setattr(recall, "COMMON_TERM", 100)  # nothing common: every match counts
    assert len(index.search("Another sunny day: where is Gypsy?", before_seq=21, limit=50)) == 20


def test_early_fact_recalled_200_turns_later(fake) -> None:
    model = OpenAIChat("gpt-4o-mini", api_key="k", base_url=fake.url, max_retries=0)
    bot = ChatMemory(
        system="You are a friendly assistant.",
        model=model,
        settings=Settings(embedding_model="off"),  # keyword search (BM25) alone
        max_tokens=800,
        keep_recent=4,
        background=False,
    )
    fact = "My sailing boat Saltwater Gypsy is moored at Pier 39 in Wellington."
    bot.ask(fact)
    for i in range(200):
        bot.ask(f"{FILLER[i % len(FILLER)]} (note {i})")
    assert bot.memory.summary is not None and bot.memory.summary.covers_seq > 2
    assert all(fact != m["content"] for m in bot.recent), "the fact was never folded away"
    bot.ask("Where is Saltwater Gypsy moored?")
    sent = fake.control.requests("chat")[-1]["body"]["messages"]
    recalled = [m["content"] for m in sent if m["content"].startswith(RECALL_LABEL)]
    assert recalled, "no recall block in the request"
    assert fact in recalled[0]
    event = [e for e in bot.events if e.kind == "recall"][-1]
    assert 1 in event.data["seqs"]
    assert bot.last_context.budget.total <= 800


def test_recall_toggle_off_sends_no_recall(fake) -> None:
    model = OpenAIChat("gpt-4o-mini", api_key="k", base_url=fake.url, max_retries=0)
    bot = ChatMemory(
        model=model, settings=Settings(), max_tokens=400, keep_recent=2, background=False
    )
    bot.recall = False
    bot.ask("My sailing boat Saltwater Gypsy is moored at Pier 39.")
    for i in range(30):
        bot.ask(FILLER[i % len(FILLER)])
    bot.ask("Where is Saltwater Gypsy moored?")
    assert bot.last_context.recalled == ()
    assert bot.budget().recalled == 0


words = st.sampled_from(["boat", "pier", "garden", "train", "cat", "lemon", "sam", "39"])


@settings(max_examples=150, deadline=None)
@given(
    texts=st.lists(st.lists(words, min_size=1, max_size=30).map(" ".join), min_size=2, max_size=60),
    max_tokens=st.integers(min_value=60, max_value=400),
    share=st.floats(min_value=0.0, max_value=0.5),
)
def test_recall_never_breaks_the_budget_or_duplicates(texts, max_tokens, share) -> None:
    mem = Memory(
        system="sys", counter=TokenCounter(lambda t: len(t.split())), max_tokens=max_tokens
    )
    mem.recall_share = share
    index = FtsIndex()
    for i, text in enumerate(texts[:-1]):
        msg = mem.add("user" if i % 2 == 0 else "assistant", text)
        index.add(msg.seq, msg.role, text)
    newest = mem.add("user", texts[-1])
    hits = index.search(newest.content, before_seq=newest.seq)
    try:
        ctx = mem.context(hits)
    except ValueError:
        return
    assert ctx.budget.total <= max_tokens
    assert mem.counter.messages(ctx.messages) == ctx.budget.total
    verbatim = {p.seq for p in ctx.parts if p.kind == "verbatim"}
    assert not verbatim & {r.seq for r in ctx.recalled}
    assert all(isinstance(r, Recalled) for r in ctx.recalled)
    assert ctx.messages[-1]["content"] == newest.content


def test_query_terms_read_a_bounded_prefix_and_keep_first_seen_order() -> None:
    from chatmem.text import MAX_QUERY_CHARS

    filler = "ab " * (MAX_QUERY_CHARS // 3)
    assert query_terms(filler + " extraordinarily") == ["ab"]  # past the bound: not read
    # many distinct words, each repeated: the same terms as a plain reference computation
    words = [f"w{i:05d}" for i in range(3000)]
    text = " ".join(words + words[::-1]) + " zzzzzzzzzzzz"
    reference: list[str] = []
    for w in text.lower().split():
        if w not in reference:
            reference.append(w)
    keep = set(sorted(reference, key=len, reverse=True)[:8])
    assert query_terms(text) == [w for w in reference if w in keep][:8]


def test_the_store_index_recalls_a_hits_reply_by_seq() -> None:
    from chatmem.store import Store

    with Store("sqlite://") as store:
        cid = store.create_conversation().id
        store.append_message(cid, "user", "What is the code for the garage door?", name="sam")
        store.append_message(cid, "assistant", "It is 4817.")
        store.append_message(cid, "user", "Thanks.", status="failed")
        for i in range(10):
            store.append_message(cid, "user", f"Chat {i} about the bus.")
        index = recall.StoreRecall(store, lambda: cid)
        assert index.snippets([2, 3, 99]) == {2: "assistant: It is 4817."}
        hits = recall.candidates(index, "garage door code?", before_seq=14)
        assert [h.seq for h in hits] == [1, 2] and hits[1].score == hits[0].score / 2
        assert recall.StoreRecall(store, lambda: None).snippets([2]) == {}

"""Many sessions, one conversation: the store is the truth and each session's memory a cache.

Catch-up before each request, folds by compare-and-set (the coverage invariant), replies
linked to their question, transient waits retried, a failed summary save a failed fold.
"""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from chatmem import ChatMemory, OpenAIChat, Settings
from chatmem.errors import StoreError, SummaryConflict
from chatmem.memory import Memory, Message, exchanges
from chatmem.store import Store
from chatmem.store.engine import TransientError, is_transient, retrying
from chatmem.tokens import TokenCounter
from tests.unit.shared_checks import invariant_violations, lineage_is_linear


def bot_on(fake, store: Store, cid: str | None = None, **kw) -> ChatMemory:
    model = OpenAIChat("gpt-4o-mini", api_key="k", base_url=fake.url, max_retries=0)
    kw.setdefault("max_tokens", 400)
    kw.setdefault("keep_recent", 2)
    kw.setdefault("background", False)
    kw.setdefault("recall", False)
    return ChatMemory(model=model, settings=Settings(), store=store, conversation_id=cid, **kw)


def sent_texts(fake) -> str:
    return "\n".join(m["content"] for m in fake.control.requests("chat")[-1]["body"]["messages"])


# -- the store ----------------------------------------------------------------------------


def test_changes_reads_only_what_is_new(store: Store) -> None:
    cid = store.create_conversation().id
    for i in range(5):
        store.append_message(cid, "user", f"m{i}")
    first = store.add_summary(cid, "s1", 3, 2, extends=None, input_seqs=[1, 2])
    seen = store.changes(cid, 3, first.id)
    assert [m.content for m in seen.messages] == ["m3", "m4"] and seen.summary is None
    second = store.add_summary(cid, "s2", 3, 4, extends=first.id, input_seqs=[3, 4])
    later = store.changes(cid, 5, first.id)
    assert later.messages == () and later.summary is not None and later.summary.id == second.id
    paged = store.changes(cid, 0, None, limit=2)
    assert [m.seq for m in paged.messages] == [1, 2] and paged.more
    assert second.extends_id == first.id and second.input_seqs == frozenset({3, 4})
    assert store.list_summaries(cid)[-1].input_runs == ((3, 4),)


def test_summary_lands_only_on_the_newest_version(store: Store, db_counts) -> None:
    cid = store.create_conversation().id
    for i in range(4):
        store.append_message(cid, "user", f"m{i}")
    base = store.add_summary(cid, "base", 1, 2, extends=None, input_seqs=[1, 2])
    winner = store.add_summary(cid, "winner", 1, 3, extends=base.id, input_seqs=[3])
    with pytest.raises(SummaryConflict) as caught:
        store.add_summary(cid, "loser", 1, 4, extends=base.id, input_seqs=[3, 4])
    assert caught.value.newest_id == winner.id
    with pytest.raises(SummaryConflict):
        store.add_summary(cid, "second first", 1, 4, extends=None, input_seqs=[1, 2, 3, 4])
    assert [s.text for s in store.list_summaries(cid)] == ["base", "winner"]
    assert db_counts(store)["summaries"] == 2
    with pytest.raises(StoreError, match="beyond covers_seq"):
        store.add_summary(cid, "x", 1, 2, extends=winner.id, input_seqs=[3])


def test_reply_link_is_stored_exported_and_imported(store: Store) -> None:
    cid = store.create_conversation().id
    store.append_message(cid, "user", "Question A")
    store.append_message(cid, "user", "Question B")
    store.append_message(cid, "assistant", "Answer B", reply_to=2)
    store.append_message(cid, "assistant", "Answer A", reply_to=1)
    assert [m.reply_to for m in store.messages(cid)] == [None, None, 2, 1]
    doc = store.export_json(cid)
    assert [m["reply_to"] for m in doc["messages"]] == [None, None, 2, 1]
    md = store.export_markdown(cid)
    order = [md.index(text) for text in ("Question A", "Answer A", "Question B", "Answer B")]
    assert order == sorted(order), "the transcript pairs replies with their questions"
    again = store.import_json(doc)
    assert [m.reply_to for m in store.messages(again.id)] == [None, None, 2, 1]
    with pytest.raises(StoreError, match="reply_to"):
        store.append_message(cid, "assistant", "x", reply_to=0)


def test_transient_waits_are_retried_and_real_failures_are_not() -> None:
    calls = {"n": 0}

    def flaky() -> str:
        calls["n"] += 1
        if calls["n"] < 3:
            raise TransientError("postgresql error: QueuePool limit reached")
        return "ok"

    assert retrying(flaky, "test") == "ok" and calls["n"] == 3

    def broken() -> str:
        raise StoreError("the database rejected the write")

    with pytest.raises(StoreError, match="rejected"):
        retrying(broken, "test")
    assert is_transient(sa.exc.TimeoutError("QueuePool limit of size 5 overflow 10 reached"))
    assert not is_transient(ValueError("x"))


def test_a_pool_timeout_on_append_is_retried(tmp_path, monkeypatch) -> None:
    with Store(f"sqlite:///{tmp_path / 'db.sqlite'}") as store:
        cid = store.create_conversation().id
        real = store._tx
        failures = iter([True, True])

        def tx(*, write: bool, snapshot: bool = False):
            if write and next(failures, False):
                raise TransientError("sqlite error: database is locked")
            return real(write=write, snapshot=snapshot)

        monkeypatch.setattr(store, "_tx", tx)
        stored = store.append_message(cid, "user", "kept")
        assert stored.seq == 1 and [m.content for m in store.messages(cid)] == ["kept"]


# -- the memory ---------------------------------------------------------------------------


def _msg(seq: int, role: str, text: str, reply_to: int | None = None) -> Message:
    return Message(role, text, seq, 10, reply_to=reply_to)


def test_exchanges_pair_by_link_and_end_with_the_question_answered() -> None:
    interleaved = [
        _msg(11, "user", "S0 question"),
        _msg(12, "user", "S4 question"),
        _msg(13, "assistant", "S4 answer", reply_to=12),
        _msg(15, "assistant", "S0 answer", reply_to=11),
        _msg(16, "user", "S0 next"),
        _msg(17, "user", "S4 next"),
    ]
    texts = [m.content for m in exchanges(interleaved, answering=16)]
    assert texts == ["S0 question", "S0 answer", "S4 question", "S4 answer", "S4 next", "S0 next"]
    assert [m.seq for m in exchanges(interleaved[:4])] == [11, 15, 12, 13]


def test_request_pairs_replies_with_their_questions() -> None:
    counter = TokenCounter(lambda text: len(text.split()))
    mem = Memory(system="sys", counter=counter, max_tokens=2000)
    mem.add("user", "What is two plus two?", seq=1)
    mem.add("user", "Name a colour.", seq=2)
    mem.add("assistant", "Blue.", seq=3, reply_to=2)
    mem.add("assistant", "Four.", seq=4, reply_to=1)
    mem.add("user", "And three plus three?", seq=5)
    mem.add("user", "Another colour?", seq=6)
    sent = [m["content"] for m in mem.context(answering=5).messages[1:]]
    assert sent == [
        "What is two plus two?",
        "Four.",
        "Name a colour.",
        "Blue.",
        "Another colour?",
        "And three plus three?",
    ]


# -- sessions -----------------------------------------------------------------------------


def test_a_session_catches_up_with_another_before_each_request(fake, store: Store) -> None:
    a = bot_on(fake, store, max_tokens=2000)
    b = bot_on(fake, store, a.conversation_id, max_tokens=2000)
    a.ask("Hello, my colour is teal.")
    b.ask("Hi, my city is Oslo.")
    assert a.ask("What is my city?") == "Your city is Oslo."
    assert b.ask("What is my colour?") == "Your colour is teal."
    assert [m.seq for m in b.memory.messages] == list(range(1, 9))
    assert [m.seq for m in a.memory.messages] == list(range(1, 7))  # B's last turn: not yet
    assert a.catch_up() == 2
    assert [m.seq for m in a.memory.messages] == list(range(1, 9))
    assert [m.reply_to for m in store.messages(a.conversation_id)] == [
        None,
        1,
        None,
        3,
        None,
        5,
        None,
        7,
    ]


def test_interleaved_tabs_do_not_cross_wire(fake, store: Store) -> None:
    a = bot_on(fake, store, max_tokens=2000)
    b = bot_on(fake, store, a.conversation_id, max_tokens=2000)
    a.add_user_message("Alpha asks about apples.")
    b.add_user_message("Bravo asks about boats.")
    assert "".join(b.reply_stream()) == "You said: Bravo asks about boats."
    assert "".join(a.reply_stream()) == "You said: Alpha asks about apples."
    body = fake.control.requests("chat")[-1]["body"]["messages"]
    assert body[-1]["content"] == "Alpha asks about apples."  # A's request ends with A's question
    rows = store.messages(a.conversation_id)
    assert [(m.seq, m.reply_to) for m in rows] == [(1, None), (2, None), (3, 2), (4, 1)]
    resumed = ChatMemory.resume(
        store,
        a.conversation_id,
        model=OpenAIChat("gpt-4o-mini", api_key="k", base_url=fake.url),
        settings=Settings(),
        background=False,
        recall=False,
    )
    resumed.ask("Charlie asks about cars.")
    sent = [m["content"] for m in fake.control.requests("chat")[-1]["body"]["messages"][1:]]
    assert sent == [
        "Alpha asks about apples.",
        "You said: Alpha asks about apples.",
        "Bravo asks about boats.",
        "You said: Bravo asks about boats.",
        "Charlie asks about cars.",
    ]


def test_folds_of_two_sessions_commit_by_compare_and_set(fake, store: Store) -> None:
    a = bot_on(fake, store, max_tokens=600, summary_max_tokens=200)
    b = bot_on(fake, store, a.conversation_id, max_tokens=600, summary_max_tokens=200)
    cid = a.conversation_id
    filler = "gardens rivers trains old maps towers tall ships " * 3
    for i in range(12):
        a.ask(f"Turn {i} of A: my a{'x' * (i + 1)} is apple{i}. {filler}")
        b.ask(f"Turn {i} of B: my b{'x' * (i + 1)} is boat{i}. {filler}")
    summaries = store.list_summaries(cid)
    assert len(summaries) >= 3
    assert invariant_violations(store, cid) == []
    assert lineage_is_linear(store, cid)
    b.catch_up()  # the other session's versions become this one's
    assert a.memory.summary.id == b.memory.summary.id == summaries[-1].id
    newest = summaries[-1]
    for i in range(12):
        for side, word in (("a", "apple"), ("b", "boat")):
            fact_seq = next(m.seq for m in store.messages(cid) if f"{word}{i}." in m.content)
            if fact_seq <= newest.covers_seq:
                assert f"{side}{'x' * (i + 1)} is {word}{i}" in newest.text


def test_a_fold_that_lost_the_race_is_rebuilt_on_the_newer_version(fake, store: Store) -> None:
    a = bot_on(fake, store, max_tokens=300)
    cid = a.conversation_id
    for i in range(4):
        a.ask(f"Question {i}: my k{'q' * (i + 1)} is v{i}. Gardens, rivers and old maps again.")
    b = bot_on(fake, store, cid, max_tokens=300)
    plan_b = b.memory.plan_fold()
    assert plan_b is not None
    for i in range(4):  # A folds first, on top of what B's plan extends
        a.ask(f"More {i}: my m{'q' * (i + 1)} is w{i}. Trains, towers and tall ships again.")
    assert store.list_summaries(cid), "A folded"
    b._run_fold(plan_b)  # built on a version that is no longer the newest
    landed = [e for e in b.events if e.kind == "fold"][-1]
    assert landed.data.get("rebuilt", 0) >= 1 or landed.data.get("superseded"), landed
    assert invariant_violations(store, cid) == []
    assert lineage_is_linear(store, cid)
    assert b.memory.summary is not None
    assert b.memory.summary.id == store.list_summaries(cid)[-1].id
    assert b.fold_failures == 0


def test_a_failed_summary_save_is_a_failed_fold(fake, store: Store, monkeypatch) -> None:
    bot = bot_on(fake, store, max_tokens=300)
    cid = bot.conversation_id
    seen: list[str] = []
    bot.on_fold(lambda event: seen.append(event.kind))
    real = store.add_summary
    broken = {"on": True}

    def add_summary(*args, **kw):
        if broken["on"]:
            raise StoreError("postgresql error: the server closed the connection")
        return real(*args, **kw)

    monkeypatch.setattr(store, "add_summary", add_summary)
    for i in range(8):
        bot.ask(f"Turn {i}: my t{'z' * (i + 1)} is x{i}. Gardens, rivers, trains and old maps.")
        if "fold_failed" in seen:
            break
    assert "fold_failed" in seen
    assert bot.memory.summary is None and store.list_summaries(cid) == []  # they agree
    failed = [e for e in bot.events if e.kind == "fold_failed"]
    assert "could not be saved" in failed[-1].message
    assert any(e.kind == "fold_failed" for e in store.list_events(cid))
    broken["on"] = False
    bot.ask("One more turn: gardens, rivers, trains and old maps.")  # the fold is retried
    assert seen[-1] == "fold"
    stored = store.list_summaries(cid)
    assert len(stored) == 1 and bot.memory.summary is not None
    assert (bot.memory.summary.covers_seq, bot.memory.summary.id) == (
        stored[0].covers_seq,
        stored[0].id,
    )
    assert invariant_violations(store, cid) == []


def test_a_catch_up_that_fails_keeps_the_stored_message(fake, store: Store, monkeypatch) -> None:
    a = bot_on(fake, store, max_tokens=2000)
    b = bot_on(fake, store, a.conversation_id, max_tokens=2000)
    a.ask("First from A.")
    b.ask("Then B.")

    def unreachable(*args, **kw):
        raise StoreError("postgresql error: the server closed the connection unexpectedly")

    monkeypatch.setattr(store, "changes", unreachable)
    msg = a.add_user_message("A again, while the store cannot be read.")
    assert msg.seq == 5 and a.memory.messages[-1] is msg
    assert "".join(a.reply_stream()) == "You said: A again, while the store cannot be read."
    monkeypatch.undo()
    assert [m.content for m in store.messages(a.conversation_id)][-2:] == [
        "A again, while the store cannot be read.",
        "You said: A again, while the store cannot be read.",
    ]

"""People correct memory: summary edits and restores, pinned and excluded messages.

The memory policy with pins and exclusions is checked on plain data (a property test); the
session's corrections against the fake server and a real store (SQLite, and PostgreSQL for
what other sessions must see).
"""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chatmem import ChatMemory, OpenAIChat, Settings
from chatmem.corrections import pin_limit, pin_problem
from chatmem.errors import CorrectionRefused, ImportValidationError
from chatmem.marks import Mark
from chatmem.memory import Memory, Recalled, Summary
from chatmem.store import Store, marks_in_force
from chatmem.tokens import TokenCounter

SYSTEM = "You are a friendly assistant. Be concise."


def word_memory(**kw) -> Memory:
    return Memory(system=SYSTEM, counter=TokenCounter(lambda text: len(text.split())), **kw)


def sent_texts(ctx) -> list[str]:
    return [m["content"] for m in ctx.messages]


def fill(mem: Memory, turns: int) -> None:
    for i in range(turns):
        mem.add("user", f"question {i} " + "word " * 8)
        mem.add("assistant", f"answer {i} " + "word " * 8)


# -- the memory policy -----------------------------------------------------------------------
def test_pinned_message_survives_a_fold_and_a_budget_cut() -> None:
    mem = word_memory(max_tokens=400, keep_recent=4)
    fill(mem, 12)
    first = mem.message(1)
    assert first is not None
    mem.pins[1] = first
    mem.set_summary(Summary("older talk", covers_seq=16, tokens=mem.summary_tokens("older talk")))
    for limit in (400, 120):  # after the fold, then a budget cut that trims verbatim turns
        ctx = mem.context(limit=limit)
        assert first.content in sent_texts(ctx)
        assert [p.seq for p in ctx.parts if p.kind == "pinned"] == [1]
        assert ctx.budget.pinned == first.tokens
        assert mem.counter.messages(ctx.messages) == ctx.budget.total <= limit
        assert ctx.messages[-1]["content"] == mem.messages[-1].content
    assert ctx.trimmed > 0  # the cut really trimmed other messages
    # without the pin the cut leaves it out: the pin is what keeps it
    del mem.pins[1]
    assert first.content not in sent_texts(mem.context(limit=120))


def test_excluded_message_is_never_sent_nor_recalled() -> None:
    mem = word_memory(max_tokens=400, keep_recent=4, recall_share=0.5)
    fill(mem, 6)
    mem.add("user", "the last question")
    candidates = [Recalled(mem.message(s).content, seq=s, score=1.0) for s in (3, 1)]
    ctx = mem.context(candidates, limit=150)  # old turns are out of the window: recalled
    assert sorted(r.seq for r in ctx.recalled) == [1, 3]
    mem.excluded.add(3)
    ctx = mem.context(candidates, limit=150)
    assert [r.seq for r in ctx.recalled] == [1]
    assert all("question 1 " not in t for t in sent_texts(ctx))
    ctx = mem.context(candidates)  # everything fits: still not sent
    assert all("question 1 " not in t for t in sent_texts(ctx))
    assert any("question 2 " in t for t in sent_texts(ctx))
    assert ctx.trimmed == 0  # left out on purpose, not trimmed


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    turns=st.integers(2, 14),
    pins=st.sets(st.integers(1, 28), max_size=4),
    excluded=st.sets(st.integers(1, 28), max_size=4),
    covers=st.integers(0, 20),
    limit=st.integers(60, 400),
)
def test_every_request_keeps_pins_and_leaves_out_exclusions(
    turns: int, pins: set[int], excluded: set[int], covers: int, limit: int
) -> None:
    mem = word_memory(max_tokens=400, keep_recent=4)
    fill(mem, turns)
    mem.add("user", "the newest question")
    newest = mem.messages[-1].seq
    for seq in sorted(pins - excluded):
        msg = mem.message(seq)
        if msg is not None and pin_problem(mem, msg) is None:
            mem.pins[seq] = msg
    mem.excluded.update(s for s in excluded if s < newest)
    if 0 < covers < newest:
        mem.set_summary(Summary("recap", covers_seq=covers, tokens=mem.summary_tokens("recap")))
    assert sum(p.tokens for p in mem.sent_pins()) <= pin_limit(mem)
    ctx = mem.context(limit=limit)
    sent = {p.seq for p in ctx.parts if p.seq is not None}
    assert mem.counter.messages(ctx.messages) == ctx.budget.total <= limit
    assert ctx.messages[-1]["content"] == "the newest question"
    assert not sent & mem.excluded
    assert {p.seq for p in mem.sent_pins()} - set(ctx.dropped_pins) <= sent
    folded_or_trimmed = {p.seq for p in ctx.parts if p.kind == "pinned"}
    assert folded_or_trimmed == set(mem.pins) - set(ctx.dropped_pins)
    if limit >= 200:  # room for every pin (at most half of 400) and the newest message
        assert ctx.dropped_pins == ()


def test_pins_past_half_the_budget_are_refused() -> None:
    mem = word_memory(max_tokens=100)
    mem.add("user", "long " * 40)
    mem.add("assistant", "long " * 15)
    assert pin_problem(mem, mem.message(1)) is None
    mem.pins[1] = mem.message(1)
    problem = pin_problem(mem, mem.message(2))
    assert problem and "over the 50" in problem and "Unpin" in problem


# -- the session -----------------------------------------------------------------------------
def bot_for(fake, store: Store | None, **kw) -> ChatMemory:
    kw.setdefault("max_tokens", 300)
    kw.setdefault("keep_recent", 4)
    kw.setdefault("background", False)
    model = OpenAIChat("gpt-4o-mini", api_key="k", base_url=fake.url, max_retries=0)
    return ChatMemory(model=model, settings=Settings(), store=store, **kw)


def chat_texts(fake) -> str:
    return json.dumps(fake.control.requests("chat")[-1]["body"]["messages"])


def talk_until_folded(bot: ChatMemory, turns: int = 12) -> None:
    for i in range(turns):
        bot.ask(f"Topic {i}: gardens, rivers, trains and old maps.")
    assert bot.current_summary is not None


@pytest.fixture
def sqlite_store(tmp_path):
    with Store(f"sqlite:///{tmp_path / 'c.db'}") as opened:
        yield opened


def test_edited_summary_is_stored_marked_and_sent_next(fake, sqlite_store: Store) -> None:
    bot = bot_for(fake, sqlite_store)
    bot.ask("Hi, my name is Sam.")
    talk_until_folded(bot)
    start = bot.current_summary
    with pytest.raises(CorrectionRefused, match="over its cap"):
        bot.edit_summary("word " * 400, based_on=start)
    bot.edit_summary("The user is Sam, who likes herons.", based_on=start)
    with pytest.raises(CorrectionRefused, match="changed while you were editing"):
        bot.edit_summary("stale editor text", based_on=start)
    bot.ask("What do I like?")
    assert "who likes herons" in chat_texts(fake)
    versions = sqlite_store.list_summaries(bot.conversation_id)
    assert versions[-1].edited_by == "person" and versions[-1].text.endswith("herons.")
    assert versions[-1].covers_seq == start.covers_seq
    shown = bot.summary_versions()
    assert shown[-1].edited_by == "person" and shown[-1].messages is None
    assert [e.kind for e in bot.history_events() if e.kind == "summary_edited"] == [
        "summary_edited"
    ]
    # restore the fold's version: a new version that copies it, marked restored from N
    number = len(shown) - 1
    bot.restore_summary(number)
    assert bot.summary == shown[number - 1].text
    last = sqlite_store.list_summaries(bot.conversation_id)[-1]
    assert last.restored_from == number and last.edited_by is None
    with pytest.raises(CorrectionRefused, match="already the current"):
        bot.restore_summary(len(bot.summary_versions()))
    with pytest.raises(CorrectionRefused, match="no summary version 99"):
        bot.restore_summary(99)


def test_pinned_survives_folds_and_excluded_is_never_sent_nor_summarised(
    fake, sqlite_store: Store
) -> None:
    bot = bot_for(fake, sqlite_store, max_tokens=400)
    bot.ask("Remember the code word: heliotrope.")
    bot.ask("A secret I regret: my favourite colour is zebrapink.")
    assert bot.pin(1) and not bot.pin(1)
    assert bot.exclude(3) and bot.exclude(4)  # the question, and the reply that echoes it
    before = len(fake.control.requests())  # the one that answered it was sent before
    with pytest.raises(CorrectionRefused, match="pinned; unpin"):
        bot.exclude(1)
    talk_until_folded(bot, 18)
    assert bot.memory.covers_seq > 4  # both were folded over
    assert "heliotrope" in chat_texts(fake)
    later = fake.control.requests()[before:]
    assert any(r["kind"] == "summary" for r in later)
    for request in later:  # chat and summary requests alike
        assert "zebrapink" not in json.dumps(request["body"]["messages"])
    assert "zebrapink" not in bot.summary
    # the next request still carries the pin after a budget cut
    bot.max_tokens = 256
    bot.ask("And now?")
    assert "heliotrope" in chat_texts(fake)
    kinds = [(e.kind, e.data.get("seq")) for e in bot.history_events()]
    assert ("pin", 1) in kinds and ("exclude", 3) in kinds
    marks = bot.memory_marks()  # the chat's marks show the corrections
    assert marks.of(1).mark == Mark.PINNED and marks.of(3).mark == Mark.EXCLUDED
    assert marks.of(2).mark != Mark.PINNED
    assert bot.exclude(3, False) and 3 not in bot.excluded_seqs()


def test_corrections_reach_other_sessions_and_survive_resume(fake, store: Store) -> None:
    a = bot_for(fake, store)
    a.ask("My name is Ada.")
    a.ask("Something to forget.")
    b = ChatMemory.resume(
        store, a.conversation_id, model=bot_for(fake, None).model, settings=Settings()
    )
    a.pin(1)
    a.exclude(3)
    b.catch_up()  # another tab or replica: the marks arrive with its catch-up
    assert b.pinned_seqs() == [1] and b.excluded_seqs() == [3]
    b.pin(1, False)
    a.catch_up()
    assert a.pinned_seqs() == []
    assert marks_in_force(store.marks(a.conversation_id)) == {"pin": set(), "exclude": {3}}
    c = ChatMemory.resume(
        store, a.conversation_id, model=bot_for(fake, None).model, settings=Settings()
    )
    assert c.excluded_seqs() == [3] and c.pinned_seqs() == []


def test_corrections_are_exported_and_imported(fake, sqlite_store: Store) -> None:
    bot = bot_for(fake, sqlite_store)
    bot.ask("Hi, my name is Sam.")
    talk_until_folded(bot)
    bot.edit_summary("Sam, edited by hand.")
    bot.restore_summary(1)
    bot.pin(1)
    bot.exclude(3)
    doc = sqlite_store.export_json(bot.conversation_id)
    by_seq = {m["seq"]: m for m in doc["messages"]}
    assert by_seq[1].get("pinned") is True and by_seq[3].get("excluded") is True
    assert "pinned" not in by_seq[2] and "excluded" not in by_seq[2]
    assert doc["summaries"][-2]["edited_by"] == "person"
    assert doc["summaries"][-1]["restored_from"] == 1
    kinds = {e["kind"] for e in doc["events"]}
    assert {"summary_edited", "summary_restored", "pin", "exclude"} <= kinds
    markdown = sqlite_store.export_markdown(bot.conversation_id)
    assert "pinned: always sent" in markdown and "left out of requests" in markdown
    assert "edited by a person" in markdown and "restored from version 1" in markdown
    for data in (doc, json.dumps(doc).encode()):  # a parsed document, and a streamed file
        copy = sqlite_store.import_json(data)
        assert marks_in_force(sqlite_store.marks(copy.id)) == {"pin": {1}, "exclude": {3}}
        summaries = sqlite_store.list_summaries(copy.id)
        assert summaries[-1].restored_from == 1 and summaries[-2].edited_by == "person"
        again = ChatMemory.resume(
            sqlite_store, copy.id, model=bot_for(fake, None).model, settings=Settings()
        )
        assert again.pinned_seqs() == [1] and again.excluded_seqs() == [3]
    doc["messages"][0]["pinned"] = "yes"
    with pytest.raises(ImportValidationError, match=r"messages\[0\]\.pinned"):
        sqlite_store.import_json(doc)

"""The adaptive budget: the newest messages first, then older ones compete by one score
(recency prior, BM25 and embedding evidence), recall_share a ceiling, no hit cap."""

from __future__ import annotations

from chatmem.adaptive import with_neighbours
from chatmem.memory import Memory, Recalled
from chatmem.recall import FtsIndex, candidates
from chatmem.tokens import counter_for_model
from tests.unit.test_memory import check_request

SYSTEM = "You are a friendly assistant."


def conversation(turns: list[tuple[str, str]], **kw) -> tuple[Memory, FtsIndex]:
    mem = Memory(system=SYSTEM, counter=counter_for_model("gpt-4o-mini"), **kw)
    index = FtsIndex()
    for role, text in turns:
        msg = mem.add(role, text)
        index.add(msg.seq, role, text)
    return mem, index


def ask(mem: Memory, index: FtsIndex, text: str):
    question = mem.add("user", text)
    hits = candidates(index, text, before_seq=question.seq)
    ctx = mem.context(hits)
    check_request(mem, ctx)
    verbatim = {p.seq for p in ctx.parts if p.kind == "verbatim"}
    return ctx, verbatim, {r.seq for r in ctx.recalled}


OLD_OVEN = [
    ("user", f"Old note {i}: the oven temperature for the {dish} was {t} degrees, I think.")
    for i, (dish, t) in enumerate(
        [("bread", 220), ("pizza", 250), ("cake", 180), ("lasagne", 190), ("pie", 200)] * 6
    )
]


def test_a_follow_up_about_the_last_few_turns_keeps_them() -> None:
    """Old messages match the follow-up's words better than the recent turns do, yet the
    recent exchange it asks about stays in the request, past keep_recent: recency is a prior,
    and the recent turns' own (weaker) match adds to it."""
    turns: list[tuple[str, str]] = []
    for role, text in OLD_OVEN:
        turns += [(role, text), ("assistant", "Noted, thanks for telling me about that oven.")]
    turns += [
        ("user" if i % 2 == 0 else "assistant", f"Small talk {i} about the football results.")
        for i in range(20)
    ]
    recent = [
        ("user", "Let's plan the roast chicken for Sunday."),
        ("assistant", "Roast it at 200 degrees for about 90 minutes, basting halfway."),
        ("user", "And the potatoes?"),
        ("assistant", "Put them in with the bird for the last 50 minutes."),
        ("user", "Great, and gravy from the pan juices."),
        ("assistant", "Yes: deglaze the tray and thicken with a little flour."),
    ]
    follow_up = "Which oven temperature did you say for the roast?"
    mem, index = conversation(turns + recent, max_tokens=700, keep_recent=2, recall_share=0.9)
    first_recent = mem.messages[-len(recent)].seq
    _, verbatim, recalled = ask(mem, index, follow_up)
    sent = verbatim | recalled
    # the whole roast exchange is in the request, the answer (200 degrees) included
    assert set(range(first_recent, first_recent + len(recent))) <= sent
    # and old oven notes fill the room left, as quotes (with the message just before the
    # roast exchange: the neighbour of a hit)
    old_notes = recalled & set(range(1, 2 * len(OLD_OVEN) + 1))
    assert len(old_notes) > 10 and recalled - old_notes <= {first_recent - 1}
    # the potatoes and gravy turns match nothing: a plain search would leave them out
    plain = {h.seq for h in index.search(follow_up, before_seq=10_000, limit=500)}
    assert not {first_recent + 2, first_recent + 4} & plain
    # with no recency prior, the same request loses the roast exchange
    mem.truncate(len(turns) + len(recent))
    mem.recency_weight = 0.0
    _, verbatim, recalled = ask(mem, index, follow_up)
    assert not set(range(first_recent, first_recent + len(recent))) <= verbatim | recalled


def test_no_hit_cap_when_the_budget_has_room() -> None:
    filler = [("assistant", f"Unrelated chat number {i} about the weather.") for i in range(400)]
    mem, index = conversation(OLD_OVEN + filler, max_tokens=4000, keep_recent=2, recall_share=0.8)
    ctx, verbatim, recalled = ask(mem, index, "Which oven temperature for the pie, bread and cake?")
    assert min(verbatim) > len(OLD_OVEN)  # the notes are far out of the recent messages
    notes = set(range(1, len(OLD_OVEN) + 1))
    assert notes <= recalled  # every one of the 30: no cap of 20
    assert recalled <= notes | {len(OLD_OVEN) + 1}  # and the neighbour of the last
    assert ctx.budget.recalled <= int(4000 * 0.8)


def test_recall_share_is_a_ceiling() -> None:
    mem, index = conversation(list(OLD_OVEN) * 5, max_tokens=2000, keep_recent=2)
    for share in (0.1, 0.3, 0.6):
        mem.recall_share = share
        mem.truncate(len(OLD_OVEN) * 5)
        ctx, _, recalled = ask(mem, index, "oven temperature for the bread?")
        assert recalled
        assert 0 < ctx.budget.recalled <= int(2000 * share)


def test_candidates_under_the_threshold_give_their_room_to_recent_messages() -> None:
    turns = list(OLD_OVEN) + [("assistant", f"Small talk {i}.") for i in range(40)]
    mem, index = conversation(turns, max_tokens=600, keep_recent=2, recall_share=0.8)
    _, verbatim_low, recalled_low = ask(mem, index, "oven temperature for the bread?")
    assert recalled_low
    mem.truncate(len(turns))
    mem.recall_threshold = 1.0  # nothing is that relevant
    ctx, verbatim_high, recalled_high = ask(mem, index, "oven temperature for the bread?")
    assert not recalled_high and ctx.dropped_recalled > 0
    assert len(verbatim_high) > len(verbatim_low)  # the room went to recent messages


def test_the_reply_next_to_a_hit_comes_with_it() -> None:
    """A reply that shares no word with the question is recalled because the message it
    answers is a hit; without neighbours it is left out."""
    filler = [
        ("user" if i % 2 == 0 else "assistant", f"Chat {i} about the weather and the bus.")
        for i in range(200)
    ]
    old = [("user", "What is the code for the garage door?"), ("assistant", "It is 4817.")]
    mem, index = conversation(old + filler, max_tokens=600, keep_recent=2, recall_share=0.5)
    question = "Remind me of the garage door code."
    _, verbatim, recalled = ask(mem, index, question)
    assert {1, 2} <= recalled and not {1, 2} & verbatim
    assert 2 not in {h.seq for h in index.search(question, before_seq=10_000, limit=500)}
    mem.truncate(len(old) + len(filler))
    asked = mem.add("user", question)
    hits = candidates(index, question, before_seq=asked.seq, neighbours=0.0)
    assert 2 not in {r.seq for r in mem.context(hits).recalled}


def test_neighbours_borrow_a_share_of_the_best_hit_next_to_them() -> None:
    hits = [Recalled("a", 10, 0.4), Recalled("b", 12, 0.2), Recalled("c", 30, 0.1)]
    lines = {9: "nine", 11: "eleven", 13: "thirteen", 29: "x", 31: "y"}
    out = with_neighbours(hits, lambda seqs: {s: lines[s] for s in seqs if s in lines}, 31, 0.5)
    scores = {r.seq: r.score for r in out}
    assert scores[11] == 0.2  # half of the better neighbour (10), not of 12
    assert scores[9] == 0.2 and scores[13] == 0.1 and scores[29] == 0.05
    assert 31 not in scores  # not before the question
    beside = {r.seq: r.beside for r in out}
    assert beside[11] == 10 and beside[9] == 10 and beside[13] == 12 and beside[29] == 30
    assert beside[10] is None and beside[12] is None  # hits are found by a search themselves
    assert [r.score for r in out] == sorted(scores.values(), reverse=True)
    assert with_neighbours(hits, lambda seqs: {}, 31, 0.0) == hits

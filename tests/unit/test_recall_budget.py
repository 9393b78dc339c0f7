"""The adaptive budget: the newest messages first, then older ones compete by one score
(recency prior, BM25 and embedding evidence), recall_share a ceiling, no hit cap."""

from __future__ import annotations

from chatmem.memory import Memory
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
    # and old oven notes fill the room left, as quotes
    assert len(recalled) > 10 and all(seq < first_recent - 20 for seq in recalled)
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
    assert recalled == set(range(1, len(OLD_OVEN) + 1))  # every one of the 30: no cap of 20
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
